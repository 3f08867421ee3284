"""A run folder opened for reading: its manifest and scenarios table, checked in one place.

Every reader of a finished or running folder (``summarize``, ``report``, ``export``, the
planners) opens it with :func:`open_run_folder`, which refuses in one line naming the file:
a folder that holds no run, a manifest this tool did not write or whose fields have the
wrong types, a missing, truncated or malformed ``scenarios.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.ownership import is_own_manifest
from micromacro_sim.run.paths import check_not_input
from micromacro_sim.run.storage import TABLES, StorageError, read_manifest

__all__ = ["RunFolder", "check_manifest", "open_run_folder", "output_inside_run"]

#: Columns every ``scenarios.parquet`` has.
SCENARIO_COLUMNS = ("scenario", "label")


@dataclass(frozen=True)
class RunFolder:
    """A readable run folder: its manifest (status corrected) and scenarios table."""

    path: Path
    manifest: dict[str, Any]
    scenarios: Any  # pandas.DataFrame

    @property
    def keys(self) -> list[str]:
        """The manifest's scenario keys that the scenarios table describes, in run order."""
        known = set(self.scenarios["scenario"])
        return [k for k in self.manifest["scenarios"] if k in known]


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    where = str(path / "manifest.json")
    if not is_own_manifest(manifest):
        raise StorageError(f"manifest: {where!r} was not written by this tool (no result hash "
                           "or ledger)")
    checks = {"scenarios": lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v),
              "methods": lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v),
              "replications": lambda v: isinstance(v, int) and not isinstance(v, bool)
              and v >= 0}
    for name, ok in checks.items():
        if name in manifest and not ok(manifest[name]):
            raise StorageError(f"manifest: {where!r} is damaged ({name} is "
                               f"{type(manifest[name]).__name__} {manifest[name]!r:.40})")
    for name in ("scenarios", "methods", "replications"):
        if name not in manifest:
            raise StorageError(f"manifest: {where!r} is damaged (no {name})")


def open_run_folder(run_dir: str | Path, field: str = "RUN_DIR") -> RunFolder:
    """Open ``run_dir`` for reading.

    Raises
    ------
    ConfigError
        The folder does not exist or holds no run.
    StorageError
        The manifest or the scenarios table is damaged, foreign or unreadable.
    """
    import pandas as pd

    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"{field}: {str(run_dir)!r} is not a folder")
    manifest = read_manifest(path)
    if manifest is None:
        raise ConfigError(f"{field}: {str(run_dir)!r} holds no run (manifest.json missing)")
    check_manifest(manifest, path)
    table = path / "scenarios.parquet"
    if not table.is_file():
        raise StorageError(f"scenarios: {str(table)!r} is missing; run the config again to "
                           "rebuild it")
    try:
        scen = pd.read_parquet(table)
    except (OSError, ValueError) as exc:
        text = str(exc).strip().splitlines()
        raise StorageError(f"scenarios: {str(table)!r} is damaged "
                           f"({text[0] if text else type(exc).__name__})") from None
    missing = [c for c in SCENARIO_COLUMNS if c not in scen.columns]
    if missing or scen["scenario"].duplicated().any():
        what = f"no {missing[0]} column" if missing else "a scenario listed twice"
        raise StorageError(f"scenarios: {str(table)!r} is damaged ({what}); run the config "
                           "again to rebuild it")
    return RunFolder(path, manifest, scen)


def output_inside_run(output: str | Path, run_dir: str | Path, field: str = "output") -> None:
    """Refuse an output path that is one of the run's own files or lies in its shard
    folders (compared as the same file or folder, whatever the name or link)."""
    run = Path(run_dir)
    check_not_input([output], [run / "manifest.json", run / "scenarios.parquet"], field)
    check_not_input([output], [run / t for t in TABLES], field, inside=True)
