"""The `rlm` command line: thin typer commands over the library (``rlm.RLM`` and friends).

Only modules in this package import typer, rich or prompt_toolkit.
"""

from rlm.cli.app import app, main

__all__ = ["app", "main"]
