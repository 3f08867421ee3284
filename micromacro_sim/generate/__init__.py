"""The generate stage: group sizes, random streams, the data-generating process and its
components, one :class:`~micromacro_sim.generate.dataset.Dataset` and many replications
stacked as a :class:`~micromacro_sim.generate.batch.Batch` (docs/architecture.md).
"""
