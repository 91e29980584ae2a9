#!/usr/bin/env python3
"""Thin entry: `python cli.py query ...` works exactly like `rlm query ...`."""

from rlm.cli import main

if __name__ == "__main__":
    main()
