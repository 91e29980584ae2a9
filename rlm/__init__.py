"""rlm: Recursive Language Models with sandboxed REPLs."""
__version__ = "0.1.0"
