"""Numbers in a config file read without YAML 1.1 surprises.

Plain decimal integers are integers and numbers with an exponent are floats (``1e6``,
``1e-3``); the forms only YAML 1.1 reads as numbers (base 60, a leading zero, ``0x``,
``0o``, ``0b``) are refused in one line naming the key path and the value; booleans keep
YAML 1.1's reading; quoted text is never a number. Integer fields refuse floats, whole
ones with a hint; ``categories``, ``n_x`` and ``n_z`` have upper bounds.
"""

from __future__ import annotations

import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.yamlio import read_yaml
from micromacro_sim.run.configure import load_config

BASE = """\
name: t
seed: 1
replications: 2
methods: [unadjusted]
admissibility: {policy: flag, gate: none}
"""
FIXED = "n_groups: 10, group_size: 4, r_zxi: 0.3, icc: 0.2"


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _config(tmp_path, fixed="", top=""):
    return _write(tmp_path, BASE + top + f"fixed: {{{FIXED}{', ' if fixed else ''}{fixed}}}\n")


@pytest.mark.parametrize("text, where, hint", [
    ("fixed: {group_size: 1:5}", "fixed.group_size: 1:5 is a base-60 number",
     "write 65 if that is meant"),
    ("grid: {n_groups: [10, 1:30:00]}", "grid.n_groups[1]: 1:30:00 is a base-60",
     "write 5400 if that is meant"),
    ("seed: 012", "seed: 012 has a leading zero (YAML 1.1 reads it as octal 10)", "write 12"),
    ("seed: 0o17", "seed: 0o17 is an octal number", "write 15"),
    ("seed: 0x1F", "seed: 0x1F is a hexadecimal number", "write 31"),
    ("seed: 0b101", "seed: 0b101 is a binary number", "write 5"),
])
def test_yaml11_only_numbers_are_refused_naming_the_key_path(tmp_path, text, where, hint):
    with pytest.raises(ConfigError) as info:
        read_yaml(_write(tmp_path, text + "\n"))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(where), msg
    assert f"{hint}, or quote it as text" in msg, msg


@pytest.mark.parametrize("plain, value", [
    ("1e6", 1e6), ("1e-3", 1e-3), ("1E6", 1e6), ("+1e3", 1e3), (".5e2", 50.0), ("-.5", -0.5),
])
def test_exponent_forms_are_floats_and_quoted_text_is_not(tmp_path, plain, value):
    got = read_yaml(_write(tmp_path, f"a: {plain}\nb: '{plain}'\nc: \"{plain}\"\n"))
    assert type(got["a"]) is float and got["a"] == value
    assert got["b"] == plain and got["c"] == plain


def test_quoted_yaml11_forms_stay_text_and_booleans_keep_yaml11(tmp_path):
    got = read_yaml(_write(tmp_path, "a: '1:5'\nb: \"012\"\nc: yes\nd: off\ne: On\n"
                                     "f: no\ng: 1e-3\nh: 1_000\n"))
    assert got == {"a": "1:5", "b": "012", "c": True, "d": False, "e": True, "f": False,
                   "g": 0.001, "h": 1000}


def test_exponent_floats_reach_real_fields(tmp_path):
    cfg = load_config(_config(tmp_path, fixed="sigma2_eps: 1e-3, beta0: -2.5E1"))
    sc = cfg.scenarios[0]
    assert sc.sigma2_eps == 0.001 and sc.beta0 == -25.0


@pytest.mark.parametrize("old, new, start", [
    ("seed: 1", "seed: 012", "seed: 012 has a leading zero"),
    ("fixed: {", "fixed: {group_size: 1:5, ", "fixed.group_size: 1:5 is a base-60 number"),
])
def test_load_config_refuses_yaml11_numbers(tmp_path, old, new, start):
    text = (BASE + "fixed: {n_groups: 10, r_zxi: 0.3, icc: 0.2}\n").replace(old, new)
    with pytest.raises(ConfigError, match=f"^{start}"):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("fixed, top, start", [
    ("", "chunk_size: 1e2\n", "chunk_size: expected an integer >= 1, got 100.0 (write 100:"),
    ("", "n_jobs: 2.0\n", "n_jobs: expected a positive integer or -1, got 2.0 (write 2:"),
    ("n_z: 1e0", "", "n_z: expected an integer in [0, 50], got 1.0 (write 1:"),
])
def test_integer_fields_refuse_whole_floats_with_a_hint(tmp_path, fixed, top, start):
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, fixed=fixed, top=top))
    assert str(info.value).startswith(start), str(info.value)
    assert str(info.value).endswith("an integer takes no exponent or decimal point)")


def test_seed_and_replications_given_as_exponents_get_the_hint(tmp_path):
    path = _write(tmp_path, BASE.replace("seed: 1", "seed: 2e3") + f"fixed: {{{FIXED}}}\n")
    with pytest.raises(ConfigError, match=r"^seed: .*got 2000\.0 \(write 2000: "):
        load_config(path)
    path = _write(tmp_path, BASE.replace("replications: 2", "replications: 1e3")
                  + f"fixed: {{{FIXED}}}\n")
    with pytest.raises(ConfigError, match=r"^replications: .*got 1000\.0 \(write 1000: "):
        load_config(path)


@pytest.mark.parametrize("field, largest, bound", [
    ("categories", 100, "[2, 100]"), ("n_x", 20, "[1, 20]"), ("n_z", 50, "[0, 50]"),
])
def test_count_fields_have_upper_bounds(tmp_path, field, largest, bound):
    if field == "categories":  # the bound itself is accepted
        cfg = load_config(_config(tmp_path, fixed=f"categories: {largest}"))
        assert cfg.scenarios[0].categories == largest
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, fixed=f"{field}: {largest + 1}"))
    assert str(info.value) == f"{field}: expected an integer in {bound}, got {largest + 1}"


def test_fit_method_values_follow_the_config_rules(capsys):
    """``fit --method`` values are read by the same loader as configs."""
    from micromacro_sim.cli.fitting import fit_methods

    assert fit_methods(["b={method: blup, reml: false}"]) == [
        {"b": {"method": "blup", "reml": False}}]
    with pytest.raises(ConfigError, match=r"^method\.x: 012 has a leading zero"):
        fit_methods(["b={method: blup, x: 012}"])


def test_adaptive_targets_have_the_planning_floor():
    from micromacro_sim.design.adaptive import parse_adaptive

    spec = {"min": 10, "max": 100, "block": 10}
    with pytest.raises(ConfigError, match=r"^replications\.target_mcse\.bias: expected at least"):
        parse_adaptive({**spec, "target_mcse": {"bias": 1e-300}})
    assert parse_adaptive({**spec, "target_mcse": {"bias": 0.005}}).targets[0][1] == 0.005


@pytest.mark.parametrize("where", ["adaptive", "policy"])
def test_whole_floats_in_other_integer_settings_get_the_hint(where):
    from micromacro_sim.run.configure import parse_config

    cfg = {"name": "x", "seed": 1, "replications": 3, "methods": ["true"],
           "fixed": {"n_groups": 20, "group_size": 4, "r_zxi": 0.3, "icc": 0.2}}
    if where == "adaptive":
        cfg["replications"] = {"target_mcse": {"bias": 0.01}, "min": 1e3, "max": 2000,
                               "block": 10}
    else:
        cfg["admissibility"] = {"max_redraws": 1e2}
    with pytest.raises(ConfigError, match=r"\(write 1\d+: an integer takes no exponent"):
        parse_config(cfg)
