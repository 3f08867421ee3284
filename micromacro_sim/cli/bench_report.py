"""The Markdown of one ``micromacro bench`` run, and its place in a hand-written file.

:func:`render_markdown` turns the figures that :func:`~micromacro_sim.cli.bench.run_bench`
returns into a Markdown block (nothing is measured here); :func:`replace_block` puts the
block between the marker lines :data:`BEGIN` and :data:`END` of a file's text, leaving the
text around them unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BEGIN", "END", "render_markdown", "replace_block", "write_markdown"]

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def _num(value: float | None, digits: int, unit: str = "") -> str:
    """``value`` with ``digits`` decimals and ``unit``, or an empty cell for None."""
    if value is None or value != value:
        return ""
    return f"{value:.{digits}f}{unit}"


def _ratio(value: float | None) -> str:
    if value is None or value != value:
        return ""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _machine(fig: dict[str, Any]) -> list[str]:
    m = fig["machine"]
    text = (f"{m['cpu']}, {m['cores']} cores, {m['memory']}, {m['platform']}, Python "
            f"{m['python']}, numpy {m['numpy']}")
    if m.get("blas"):
        text += f"; BLAS: {m['blas']}"
    r = fig.get("r")
    text += f". {r['versions']} for the R pipeline" if r else ". R pipeline not available"
    text += f". Load average at the start of the run: {m.get('load', '')}."
    return ["### Machine", "", text, ""]


def _methods(fig: dict[str, Any]) -> list[str]:
    lines = ["### Per method, milliseconds per replication", "",
             "Reference: one dataset at a time (median of 3 loops after a one-dataset warm-up). "
             "Fast: the batch implementation over a whole batch; its first call in the process "
             "(which pays the one-off costs the methods before it did not) and the median of "
             "the 3 calls after it (warm). Speed-up: reference / fast, warm. BLAS on one "
             "thread, as in a run's tasks.", ""]
    for table in fig["method_tables"]:
        against = any("vs_balanced" in r for r in table["rows"])
        lines += [f"**{table['title']}**: fast on {table['n_fast']} datasets, reference on "
                  f"{table['n_ref']}." + (" *vs balanced*: the cost on the path the method "
                                          "takes (fast where it has one) over the same on "
                                          "balanced row 16." if against else ""), "",
                  "| method | reference | fast, first call | fast, warm | speed-up |"
                  + (" vs balanced |" if against else ""),
                  "|---|---:|---:|---:|---:|" + ("---:|" if against else "")]
        lines += [f"| {r['method']} | {_num(r['reference_ms'], 3)} | "
                  f"{_num(r['fast_first_ms'], 3)} | {_num(r['fast_ms'], 3)} | "
                  f"{_ratio(r['speedup'])} |"
                  + (f" {_ratio(r.get('vs_balanced'))} |" if against else "")
                  for r in table["rows"]]
        lines.append("")
    return lines


def _jackknife(fig: dict[str, Any]) -> list[str]:
    tables = fig.get("jackknife") or []
    if not tables:
        return []
    lines = ["### The jackknife SE, milliseconds per replication", "",
             "Every two-step method with `se: ols` (the default) and `se: jackknife` (the "
             "delete-one-group refits), on the path a run takes (fast where the method has "
             "one); median of 3 calls after a warm-up. *downdate*: scores that do not depend "
             "on the other groups, so the OLS is downdated and nothing is refitted.", ""]
    for table in tables:
        lines += [f"**{table['title']}**: batch of {table['n']}.", "",
                  "| method | se: ols | se: jackknife | ratio | refits |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {r['method']} | {_num(r['plain_ms'], 3)} | {_num(r['jackknife_ms'], 3)} | "
                  f"{_ratio(r['ratio'])} | {r['refits']} |" for r in table["rows"]]
        lines.append("")
    return lines


def _cells(run: dict[str, Any] | None) -> str:
    """Wall, CPU and peak RSS cells of one run (empty cells for a run not measured)."""
    if run is None:
        return " |  | "  # three empty cells between the caller's separators
    return (f"{_num(run['wall'], 2, ' s')} | {_num(run['cpu'], 2, ' s')} | "
            f"{_num(run['peak_mib'], 0, ' MiB')}")


def _cli(fig: dict[str, Any]) -> list[str]:
    definition = fig["cold_definition"]
    lines = ["### End to end, from the command line (including Python start-up)", "",
             f"{definition[0].upper()}{definition[1:]}. Cold is measured for the runs a "
             "target judges. CPU: user + system seconds of every process. Peak RSS: the "
             "largest process (workers included), largest over the runs.", "",
             "| run | cold wall | cold CPU | cold peak RSS | warm wall | warm CPU | "
             "warm peak RSS | warm runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['run']} | {_cells(row['cold'])} | {_cells(row['warm'])} | "
              f"{row['warm']['runs']} |" for row in fig["cli"]]
    return lines + [""]


def _r(fig: dict[str, Any]) -> list[str]:
    r = fig.get("r")
    lines = ["### Against the R pipeline", ""]
    if not r:
        return lines + ["Not measured: Rscript with lavaan, lme4 and glmmTMB not available.",
                        ""]
    per_method = ", ".join(f"{m['method']} {m['seconds']:.4f}" for m in r["per_method"])
    lines.append(
        f"**Measured** on {r['datasets']} row-16 datasets in this run ({r['measured_seconds']:.1f}"
        f" s wall including R's start-up), median seconds per replication: {per_method}; "
        f"{r['per_replication']:.4f} s per replication. **Extrapolated** to "
        f"{r['replications']} replications on one core: {r['extrapolated_seconds']:.1f} s. "
        f"The measured {r['replications']}-replication row-16 command-line run above is "
        f"**{r['ratio_cold']:.0f}x** faster cold and **{r['ratio_warm']:.0f}x** warm.")
    return lines + [""]


def _parallel(fig: dict[str, Any]) -> list[str]:
    lines = ["### Parallel speed-up and memory", ""]
    p, m = fig.get("parallel"), fig.get("memory")
    if p:
        lines += [f"Reference engine, {p['replications']} replications of row 16: n_jobs = 1 "
                  f"{p['n_jobs_1']:.2f} s, n_jobs = 2 {p['n_jobs_2']:.2f} s, "
                  f"**{p['speedup']:.2f}x**; this machine's two-process ceiling on a trivial "
                  f"CPU-bound loop: {p['ceiling']:.2f}x.", ""]
    if m:
        lines += [f"Peak RSS of `micromacro run` (n_jobs = 1) on a 2-cell and a 200-cell grid: "
                  f"{m['cells_2_mib']:.0f} MiB and {m['cells_200_mib']:.0f} MiB, ratio "
                  f"**{m['ratio']:.2f}**.", ""]
    return lines


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**not met**")


def _targets(fig: dict[str, Any]) -> list[str]:
    lines = ["### Targets", ""]
    if not fig.get("targets"):
        return lines + ["Not judged: a `--quick` run (smaller sizes).", ""]
    lines += ["| target | bound | cold | cold verdict | warm | warm verdict |",
              "|---|---:|---:|---|---:|---|"]
    lines += [f"| {t['text']} | {t['op']} {t['bound']:g} | {_figure(t['cold'])} | "
              f"{_verdict(t['met_cold'])} | {_figure(t['warm'])} | {_verdict(t['met_warm'])} |"
              for t in fig["targets"]]
    return lines + [""]


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_markdown(figures: dict[str, Any]) -> str:
    """The Markdown block of one bench run's figures (without the marker lines).

    Parameters
    ----------
    figures : dict
        What :func:`~micromacro_sim.cli.bench.run_bench` returns: ``date``, ``quick``,
        ``machine``, ``cold_definition``, ``method_tables``, ``cli``, and where measured
        ``r``, ``parallel``, ``memory`` and ``targets``.

    Returns
    -------
    str
        The block, ending with a newline.
    """
    kind = ("a `--quick` run (smaller sizes, no target verdicts)" if figures.get("quick")
            else "a full run")
    lines = ["## Figures of the last `micromacro bench` run", "",
             f"Written by `micromacro bench --markdown` from {kind} on {figures['date']}. Every "
             "figure in this section comes from that one run; only the R pipeline's full-study "
             "time is extrapolated.", ""]
    for part in (_machine, _methods, _jackknife, _cli, _r, _parallel, _targets):
        lines += part(figures)
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between :data:`BEGIN` and :data:`END` replaced by ``block``.

    The text before the first :data:`BEGIN` line and after the :data:`END` that follows it
    is kept unchanged. Without the marker pair, the markers and the block are appended at
    the end.

    Raises
    ------
    ValueError
        When only one of the two markers is present (or they are in the wrong order).
    """
    body = block if block.endswith("\n") else block + "\n"
    start = text.find(BEGIN)
    end = text.find(END, start + len(BEGIN)) if start >= 0 else -1
    if start < 0 and END not in text:
        # one blank line between the file's last line and the block
        sep = "\n\n"
        if not text or text.endswith("\n\n"):
            sep = ""
        elif text.endswith("\n"):
            sep = "\n"
        return f"{text}{sep}{BEGIN}\n{body}{END}\n"
    if start < 0 or end < 0:
        raise ValueError(f"only one of the markers {BEGIN} and {END} is present")
    return f"{text[:start]}{BEGIN}\n{body}{text[end:]}"


def write_markdown(path: Path, figures: dict[str, Any]) -> None:
    """Write :func:`render_markdown` of ``figures`` into ``path`` (see :func:`replace_block`)."""
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_block(text, render_markdown(figures)))
