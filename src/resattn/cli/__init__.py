"""The ``resattn`` command line: a thin layer over the Python API.

:mod:`resattn.cli._base` holds what the subcommands share; each subcommand is
a module of its own (``models``: list and info, ``convert``, ``train``,
``eval``, ``masks``, ``launch``, ``deploy``: export and quantize). Importing
this package or building the parser imports no MXNet.
"""
from ._base import (COMMANDS, build_parser, exit_status, load_trained, main, saved_config,
                    worker_exits_on_failure)

__all__ = ["main", "build_parser", "COMMANDS", "exit_status", "load_trained", "saved_config",
           "worker_exits_on_failure"]
