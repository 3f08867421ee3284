"""The base layer: errors, status and reason codes, method options, per-fit result types
and the package version. It imports nothing else of the package (docs/architecture.md).
"""
