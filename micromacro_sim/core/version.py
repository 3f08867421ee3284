"""The package version: one place, read by the package and by run identities."""

__version__ = "0.6.0"
