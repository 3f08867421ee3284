"""Numerical kernels: the models behind the methods, with no estimator and no registry.

Each family module holds a kernel's per-dataset reference and its batch version side by
side (or names its partner module), so their equivalence is visible and tested in one
place (``tests/test_kernels_*.py``). Method files in :mod:`micromacro_sim.estimators`
only wire options and data to these kernels.

Families: :mod:`.ols` (second-step OLS with every SE type and its checks).
"""
