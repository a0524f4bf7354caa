"""The ``resattn`` command line."""
from ._base import COMMANDS, build_parser, main

__all__ = ["main", "build_parser", "COMMANDS"]
