"""Optional feature modules register their own subcommands; a module absent from this build is skipped."""

from __future__ import annotations

import importlib


def register(subparsers, module_names) -> None:
    """Call add_parser(subparsers) of each module; heavy imports stay inside the modules' run functions."""
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that feature is not part of this build
            raise
        module.add_parser(subparsers)
