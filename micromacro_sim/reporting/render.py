"""HTML and Markdown rendering of a run report: a table of contents, the run's facts, one
part per study question (the failure report, then the figures, shown at the size they
were drawn for), and the tables at the end, long ones folded behind a summary line."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from micromacro_sim.reporting.report_tables import Figure, Section

__all__ = ["FOLD_ROWS", "anchor", "md_table", "md_text", "render_html", "render_markdown"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1240px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.3em;margin-top:2em;border-bottom:2px solid #ccc}
h3{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:first-child,td:nth-child(2){text-align:left}
td:first-child{white-space:nowrap}
.facts td{text-align:left}.note{color:#555;font-size:.9em}
.partial{background:#fff3cd;border:2px solid #d39e00;color:#6b4f00;padding:.8em 1em;
font-weight:bold;font-size:1.1em;margin:1em 0}
nav.toc{background:#f8f8f8;border:1px solid #e3e3e3;padding:.5em 1.2em;margin:1em 0}
nav.toc ul{margin:.2em 0;padding-left:1.2em}
figure{margin:1.2em 0}figure img{display:block;max-width:100%;height:auto;
border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin-top:.3em}.wide{overflow-x:auto}
details summary{cursor:pointer;color:#245;font-size:.95em}
"""


#: Tables with more rows than this are folded (HTML) behind a summary line.
FOLD_ROWS = 12


def anchor(text: str) -> str:
    """An HTML id from a title."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def table_anchor(sec: Section) -> str:
    """The id of a section's table in the tables part."""
    return "table-" + anchor(sec.title)


def shown(sec: Section, figures: dict[str, Figure]) -> bool:
    """The section has a part under its question: figures drawn, lines, or its table
    inline."""
    return sec.inline or bool(sec.lines) or any(k in figures for k in sec.figures)


def at_end(sec: Section) -> bool:
    """The section's table goes to the tables at the end of the report."""
    return sec.frame is not None and not sec.inline


def folded(sec: Section) -> bool:
    """The table is folded away: long, or marked ``collapsed``."""
    return sec.frame is not None and (sec.collapsed or len(sec.frame) > FOLD_ROWS)


def _questions(sections: list[Section]) -> list[tuple[str, list[Section]]]:
    out: list[tuple[str, list[Section]]] = []
    for sec in sections:
        if not out or out[-1][0] != sec.question:
            out.append((sec.question, []))
        out[-1][1].append(sec)
    return out


def _toc(groups: list[tuple[str, list[Section]]], tables: list[Section]) -> list[str]:
    e = html.escape
    parts = ['<nav class="toc" id="contents"><strong>Contents</strong><ul>',
             '<li><a href="#run">Run</a></li>']
    for q, secs in groups:
        parts.append(f'<li><a href="#{anchor(q)}">{e(q)}</a><ul>')
        parts += [f'<li><a href="#{anchor(s.title)}">{e(s.title)}</a></li>' for s in secs]
        parts.append("</ul></li>")
    if tables:
        parts.append('<li><a href="#tables">Tables</a><ul>')
        parts += [f'<li><a href="#{table_anchor(s)}">{e(s.title)}</a></li>' for s in tables]
        parts.append("</ul></li>")
    parts.append("</ul></nav>")
    return parts


