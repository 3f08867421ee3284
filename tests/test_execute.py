"""The loky probe cuts the first task without losing or repeating a replication."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from micromacro_sim.execute import PROBE_SHARE, probe_tasks


@dataclass(frozen=True)
class _T:
    key: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def _cover(tasks):
    return sorted((t.key, r) for t in tasks for r in range(t.start, t.stop))


@pytest.mark.parametrize("first", [(0, 1), (0, 2), (0, 3), (5, 25), (0, 250), (40, 1000)])
def test_probe_cut_covers_every_replication_once(first):
    tasks = [_T("a", *first), _T("b", 0, 7), _T("a", first[1], first[1] + 3)]
    warm, probe, rest = probe_tasks(tasks)
    pieces = warm + ([probe] if probe is not None else []) + rest
    assert _cover(pieces) == _cover(tasks)
    assert all(p.size > 0 for p in pieces)
    size = first[1] - first[0]
    if size < 3:
        assert probe is None and warm == [tasks[0]]
    else:
        assert warm[0].size == 1
        assert probe.size == max(1, size // PROBE_SHARE)
        assert probe.start == warm[0].stop
    assert rest[-2:] == tasks[1:]
