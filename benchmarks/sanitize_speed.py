"""How long making hostile text terminal-safe takes (``rlm.core.text.terminal_text``, which the loop
also applies to every cell output the model sees) for texts built to be slow: runs of unterminated
control-string introducers (OSC, DCS), CSI introducers, escapes, line separators.  Prints seconds
per size; the time should grow linearly (the former regex took 8 s for 32,000 U+009D).

    .venv/bin/python benchmarks/sanitize_speed.py
"""

from __future__ import annotations

import time

from rlm.core.text import json_line, terminal_text

SHAPES = {
    "plain text": "abcdefgh",
    "unterminated C1 OSC (U+009D)": "\x9d",
    "unterminated ESC ]": "\x1b]",
    "ESC [ without a final byte": "\x1b[",
    "C1 CSI (U+009B)": "\x9b",
    "OSC 0 ended by the next ESC": "\x1b]0;x",
    "U+2028 and text": "é\u2028",
}


def main() -> None:
    print(f"{'shape':32} {'chars':>10} {'terminal_text s':>16} {'json_line s':>12}")
    for name, unit in SHAPES.items():
        for size in (250_000, 500_000, 1_000_000):
            text = unit * (size // len(unit))
            t0 = time.perf_counter()
            terminal_text(text)
            t1 = time.perf_counter()
            json_line({"output": text})
            t2 = time.perf_counter()
            print(f"{name:32} {len(text):>10,} {t1 - t0:>16.3f} {t2 - t1:>12.3f}")


if __name__ == "__main__":
    main()
