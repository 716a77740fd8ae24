"""One mechanism for every dataclass config: ``to_dict`` / ``from_dict`` / ``replace`` and field checks.

``from_dict`` rejects unknown keys instead of dropping them (STYLE.md 5); nested configs and tuples
round-trip through plain JSON types.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from featdiff.errors import FeatdiffError


class Config:
    """Mixin for dataclass configs.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo(Config):
    ...     lr: float = 0.1
    >>> Demo.from_dict({"lr": 0.2}).to_dict()
    {'lr': 0.2}
    >>> try:
    ...     Demo.from_dict({"lrr": 0.2})
    ... except FeatdiffError as e:
    ...     print(e)
    Unknown Demo keys ['lrr']; allowed keys are ['lr'].
    """

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, list):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        if not isinstance(d, Mapping):
            raise FeatdiffError(f"{cls.__name__}.from_dict needs a dict; got {type(d).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise FeatdiffError(f"Unknown {cls.__name__} keys {unknown}; allowed keys are {list(fields)}.")
        kwargs = {}
        for k, v in d.items():
            kind = _nested_config(fields[k])
            if kind is not None and isinstance(v, Mapping):
                v = kind.from_dict(v)
            elif isinstance(v, list) and _is_tuple_field(fields[k]):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    def replace(self, **changes: Any):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _nested_config(f: dataclasses.Field) -> type[Config] | None:
    v = _default_of(f)
    return type(v) if isinstance(v, Config) else None


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return isinstance(_default_of(f), tuple)


def check_int(where: str, name: str, value: Any, minimum: int = 1, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise FeatdiffError(
            f"The '{name}' parameter of {where} must be {what}{' or None' if optional else ''}; got {value!r}."
        )


def check_number(
    where: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
    strict_high: bool = False,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number within the bounds (or None when ``optional``)."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value < high if strict_high else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if strict_low else '>='} {low}"
        hi = "" if high is None else f"{'<' if strict_high else '<='} {high}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        what = f"a number {bounds}" if bounds else "a finite number"
        raise FeatdiffError(
            f"The '{name}' parameter of {where} must be {what}{' or None' if optional else ''}; got {value!r}."
        )


def run_steps(
    n_steps: int | None,
    n_epochs: float | None,
    n_samples: int | None,
    batch_size: int,
    n_tokens: int,
    full_batches: bool = False,
) -> int:
    """Optimiser steps of a run: ``n_steps`` if set, else ``n_epochs`` passes over ``n_tokens`` rows (whole
    batches only when ``full_batches``), else ``n_samples`` rows; batches hold at most ``n_tokens`` rows.

    Examples
    --------
    >>> run_steps(None, None, 10_000, 1024, 1000), run_steps(None, 2.5, None, 256, 1000, full_batches=True)
    (10, 8)
    """
    batch = min(batch_size, n_tokens)
    if n_steps is not None:
        return n_steps
    if n_epochs is not None:
        per_epoch = n_tokens // batch if full_batches else n_tokens / batch
        return max(1, math.ceil(n_epochs * per_epoch))
    return max(1, math.ceil(n_samples / batch))  # type: ignore[operator]
