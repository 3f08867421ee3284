"""Digest of every raw column of a run's estimates, per scenario and method.

Used to show that a refactoring leaves every shipped config bit-identical:

    python tools/digest_estimates.py RUN_DIR [RUN_DIR ...] > digests.json
    python tools/digest_estimates.py --compare old.json new.json

Each digest is the SHA-256 of a column's raw bytes (rows ordered by scenario,
replication, method, term), so two runs agree in a digest only when they agree bit
for bit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["estimate", "se", "se_HC0", "se_HC1", "se_HC2", "se_HC3", "df_resid",
           "converged", "admissible"]


def digest_run(run_dir: Path) -> dict[str, str]:
    """``"<run>/<scenario>/<method>/<column>" -> sha256`` for one run folder."""
    frames = [pd.read_parquet(p) for p in sorted((run_dir / "estimates").rglob("*.parquet"))]
    est = pd.concat(frames, ignore_index=True)
    est = est.sort_values(["scenario", "replication", "method", "term"], kind="stable")
    out: dict[str, str] = {}
    for (scen, method), part in est.groupby(["scenario", "method"], sort=True):
        for col in COLUMNS:
            if col not in part:
                continue
            raw = np.ascontiguousarray(part[col].to_numpy())
            out[f"{run_dir.name}/{scen}/{method}/{col}"] = hashlib.sha256(raw.tobytes()).hexdigest()
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        old, new = (json.loads(Path(p).read_text()) for p in argv[1:3])
        differ = sorted(k for k in old if k in new and old[k] != new[k])
        missing = sorted(set(old) ^ set(new))
        for k in differ:
            print(f"differs: {k}")
        for k in missing:
            print(f"only in one: {k}")
        print(f"{len(old)} digests, {len(differ)} differ, {len(missing)} unmatched")
        return 1 if differ or missing else 0
    digests: dict[str, str] = {}
    for d in argv:
        digests.update(digest_run(Path(d)))
    json.dump(digests, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
