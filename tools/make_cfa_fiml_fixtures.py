"""Rebuild tests/fixtures/cfa_fiml (lavaan's ``cfa(..., missing = "fiml")`` fits and scores).

Usage: ``python tools/make_cfa_fiml_fixtures.py`` from the repository root (needs Rscript
with lavaan). The datasets and the R call are defined beside the tests that read them
(``tests/test_cfa_fiml.py``, :func:`build_fixture`); this script runs that.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    module = runpy.run_path(str(ROOT / "tests" / "test_cfa_fiml.py"))
    sys.exit(module["build_fixture"]())
