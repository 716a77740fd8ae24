"""The metric registry: names -> functions of a MetricContext, computed by compare_dictionaries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.alignment.matching import Alignment, svcca
from featdiff.dictionaries.stats import encode
from featdiff.errors import FeatdiffError


@dataclass
class MetricContext:
    """What a metric sees for one (reference, target) pair.

    ``alignment`` matches target features to reference features; ``reference`` / ``target`` are the two
    dictionaries (sae-lens SAEs); ``activations`` (or None) holds both checkpoints' activations on the
    same evaluation tokens; ``features`` is the per-feature table computed so far (status, similarity, ...).
    """

    reference_name: str
    target_name: str
    alignment: Alignment
    reference: object
    target: object
    activations: ActivationSet | None = None
    features: pd.DataFrame | None = None
    extras: dict = field(default_factory=dict)

    @cached_property
    def reference_codes(self) -> Tensor:
        """Codes of the reference dictionary on the reference checkpoint's activations."""
        return encode(self.reference, self._acts(self.reference_name))

    @cached_property
    def target_codes(self) -> Tensor:
        """Codes of the target dictionary on the target checkpoint's activations."""
        return encode(self.target, self._acts(self.target_name))

    def _acts(self, name: str) -> Tensor:
        if self.activations is None:
            raise FeatdiffError("This metric needs activations; pass acts= to compare_dictionaries.")
        return self.activations.column(name)  # on disk: streamed by encode, never loaded whole


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[MetricContext], object]
    higher_is_better: bool | None = None
    description: str = ""


_REGISTRY: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool | None = None, *, fn: Callable | None = None):
    """Register a metric computed by compare_dictionaries / compare_checkpoints for every target.

    The function takes a MetricContext and returns a float (a column of the summary table), a Series
    indexed by target feature (a column of the features table), or a DataFrame with a ``feature``
    column (its other columns join the features table, prefixed by nothing). Use as a decorator.

    Examples
    --------
    >>> @register_metric("n_live", higher_is_better=None)
    ... def n_live(ctx):
    ...     return float(ctx.alignment.tgt_live.sum())
    >>> "n_live" in available_metrics().index
    True
    >>> unregister_metric("n_live")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise FeatdiffError(f"A metric name must be a Python identifier (a table column); got {name!r}.")

    def deco(f: Callable) -> Callable:
        if name in _REGISTRY:
            raise FeatdiffError(
                f"A metric named {name!r} is already registered; pick another name or unregister_metric first."
            )
        _REGISTRY[name] = Metric(name, f, higher_is_better, (f.__doc__ or "").strip().split("\n")[0])
        return f

    return deco(fn) if fn is not None else deco


def unregister_metric(name: str) -> None:
    """Remove a registered metric (unknown names raise, listing the registered ones).

    Examples
    --------
    >>> register_metric("tmp_metric", fn=lambda ctx: 1.0)  # doctest: +ELLIPSIS
    <function <lambda> at ...>
    >>> unregister_metric("tmp_metric")
    >>> "tmp_metric" in available_metrics().index
    False
    """
    get_metric(name)
    del _REGISTRY[name]


def get_metric(name_or_fn: str | Callable) -> Metric:
    """The registered metric of that name (or wrap a callable); unknown names list the valid ones."""
    if callable(name_or_fn):
        return Metric(getattr(name_or_fn, "__name__", "metric"), name_or_fn)
    if name_or_fn not in _REGISTRY:
        raise FeatdiffError(f"Unknown metric {name_or_fn!r}; registered metrics are {sorted(_REGISTRY)}.")
    return _REGISTRY[name_or_fn]


def available_metrics() -> pd.DataFrame:
    """The registered metrics: index name, columns higher_is_better, description.

    Examples
    --------
    >>> bool(available_metrics().loc["mmcs", "higher_is_better"])
    True
    """
    return pd.DataFrame(
        [(m.name, m.higher_is_better, m.description) for m in _REGISTRY.values()],
        columns=["name", "higher_is_better", "description"],
    ).set_index("name")


def compute_metric(metric: Metric, ctx: MetricContext) -> tuple[dict, pd.DataFrame | None]:
    """Run one metric; return (summary columns, per-feature columns with a ``feature`` column or None)."""
    try:
        out = metric.fn(ctx)
    except FeatdiffError:
        raise
    except Exception as e:
        raise FeatdiffError(
            f"Metric {metric.name!r} failed on target {ctx.target_name!r}: {type(e).__name__}: {e}"
        ) from e
    if isinstance(out, pd.DataFrame):
        if "feature" not in out.columns:
            raise FeatdiffError(f"Metric {metric.name!r} returned a DataFrame without a 'feature' column.")
        return {}, out
    if isinstance(out, pd.Series):
        return {}, pd.DataFrame({"feature": out.index.to_numpy(), metric.name: out.to_numpy()})
    if isinstance(out, (int, float, np.floating, np.integer)):
        return {metric.name: float(out)}, None
    raise FeatdiffError(
        f"Metric {metric.name!r} must return a float, a Series or a DataFrame; got {type(out).__name__}."
    )


# Built-in extra metrics (the core columns of docs/design.md are computed by compare_dictionaries itself).


@register_metric("mmcs", higher_is_better=True)
def _mmcs(ctx: MetricContext) -> float:
    """Mean max cosine of target decoder rows to the reference's (live features)."""
    al = ctx.alignment
    sim = al.tgt_decoder[al.tgt_live] @ al.ref_decoder[al.ref_live].T
    return float(sim.max(1).values.mean()) if sim.numel() else float("nan")


@register_metric("svcca", higher_is_better=True)
def _svcca(ctx: MetricContext) -> float:
    """SVCCA of the reference's and the target's activations on the same tokens (dictionary-free)."""

    if ctx.activations is None:
        return float("nan")
    n = min(ctx.activations.n_tokens, 20_000)  # a subsample keeps the SVDs cheap
    return svcca(ctx.activations.rows(ctx.reference_name, 0, n), ctx.activations.rows(ctx.target_name, 0, n))
