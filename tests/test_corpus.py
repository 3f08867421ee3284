"""Bad-input corpus: every malformed config or data file fails in one line with status 2.

The files live in tests/corpus/. A config's first line says which field the error must
name (``# expect: FIELD``); data files list their expected message in
tests/corpus/data/expect.yaml; command lines (output paths, options) are listed in
tests/corpus/commands/expect.yaml. Nothing may be written in any case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from micromacro_sim.cli.main import main

CORPUS = Path(__file__).parent / "corpus"
CONFIGS = sorted((CORPUS / "configs").glob("*.yaml"))
DATA = yaml.safe_load((CORPUS / "data" / "expect.yaml").read_text())
COMMANDS = yaml.safe_load((CORPUS / "commands" / "expect.yaml").read_text())


def test_corpus_is_large_enough():
    assert len(CONFIGS) + len(DATA) + len(COMMANDS) >= 80


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_bad_config(path, tmp_path, capsys, monkeypatch):
    first = path.read_bytes().split(b"\n")[0].decode("ascii")  # the rest may not be UTF-8
    field = first.removeprefix("# expect:").strip()
    monkeypatch.chdir(tmp_path)  # a config without `output` would write under ./results
    out = tmp_path / "out"
    rc = main(["run", str(path), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {field}"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(DATA), ids=sorted(DATA))
def test_bad_data(name, tmp_path, capsys):
    case = DATA[name]
    args = {"group": "team", "x": "x", "y": "y", "z": "z", **case.get("args", {})}
    out = tmp_path / "fit.csv"
    argv = ["fit", str(CORPUS / "data" / f"{name}.csv"), "--output", str(out)]
    for k, v in args.items():
        argv += [f"--{k}", v]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("note:")]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {case['expect']}"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(COMMANDS), ids=sorted(COMMANDS))
def test_bad_command(name, tmp_path, capsys, monkeypatch):
    case = COMMANDS[name]
    monkeypatch.chdir(tmp_path)
    if case.get("setup") == "file":
        (tmp_path / "exists").write_text("a file")
    before = _tree(tmp_path)
    subs = {"{tmp}": str(tmp_path), "{here}": str(CORPUS / "commands"), "{long}": "n" * 300}
    argv = []
    for arg in case["argv"]:
        for k, v in subs.items():
            arg = arg.replace(k, v)
        argv.append(arg)
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {case['expect']}"), err
    assert "Traceback" not in captured.out + captured.err
    assert _tree(tmp_path) == before
