"""How long reading a reply takes for replies built to be slow: many unclosed ``FINAL(``, unclosed
strings inside one, many open fences.  Prints seconds per reply size; parsing should grow linearly.

    .venv/bin/python benchmarks/parse_speed.py
"""

from __future__ import annotations

import time

from rlm.core import parsing

SHAPES = {
    "unclosed FINAL(": "FINAL(",
    "FINAL( with an unclosed triple quote": "FINAL('''",
    "quotes after FINAL(": "FINAL(\"x' ",
    "open fences": "```repl\nFINAL(\n",
}


def main() -> None:
    print(f"{'shape':40} {'size':>10} {'find_final s':>13} {'find_code_blocks s':>19}")
    for name, unit in SHAPES.items():
        for size in (250_000, 500_000, 1_000_000):
            reply = unit * (size // len(unit))
            t0 = time.perf_counter()
            parsing.find_final(reply)
            t1 = time.perf_counter()
            parsing.find_code_blocks(reply)
            t2 = time.perf_counter()
            print(f"{name:40} {len(reply):>10,} {t1 - t0:>13.3f} {t2 - t1:>19.3f}")


if __name__ == "__main__":
    main()
