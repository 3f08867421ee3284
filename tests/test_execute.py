"""The loky probe cuts the first task without losing or repeating a replication, and its
estimate separates a task's fixed cost from the cost per replication."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from micromacro_sim.run.execute import PROBE_SHARE, probe_tasks, sequential_estimate


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


@pytest.mark.parametrize("first", [(0, 1), (0, 4), (0, 5), (3, 9), (5, 25), (0, 250),
                                   (40, 1000)])
def test_probe_cut_covers_every_replication_once(first):
    tasks = [_T("a", *first), _T("b", 0, 7), _T("a", first[1], first[1] + 3)]
    warm, probes, rest = probe_tasks(tasks)
    pieces = warm + probes + rest
    assert _cover(pieces) == _cover(tasks)
    assert all(p.size > 0 for p in pieces)
    size = first[1] - first[0]
    if size < 5:
        assert probes == [] and warm == [tasks[0]]
    else:
        assert warm[0].size == 1 and probes[0].size == 1
        assert probes[1].size == min(max(2, size // PROBE_SHARE), size - 2)
        assert warm[0].stop == probes[0].start and probes[0].stop == probes[1].start
    assert rest[-2:] == tasks[1:]


def test_estimate_recovers_a_linear_cost():
    fixed, per_rep = 0.2, 0.005
    tasks = [_T("a", 0, 100), _T("a", 100, 350)]
    est = sequential_estimate(fixed + per_rep, fixed + 40 * per_rep, 40, tasks)
    assert est == pytest.approx(2 * fixed + 350 * per_rep)
    # a probe slower than the single replication's cost never gives a negative estimate
    assert sequential_estimate(0.3, 0.1, 40, tasks) >= 0
