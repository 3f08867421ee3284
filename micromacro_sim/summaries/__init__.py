"""The results stage: summaries of a run folder (bias, RMSE, coverage, rejection rates,
MCSEs, flags), tidy tables and the design factors' labels (docs/architecture.md).
"""
