"""The ``landscape`` command line: one module per command, argument types in ``_args``."""

from landscape.cli._main import ArgumentError, build_parser, emit_json, main

__all__ = ["ArgumentError", "build_parser", "emit_json", "main"]
