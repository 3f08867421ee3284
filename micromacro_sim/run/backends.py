"""Parallel backends: forked processes, loky, threading, sequential, dask, ray.

``auto`` (the default) is ``processes`` where workers can be forked (Linux:
:mod:`micromacro_sim.run.forkpool`) and loky elsewhere; the others run behind joblib.

Dask and Ray are optional extras. Without an address, a local cluster (Dask) or a
local instance (Ray) is started for the run and shut down after it; scratch and spill
folders go inside the run's output folder (``RUN_DIR/.scratch``). Workers write shards
to the run folder themselves, so a remote cluster needs a file system shared with it.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.forkpool import fork_available

__all__ = ["BACKENDS", "backend_context", "require_backend", "resolve_backend"]

BACKENDS = ("auto", "processes", "loky", "threading", "sequential", "dask", "ray")


def _missing(extra: str, module: str) -> ConfigError:
    return ConfigError(
        f"backend: {extra} needs the optional package {module!r}; "
        f"install it with: pip install 'micromacro-sim[{extra}]'"
    )


_PACKAGES = {"dask": "distributed", "ray": "ray"}


def require_backend(name: str) -> None:
    """Raise :class:`ConfigError` naming the extra when a backend's package is missing."""
    if name not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "processes" and not fork_available():
        raise ConfigError("backend: 'processes' forks workers, which needs Linux; "
                          f"use auto or loky on {sys.platform}")
    module = _PACKAGES.get(name)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        raise _missing(name, module) from None


def resolve_backend(name: str) -> str:
    """``auto`` -> ``processes`` where workers can be forked safely, else ``loky``; the
    others as given.

    Safely: on Linux, from a process running no other thread. A fork copies only the
    calling thread, so a lock another thread held at that moment (in a notebook's kernel,
    a web server, a GUI) stays held in the worker; a fork from the command line, which runs
    one thread, is safe.
    """
    if name != "auto":
        return name
    return "processes" if fork_available() and threading.active_count() == 1 else "loky"


@contextlib.contextmanager
def backend_context(name: str, *, n_jobs: int, scratch: Path,
                    address: str | None = None) -> Iterator[int]:
    """Configure joblib for ``name`` inside the block; yields the n_jobs to use.

    Parameters
    ----------
    name : str
        One of :data:`BACKENDS`.
    n_jobs : int
        Workers (also the size of a local Dask cluster or Ray instance).
    scratch : Path
        Folder for temporary files, spill and logs (removed afterwards when empty).
    address : str, optional
        A Dask scheduler address (``tcp://host:8786``) or a Ray address (``auto`` or
        ``ray://host:10001``); without it a local one is started.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    scratch = Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        name = resolve_backend(name)
        if name in ("processes", "sequential"):  # not joblib: see run.forkpool, run.execute
            yield 1 if name == "sequential" else n_jobs
        elif name in ("loky", "threading"):
            from joblib import parallel_config  # lazy: the others need none

            with parallel_config(backend=name, n_jobs=n_jobs):
                yield n_jobs
        elif name == "dask":
            yield from _dask(n_jobs, scratch, address)
        else:
            yield from _ray(n_jobs, scratch, address)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)


def _dask(n_jobs: int, scratch: Path, address: str | None) -> Iterator[int]:
    from joblib import parallel_config

    try:
        import dask  # noqa: F401
        from distributed import Client, LocalCluster
    except ImportError:
        raise _missing("dask", "distributed") from None
    import dask.config

    cluster = None
    with dask.config.set({"temporary-directory": str(scratch)}):
        if address:
            try:
                client = Client(address, timeout="20s")
            except OSError as exc:
                raise ConfigError(f"address: cannot reach Dask scheduler {address!r} ({exc})"
                                  ) from None
        else:
            cluster = LocalCluster(n_workers=max(1, n_jobs), threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   local_directory=str(scratch / "dask"))
            client = Client(cluster)
        try:
            workers = max(1, len(client.scheduler_info().get("workers", {})) or n_jobs)
            with parallel_config(backend="dask", n_jobs=workers):
                yield workers
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _ray(n_jobs: int, scratch: Path, address: str | None) -> Iterator[int]:
    from joblib import parallel_config

    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        raise _missing("ray", "ray") from None
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False,
                  "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            # Ray's socket paths must stay short: keep its session folder under /tmp-like
            # scratch only when the path is short enough, else let Ray pick its default.
            tmp = scratch / "ray"
            if len(str(tmp)) < 60:
                kwargs["_temp_dir"] = str(tmp)
            ray.init(num_cpus=max(1, n_jobs), **kwargs)
        started = True
    register_ray()
    try:
        with parallel_config(backend="ray", n_jobs=max(1, n_jobs)):
            yield max(1, n_jobs)
    finally:
        if started:
            ray.shutdown()