def _figure_html(f: Figure) -> str:
    e = html.escape
    data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{e(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(f.caption)}</figcaption></figure>")


def _table_html(sec: Section) -> str:
    e = html.escape
    table = ('<div class="wide">' + sec.frame.to_html(index=False, escape=True, border=0,
                                                       na_rep="") + "</div>")
    if folded(sec):
        line = f"{sec.summary or sec.title} ({len(sec.frame)} rows; show the table)"
        return f"<details><summary>{e(line)}</summary>{table}</details>"
    return table


def _section_html(sec: Section, figures: dict[str, Figure]) -> list[str]:
    e = html.escape
    parts = [f'<h3 id="{anchor(sec.title)}">{e(sec.title)}</h3>']
    parts += [f"<p>{e(line)}</p>" for line in sec.lines]
    parts += [_figure_html(figures[k]) for k in sec.figures if k in figures]
    if sec.inline:
        if sec.note:
            parts.append(f'<p class="note">{e(sec.note)}</p>')
        if sec.frame is not None:
            parts.append(_table_html(sec))
    elif sec.frame is not None:
        parts.append(f'<p class="note">Table: <a href="#{table_anchor(sec)}">{e(sec.title)}'
                     f"</a> ({len(sec.frame)} rows), under Tables at the end.</p>")
    return parts


def render_html(title: str, facts: list[tuple[str, str]], banner: str,
                sections: list[Section], figures: dict[str, Figure], intro: str) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNGs).

    Order: the run's facts, then one part per study question (the failure report first,
    then the figures), then every long table, folded behind a summary line.
    """
    e = html.escape
    groups = _questions([s for s in sections if shown(s, figures)])
    tables = [s for s in sections if at_end(s)]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    if banner:
        parts.append(f'<div class="partial" id="partial-run">{e(banner)}</div>')
    parts.append(f'<p class="note">{e(intro)}</p>')
    parts += _toc(groups, tables)
    parts.append('<h2 id="run">Run</h2><table class="facts">')
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts]
    parts.append("</table>")
    for q, secs in groups:
        parts.append(f'<h2 id="{anchor(q)}">{e(q)}</h2>')
        for sec in secs:
            parts += _section_html(sec, figures)
    if tables:
        parts.append('<h2 id="tables">Tables</h2><p class="note">The numbers behind the '
                     f"figures; tables of more than {FOLD_ROWS} rows are folded (click the "
                     "summary line to show one).</p>")
    for sec in tables:
        parts.append(f'<h3 id="{table_anchor(sec)}">{e(sec.title)}</h3>')
        if sec.note:
            parts.append(f'<p class="note">{e(sec.note)}</p>')
        parts.append(_table_html(sec))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#!~"})


def md_text(v: object) -> str:
    """Text shown as it is in Markdown, as the HTML report escapes it: HTML is inert,
    emphasis, links, code and table pipes are backslash-escaped, lines joined."""
    return html.escape(" ".join(str(v).splitlines()), quote=False).translate(_MD_SPECIAL)


def _md_cell(v: object) -> str:
    return md_text(v)


def md_table(frame: pd.DataFrame) -> str:
    """A pipe table."""
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _md_figures(sec: Section, figures: dict[str, Figure], base: Path) -> list[str]:
    parts: list[str] = []
    for key in sec.figures:
        if key in figures:
            f = figures[key]
            rel = f.path.relative_to(base).as_posix()
            parts += [f"![{md_text(f.title)}]({rel})", "", f"*{md_text(f.caption)}*", ""]
    return parts


def render_markdown(title: str, facts: list[tuple[str, str]], banner: str,
                    sections: list[Section], figures: dict[str, Figure], intro: str,
                    base: Path) -> str:
    """The report as Markdown, linking the PNGs (paths relative to ``base``).

    Order as :func:`render_html`; the tables at the end each under their own heading.
    """
    groups = _questions([s for s in sections if shown(s, figures)])
    tables = [s for s in sections if at_end(s)]
    m = md_text
    parts = [f"# {m(title)}", ""]
    if banner:
        parts += [f"> **{m(banner)}**", ""]
    contents = [q for q, _ in groups] + (["Tables"] if tables else [])
    parts += [m(intro), "", "Contents: " + "; ".join(m(q) for q in contents), "", "## Run", "",
              md_table(pd.DataFrame(facts, columns=["", "value"])), ""]
    for q, secs in groups:
        parts += [f"## {m(q)}", ""]
        for sec in secs:
            parts += [f"### {m(sec.title)}", ""]
            for line in sec.lines:
                parts += [m(line), ""]
            parts += _md_figures(sec, figures, base)
            if sec.inline:
                if sec.note:
                    parts += [m(sec.note), ""]
                if sec.frame is not None:
                    parts += [md_table(sec.frame), ""]
            elif sec.frame is not None:
                parts += [f"Table: {m(sec.title)} ({len(sec.frame)} rows), under Tables at the "
                          "end.", ""]
    if tables:
        parts += ["## Tables", "", "The numbers behind the figures.", ""]
    for sec in tables:
        parts += [f"### {m(sec.title)}", ""]
        if sec.note:
            parts += [m(sec.note), ""]
        parts += [md_table(sec.frame), ""]
    return "\n".join(parts)
