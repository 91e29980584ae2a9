"""Value kinds and range checks of settings: parsing raw values (YAML, environment, flags)
into typed ones, and the checks that say what was expected."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

# ---------------------------------------------------------------- value kinds

class _BadValue(ValueError):
    """A raw value does not fit a kind; ``args[0]`` says what was expected."""


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _to_int(raw: object) -> int:
    expected = "an integer"
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            pass
    raise _BadValue(expected)


def _to_float(raw: object) -> float:
    expected = "a number"
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise _BadValue(expected) from None
    else:
        raise _BadValue(expected)
    if not math.isfinite(value):
        raise _BadValue("a finite number")
    return value


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _BadValue("a boolean (true/false, 1/0, yes/no, on/off)")


def _to_str(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    raise _BadValue("a string (quote it in YAML)")


def _to_opt_str(raw: object) -> str | None:
    if raw is None or raw == "":
        return None
    return _to_str(raw)


def _to_str_tuple(raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise _BadValue("a list of strings (or a comma-separated string)")


def _to_labels(raw: object) -> tuple[tuple[str, str], ...]:
    expected = "a mapping of label names to values (or 'k=v,k2=v2')"
    if isinstance(raw, str):
        pairs = [part.split("=", 1) for part in raw.split(",") if part.strip()]
        if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
            raise _BadValue(expected)
        return tuple((k.strip(), v.strip()) for k, v in pairs)
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
        items = [tuple(p) for p in raw]
    else:
        raise _BadValue(expected)
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in items):
        raise _BadValue(expected)
    return tuple((k, str(v)) for k, v in items)


def _to_prices(raw: object) -> tuple[tuple[str, float, float], ...]:
    """{model: {prompt: usd_per_1k, completion: usd_per_1k}} (or 'model=0.15/0.6,other=1/2' in env)
    as sorted (model, prompt, completion) triples."""
    expected = "a mapping {model: {prompt: USD per 1k tokens, completion: USD per 1k tokens}} (or 'model=0.15/0.6')"
    items: list[tuple[object, object, object]] = []
    if isinstance(raw, str):
        for part in (p.strip() for p in raw.split(",") if p.strip()):
            model, _, pair = part.rpartition("=")
            prompt, _, completion = pair.partition("/")
            if not model.strip() or not prompt.strip() or not completion.strip():
                raise _BadValue(expected)
            items.append((model.strip(), prompt, completion))
    elif isinstance(raw, Mapping):
        for name, price in raw.items():
            if not isinstance(price, Mapping) or set(price) - {"prompt", "completion"} or not price:
                raise _BadValue(expected)
            items.append((name, price.get("prompt", 0.0), price.get("completion", 0.0)))
    elif raw is None:
        return ()
    else:
        raise _BadValue(expected)
    out = []
    for key, per_prompt, per_completion in items:
        if not isinstance(key, str) or not key:
            raise _BadValue(expected)
        p, c = _to_float(per_prompt), _to_float(per_completion)
        if p < 0 or c < 0:
            raise _BadValue("prices of 0 or more")
        out.append((key, p, c))
    return tuple(sorted(out))


_PARSERS: dict[str, Callable[[object], Any]] = {
    "int": _to_int, "float": _to_float, "bool": _to_bool, "str": _to_str,
    "opt_str": _to_opt_str, "str_list": _to_str_tuple, "labels": _to_labels, "prices": _to_prices,
}

_PLAIN: dict[str, Callable[[Any], Any]] = {
    "int": lambda v: v, "float": lambda v: v, "bool": lambda v: v, "str": lambda v: v,
    "opt_str": lambda v: v, "str_list": list, "labels": lambda v: {k: val for k, val in v},
    "prices": lambda v: {m: {"prompt": p, "completion": c} for m, p, c in v},
}


# ---------------------------------------------------------------- range checks
# Each returns None when the value is fine, else what was expected.

def _positive(value: float) -> str | None:
    return None if value > 0 else "greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "0 or more"


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "a non-empty string"


def _own_labels(value: tuple[tuple[str, str], ...]) -> str | None:
    from rlm.sandbox.settings import OWNER_LABELS

    taken = [k for k, _ in value if k in OWNER_LABELS]
    return None if not taken else (f"labels of your own: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} "
                                   "rlm's (the reaper reads them to find a session's owner)")


def _temperature(value: float) -> str | None:
    return None if 0.0 <= value <= 2.0 else "between 0 and 2"


def _http_url(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return None
    return "an http:// or https:// URL (e.g. http://localhost:11434/v1)"
