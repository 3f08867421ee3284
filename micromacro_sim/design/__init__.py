"""The design stage: a YAML config parsed into immutable scenarios, without any method or
backend (the field table, group-size specs, limits, policy, budgets, adaptive settings and
MCSE measures). It imports only :mod:`micromacro_sim.core` (docs/architecture.md).
"""
