"""A run's budgets beyond its turns: wall time, tokens (root plus sub-calls, prompt plus completion)
and cost in US dollars (from a ``prices`` table: {model: {prompt: usd_per_1k, completion: usd_per_1k}}).

The loop checks them between turns (its safe point): when one is reached the run asks the model once
for its best answer and ends with the budget's status (``time_limit``, ``token_limit``, ``cost_limit``).
A budget of 0 is no budget."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlm.errors import ConfigError
from rlm.llm.base import Usage

Prices = Mapping[str, Mapping[str, float]]   # model -> {"prompt": usd per 1k tokens, "completion": ...}

TIME_LIMIT, TOKEN_LIMIT, COST_LIMIT = "time_limit", "token_limit", "cost_limit"
BUDGET_STATUSES = (TIME_LIMIT, TOKEN_LIMIT, COST_LIMIT)


@dataclass(frozen=True)
class Reached:
    """A budget the run reached: its setting, the run's status, the limit and what was used."""

    setting: str      # max_time_s | max_tokens | max_cost_usd
    status: str       # time_limit | token_limit | cost_limit
    limit: float
    used: float

    @property
    def message(self) -> str:
        unit = {"max_time_s": " s", "max_tokens": " tokens", "max_cost_usd": " USD"}[self.setting]
        used = f"{self.used:.4f}" if self.setting == "max_cost_usd" else f"{self.used:,.0f}" \
            if self.setting == "max_tokens" else f"{self.used:.1f}"
        return f"the budget {self.setting}={self.limit:g}{unit} is reached ({used}{unit} used)"

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "status": self.status, "limit": self.limit,
                "used": round(self.used, 6)}


def model_cost(model: str, usage: Usage, prices: Prices) -> float | None:
    """The cost of ``usage`` of ``model`` in USD: what the server reported when it did
    (``usage.cost_usd``), else from ``prices``; None when neither knows."""
    reported = getattr(usage, "cost_usd", None)
    if isinstance(reported, (int, float)) and not isinstance(reported, bool):
        return float(reported)
    price = prices.get(model)
    if price is None:
        return None
    return usage.prompt_tokens / 1000 * float(price.get("prompt", 0.0)) \
        + usage.completion_tokens / 1000 * float(price.get("completion", 0.0))


def costs(usage: Mapping[str, Usage], prices: Prices) -> dict[str, float | None]:
    """Each model's cost in USD (None: no price known)."""
    return {model: model_cost(model, u, prices) for model, u in usage.items()}


def total_tokens(usage: Mapping[str, Usage]) -> int:
    return sum(u.prompt_tokens + u.completion_tokens for u in usage.values())


@dataclass(frozen=True)
class Budget:
    """The limits of one run (0: none) and the prices that give its cost."""

    max_time_s: float = 0.0
    max_tokens: int = 0
    max_cost_usd: float = 0.0
    prices: Prices | None = None

    @property
    def any(self) -> bool:
        return bool(self.max_time_s or self.max_tokens or self.max_cost_usd)

    def check_prices(self, models: list[str]) -> None:
        """A cost budget needs a price for every model the run will call (or a server that reports
        costs, which cannot be known before the first call: then the table must name them)."""
        if not self.max_cost_usd:
            return
        missing = [m for m in dict.fromkeys(models) if m not in (self.prices or {})]
        if missing:
            raise ConfigError(f"max_cost_usd={self.max_cost_usd:g} needs the price of {', '.join(map(repr, missing))}",
                              hint="add it to the prices setting, e.g. prices: {MODEL: {prompt: 0.15, "
                                   "completion: 0.6}} (USD per 1,000 tokens)")

    def reached(self, elapsed_s: float, usage: Mapping[str, Usage]) -> Reached | None:
        """The first budget reached (time, then tokens, then cost), or None."""
        if self.max_time_s and elapsed_s >= self.max_time_s:
            return Reached("max_time_s", TIME_LIMIT, self.max_time_s, elapsed_s)
        if self.max_tokens:
            used = total_tokens(usage)
            if used >= self.max_tokens:
                return Reached("max_tokens", TOKEN_LIMIT, self.max_tokens, used)
        if self.max_cost_usd:
            cost = sum(c for c in costs(usage, self.prices or {}).values() if c is not None)
            if cost >= self.max_cost_usd:
                return Reached("max_cost_usd", COST_LIMIT, self.max_cost_usd, cost)
        return None


class BudgetedHandler:
    """The sub-call handler the sandbox's bridge calls, refusing every sub-call once a budget is reached
    (a cell that fans out stops spending; the run itself stops at the end of the turn).  ``reached``
    says which budget is reached now, or None.  Everything else (``cancel``, ``deadline_for``, ...)
    is the wrapped handler's."""

    def __init__(self, handler: Any, reached: Any, refusal: type[Exception]) -> None:
        self.handler = handler
        self._reached = reached
        self._refusal = refusal

    def __call__(self, request: dict) -> dict:
        hit = self._reached()
        if hit is not None:
            raise self._refusal(f"{hit.message}: no more sub-calls in this run; answer from what you have "
                                "with FINAL(...)")
        result: dict = self.handler(request)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)
