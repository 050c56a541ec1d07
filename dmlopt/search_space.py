"""Search spaces: named ranges that Optuna samples and fixed values that it does not.

Parameter names are dotted (``loss.margin``, ``miner.epsilon``, ``loss_optimizer.lr``) so the
Optuna dashboard groups them and an export can rebuild the nested study-file form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

Value = float | int


@dataclass(frozen=True)
class Range:
    """A closed interval sampled by Optuna, on a linear or log scale, of floats or integers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def __str__(self) -> str:
        scale = "log" if self.log else "lin"
        kind = ("int log" if self.log else "int") if self.integer else scale
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        return f"[{fmt(self.low)}, {fmt(self.high)}] {kind}"


Param = Range | Value
#: The keys of a range override in a study file: ``{low: 0.1, high: 0.5, log: true}``.
RANGE_KEYS = ("low", "high", "log")


def merge(
    defaults: Mapping[str, Param], overrides: Mapping[str, Any], *, what: str
) -> dict[str, Param]:
    """Apply study-file overrides onto a default space.

    An override is a number (the parameter is fixed) or a mapping ``{low, high, log}`` (new bounds;
    the type, float or int, stays the registry's). Unknown names are errors, never ignored.
    """
    space = dict(defaults)
    for name, value in overrides.items():
        if name not in space:
            known = ", ".join(sorted(space)) or "none"
            raise ValueError(f"{what} has no parameter {name!r} (known: {known})")
        try:
            space[name] = _override(space[name], value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}.{name}: {e}") from None
    return space


def _override(default: Param, value: Any) -> Param:
    integer = default.integer if isinstance(default, Range) else isinstance(default, int)
    if isinstance(value, Mapping):
        if set(value) - set(RANGE_KEYS) or not {"low", "high"} <= set(value):
            raise ValueError(f"a range is {{low, high, log}}, got {dict(value)}")
        bounds = [_number(value["low"], integer), _number(value["high"], integer)]
        log = value.get("log", default.log if isinstance(default, Range) else False)
        return Range(bounds[0], bounds[1], bool(log), integer)
    return _number(value, integer)


def _number(value: Any, integer: bool) -> Value:
    """A finite number; an integer parameter refuses fractions rather than rounding them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number or {{low, high, log}}, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value) if integer else float(value)


def parse_param(value: Any) -> Param:
    """A parameter of a user's own loss: a number (fixed) or ``{low, high, log, int}`` (searched;
    ``int: true`` for an integer range, floats otherwise)."""
    if isinstance(value, Mapping):
        if set(value) - {"low", "high", "log", "int"} or not {"low", "high"} <= set(value):
            raise ValueError(f"a range is {{low, high, log, int}}, got {dict(value)}")
        integer = value.get("int", False)
        if not isinstance(integer, bool) or not isinstance(value.get("log", False), bool):
            raise ValueError(f"log and int are true or false, got {dict(value)}")
        low, high = _number(value["low"], integer), _number(value["high"], integer)
        return Range(low, high, value.get("log", False), integer)
    return _number(value, isinstance(value, int) and not isinstance(value, bool))


def suggest(space: Mapping[str, Param], trial: optuna.Trial) -> dict[str, Value]:
    """Every parameter's value for this trial: ranges sampled, fixed values passed through."""
    return {
        name: p.suggest(trial, name) if isinstance(p, Range) else p for name, p in space.items()
    }


def fix(space: Mapping[str, Param], values: Mapping[str, Value]) -> dict[str, Value]:
    """Every parameter's value: from ``values`` (a trial's) where searched, else the fixed one."""
    missing = [n for n, p in space.items() if isinstance(p, Range) and n not in values]
    if missing:
        raise ValueError(f"no value for searched parameters {', '.join(missing)}")
    return {n: values[n] if isinstance(p, Range) else p for n, p in space.items()}


def is_fixed(space: Mapping[str, Param]) -> bool:
    return not any(isinstance(p, Range) for p in space.values())
