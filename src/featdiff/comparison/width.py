"""The width check's thresholds (WidthCheck) and the readings it is judged on: whether an SAE narrower than
the features should be trained again wider (docs/metrics.md, "Widening"; docs/design.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from featdiff.comparison.table import Comparison
from featdiff.core.config import Config, check_int, check_number
from featdiff.errors import FeatdiffError

# widen when a reference SAE twice as wide leaves this share less of the variance unexplained (the
# reductions measured on planted data, the lab and SmolLM2: docs/metrics.md, "Widening")
WIDEN_REDUCTION = 0.2
# ... and only when the reference uses (nearly) all its latents: one with many dead latents has room to
# spare (docs/metrics.md, "Widening")
WIDEN_MIN_LIVE = 0.9


@dataclass
class WidthCheck(Config):
    """The thresholds of the width check (``compare_activations`` / ``compare_checkpoints``, ``widen``
    rounds; docs/design.md, "Thresholds, their defaults and why"; docs/metrics.md, "Widening").

    In each round, every SAE whose live share (scored latents over its width: ``n_live / n_features``) is
    at least ``min_live`` gets a probe ``factor`` times as wide: the reference's, and with ``targets`` each
    target's. Where ``narrow_reference`` is on and the narrow-reference diagnostic
    (``featdiff.comparison.diagnostics.narrow_reference``) fires, the reference is probed whatever its live
    share. Where any probe cuts its own SAE's unexplained variance on that checkpoint's held-out tokens by
    at least ``min_reduction``, or the diagnostic fires, every SAE (reference, targets, replicas) is
    trained again ``factor`` times as wide, the probes serving as their checkpoints' SAEs.

    ``min_live``: default ``WIDEN_MIN_LIVE`` = 0.9 (an SAE with spare latents is not held back by its
    width). ``min_reduction``: default ``WIDEN_REDUCTION`` = 0.2. ``narrow_reference``: whether the
    diagnostic triggers the probe and the widening (default True). ``factor``: the width multiplier of the
    probes and of each widening (default 2). ``targets``: whether the targets' SAEs are probed too (default
    True): a target with more features than the reference (SFT adds them) outgrows a width that fits the
    reference, and its recombinations then read as its kept features firing together.

    Examples
    --------
    >>> WidthCheck(min_reduction=0.3).to_dict()
    {'min_live': 0.9, 'min_reduction': 0.3, 'narrow_reference': True, 'factor': 2, 'targets': True}
    >>> WidthCheck.from_dict(WidthCheck().to_dict()) == WidthCheck()
    True
    """

    min_live: float = WIDEN_MIN_LIVE
    min_reduction: float = WIDEN_REDUCTION
    narrow_reference: bool = True
    factor: int = 2
    targets: bool = True

    def __post_init__(self) -> None:
        where = "WidthCheck"
        check_number(where, "min_live", self.min_live, 0, 1)
        check_number(where, "min_reduction", self.min_reduction, 0, 1)
        check_int(where, "factor", self.factor, minimum=2)
        for name in ("narrow_reference", "targets"):
            if not isinstance(getattr(self, name), bool):
                raise FeatdiffError(
                    f"The {name!r} parameter of {where} must be True or False; got {getattr(self, name)!r}."
                )


def width_check_config(width_check) -> WidthCheck:
    """``width_check=`` of the pipeline as a WidthCheck: None is the defaults, a dict its fields."""
    if width_check is None:
        return WidthCheck()
    if isinstance(width_check, Mapping):
        return WidthCheck.from_dict(width_check)
    if not isinstance(width_check, WidthCheck):
        raise FeatdiffError(
            f"width_check must be a featdiff.WidthCheck (or its dict); got {type(width_check).__name__}."
        )
    return width_check


def live_shares(cmp: Comparison, reference: str) -> dict[str, float]:
    """Per checkpoint: the share of its SAE's latents that are scored (live, not faint) on the held-out
    tokens."""
    out = {}
    n_ref = cmp.meta.get("reference_n_features") or 0
    if n_ref:
        out[reference] = cmp.meta.get("reference_n_live", 0) / n_ref
    s = cmp.summary
    for n in s.index:
        total = float(s.loc[n, "n_features"])  # its dictionary's latents (absorbed rows are none of them)
        if total > 0:
            out[str(n)] = float(s.loc[n, "n_live"]) / total
    return out
