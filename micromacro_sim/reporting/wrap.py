"""Window width and wrapped prose for terminal output (no pandas: the run message uses it)."""

from __future__ import annotations

import shutil
import textwrap

__all__ = ["terminal_width", "wrap_text"]


def terminal_width(default: int = 100) -> int:
    """Columns of the window (``COLUMNS`` when set), ``default`` when unknown."""
    return max(20, shutil.get_terminal_size((default, 24)).columns)



def wrap_text(text: str, width: int | None = None, indent: str = "") -> str:
    """Wrap prose (and long words such as paths) to ``width`` columns."""
    width = width or terminal_width()
    return "\n".join(
        textwrap.fill(par, width, subsequent_indent=indent, break_long_words=True,
                      break_on_hyphens=False) if par else ""
        for par in text.split("\n")
    )
