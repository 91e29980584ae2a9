"""Options shared by every command module of the CLI (one definition each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML settings file (default: configs/default.yaml or $RLM_CONFIG).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server URL (default: Ollama at http://localhost:11434/v1).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Root model name.")]
SubModelOpt = Annotated[Optional[str], typer.Option("--sub-model", help="Model for llm_query (default: the root model).")]
MaxIterOpt = Annotated[Optional[int], typer.Option("--max-iterations", help="Iteration limit (default 20).")]
NoSubOpt = Annotated[bool, typer.Option("--no-subcalls", help="Disable llm_query and friends.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="Show no progress.")]
