"""A suite's search space: one distribution per dotted config path (``search.space``).

Kinds (each entry is a mapping with exactly one of them):

* ``{uniform: [low, high]}``: a float drawn uniformly from ``[low, high]``;
* ``{loguniform: [low, high]}``: a float whose logarithm is uniform (``0 < low``);
* ``{int: [low, high]}``: an integer in ``[low, high]``, both ends included; ``step: k``
  restricts it to ``low, low + k, ...`` (``k`` must divide ``high - low``); ``log: true``
  draws it log-uniformly (no step);
* ``{choice: [a, b, ...]}``: one of the listed numbers, strings, booleans or nulls.

They become Optuna distributions (the study stores them under the same dotted names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = ("uniform", "loguniform", "int", "choice")
_EXTRAS = {"int": ("step", "log")}


@dataclass(frozen=True)
class Distribution:
    """One searched setting: ``kind`` in :data:`KINDS` and its bounds or choices."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def candidates(self) -> list[Any]:
        """Values that validation tries in the trial config: both bounds, or every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def to_optuna(self):
        """The equivalent ``optuna.distributions`` object."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=self.step or 1)
        return FloatDistribution(float(self.low), float(self.high),
                                 log=self.kind == "loguniform")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def parse_distribution(raw: Any) -> Distribution:
    """A :class:`Distribution` from its suite form; ``ValueError`` says what is wrong."""
    shapes = ("{uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]} "
              "(optional step, log) or {choice: [a, b, ...]}")
    if not isinstance(raw, dict):
        raise ValueError(f"a distribution is a mapping: {shapes} (got {raw!r})")
    kinds = [k for k in raw if k in KINDS]
    if len(kinds) != 1:
        raise ValueError(f"give exactly one of {', '.join(KINDS)}: {shapes} (got {raw!r})")
    kind = kinds[0]
    extra = [k for k in raw if k != kind and k not in _EXTRAS.get(kind, ())]
    if extra:
        allowed = ", ".join(_EXTRAS.get(kind, ())) or "nothing else"
        raise ValueError(f"unknown key '{extra[0]}' beside '{kind}'; allowed: {allowed}")
    value = raw[kind]
    if kind == "choice":
        return _choice(value)
    if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)):
        raise ValueError(f"{kind} takes [low, high], two numbers (got {value!r})")
    low, high = value
    if not low < high:
        raise ValueError(f"{kind} needs low < high (got [{low}, {high}])")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform needs 0 < low (got [{low}, {high}])")
    if kind != "int":
        return Distribution(kind, float(low), float(high))
    return _integer(low, high, raw.get("step"), raw.get("log", False))


def _choice(value: Any) -> Distribution:
    if not isinstance(value, list) or not value:
        raise ValueError(f"choice takes a non-empty list of values (got {value!r})")
    for item in value:
        if not (item is None or isinstance(item, (bool, int, float, str))):
            raise ValueError("choice values must be numbers, strings, booleans or null (got "
                             f"{item!r}); for structured settings, use an axis instead")
    if len({repr(v) for v in value}) != len(value):
        raise ValueError(f"choice lists a value twice (got {value!r})")
    return Distribution("choice", choices=tuple(value))


def _integer(low: Any, high: Any, step: Any, log: Any) -> Distribution:
    if not all(isinstance(v, int) for v in (low, high)):
        raise ValueError(f"int takes [low, high], two integers (got [{low}, {high}])")
    if not isinstance(log, bool):
        raise ValueError(f"int: log is true or false (got {log!r})")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"int: step is a positive integer (got {step!r})")
        if (high - low) % step:
            raise ValueError(f"int: step {step} does not divide high - low = {high - low}")
        if log and step != 1:
            raise ValueError("int: log sampling takes no step")
    if log and low < 1:
        raise ValueError(f"int with log: true needs 1 <= low (got [{low}, {high}])")
    return Distribution("int", low, high, step=step, log=log)


def format_value(value: Any) -> str:
    """A short, readable hyperparameter value: ``3.1e-3``, ``0.25``, ``128``, ``lstm``."""
    if isinstance(value, float):
        text = f"{value:.3g}"
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}e{int(exponent)}"
        return text
    return str(value)


def short_names(paths: list[str]) -> dict[str, str]:
    """Labels for dotted paths: the path without its section (``train.lr`` -> ``lr``,
    ``model.dropout.output`` -> ``dropout.output``), or the whole path where two collide."""
    short = {p: p.split(".", 1)[-1] for p in paths}
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {p: (s if counts[s] == 1 else p) for p, s in short.items()}


def describe(values: dict[str, Any], paths: list[str] | None = None) -> str:
    """``lr=3.1e-3, hidden=128`` for a path -> value mapping (``paths`` orders and names)."""
    order = paths if paths is not None else list(values)
    names = short_names(order)
    return ", ".join(f"{names[p]}={format_value(values[p])}" for p in order if p in values)
