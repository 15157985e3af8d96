"""The `synthgen` command (the console-script entry point `synthgen.cli:app`): a thin layer over the Python
API that parses options, shows progress, and turns errors into messages and exit codes. The app and its shared
helpers live in `cli_app`; each command module registers its commands on it when imported here."""

from __future__ import annotations

from importlib import import_module

from synthgen.cli_app import app

__all__ = ["app"]

for _module in ("cli_run", "cli_tools", "cli_data", "view.cli"):  # the order `synthgen --help` lists their commands in
    import_module(f"synthgen.{_module}")
