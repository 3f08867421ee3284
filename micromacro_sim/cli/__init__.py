"""The command line: ``micromacro COMMAND ...`` (:func:`main`; the commands in :mod:`.main`)."""

from micromacro_sim.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
