"""The thresholds of a comparison, each in one place: ``CompareConfig`` (scoring, the crosscoder route,
uncertainty) and its nested ``DiagnosticsConfig`` (when ``diagnose`` warns that a reading is weak) and
``WidthCheck`` (when the SAEs are trained again wider). The defaults are the named constants below and those
of the modules that own a rule (the loss-settling and dead-latent thresholds of featdiff.dictionaries.health,
the estimator and interval settings of featdiff.metrics.uncertainty); docs/design.md lists them all,
docs/diagnostics.md says why each is what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from featdiff.core.config import Config, check_int, check_number
from featdiff.dictionaries.health import MAX_DEAD_FRACTION, SETTLE_TOLERANCE, SETTLE_WINDOW
from featdiff.dictionaries.quality import DENSE_THRESHOLD
from featdiff.errors import FeatdiffError, check_choice
from featdiff.metrics.coverage import PRESENT_CORRELATION
from featdiff.metrics.crosscoder import MAS_THRESHOLD
from featdiff.metrics.recombination import (
    ABSORBED_MIN_TOKENS,
    ABSORBED_THRESHOLD,
    FIT_THRESHOLD,
    MAX_COMPONENTS,
    MIN_COEFFICIENT,
    MIN_COMPONENTS,
    N_CANDIDATES,
    OWN_FEATURE_RATE,
    RECOMBINATION_MARGIN,
)
from featdiff.metrics.reuse import FREQ_EPS, REUSE_THRESHOLD
from featdiff.metrics.uncertainty import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    INTERVAL_LEVEL,
    N_BOOTSTRAP,
    N_TOKEN_CHUNKS,
)

# scoring: a live feature is scored when it carries at least this share of the mean decoded energy
MIN_CONTRIBUTION = 0.01
# a live latent that fires (nearly) only where a reused latent fires, and with it rebuilds that latent's
# reference feature, is a child of it (status split; featdiff.comparison.statuses.add_children)
CHILD_COFIRING = 0.9
# ... and there at least this many times as often as it fires overall (a dense latent is no one's parent)
CHILD_LIFT = 2.0
# the crosscoder route: NRN bounds of a shared feature; the share of a feature's norms the reference and
# the target must hold (three or more checkpoints) for it to count as theirs
NRN_SHARED = (0.3, 0.7)
PAIR_SHARE = 0.5

# diagnose: a noise-floor correction larger than this factor (q < 1 / 3) is mostly SAE noise
MAX_CORRECTION = 3.0
# diagnose: fewer evaluation tokens per live feature than this make live/dead calls unreliable
MIN_TOKENS_PER_FEATURE = 10.0
# diagnose: a dictionary trained for fewer steps than this is too short to judge its loss
MIN_STEPS = 20
# narrow reference: missed more often than 1 - q + this, at a binomial p below MISSED_P_VALUE, with a median
# share of at least MIN_UNEXPLAINED of the missed latents' energy left unreconstructed by the reference
MAX_MISSED_EXCESS = 0.1
MISSED_P_VALUE = 0.05
MIN_UNEXPLAINED = 0.1
# the independent-SAE route warns, naming method="finetune", where its reference replicas share fewer than
# this of their scored latents (docs/metrics.md, "Which route to trust when")
MIN_SEED_FLOOR = 0.3

# diagnose: a target's SAE explaining this much less of its activations' variance than the reference's own,
# or recovering this much less of the LM loss, is much worse (featdiff.comparison.quality; docs/diagnostics.md)
MAX_FVE_DROP = 0.1
MAX_CE_RECOVERED_DROP = 0.1
# the SAE-quality LM splice runs on at most this many held-out tokens (the first held-out sequences)
LM_EVAL_TOKENS = 1 << 16

# widen when a reference SAE twice as wide leaves this share less of the variance unexplained (the
# reductions measured on planted data, the lab and SmolLM2: docs/metrics.md, "Widening")
WIDEN_REDUCTION = 0.2
# ... and only when the reference uses (nearly) all its latents: one with many dead latents has room to
# spare (docs/metrics.md, "Widening")
WIDEN_MIN_SCORED = 0.9


@dataclass
class DiagnosticsConfig(Config):
    """When ``diagnose`` warns (featdiff.comparison.diagnostics; docs/diagnostics.md gives each check):
    ``max_dead_fraction`` (unscored latents of a dictionary), ``max_correction`` (the noise-floor
    correction factor 1 / q), ``min_tokens_per_feature`` (evaluation tokens per live feature),
    ``settle_window`` / ``settle_tolerance`` (the loss-settling rule of featdiff.dictionaries.health, the
    crosscoder's too) and ``min_steps`` (shorter runs are not judged), ``max_missed_excess`` /
    ``missed_p_value`` / ``min_unexplained`` (the narrow-reference check), ``present_correlation`` (the
    paired correlation at which a target latent counts as present in the reference's activations, that
    check's count: featdiff.metrics.coverage.reference_misses), ``max_fve_drop`` / ``max_ce_recovered_drop``
    (a target's SAE whose own FVE, or CE loss recovered, is lower than the reference SAE's by more than this
    is much worse, and its "novel" reading means little: featdiff.comparison.quality), ``min_seed_floor``
    (the independent-SAE route's reuse floor below which ``compare_checkpoints`` / ``compare_activations``
    warn and name ``method="finetune"``: featdiff.comparison.finetune.seed_floor_message).

    Examples
    --------
    >>> DiagnosticsConfig().settle_tolerance, DiagnosticsConfig(max_correction=10).max_correction
    (0.02, 10)
    """

    max_dead_fraction: float = MAX_DEAD_FRACTION
    max_correction: float = MAX_CORRECTION
    min_tokens_per_feature: float = MIN_TOKENS_PER_FEATURE
    settle_window: float = SETTLE_WINDOW
    settle_tolerance: float = SETTLE_TOLERANCE
    min_steps: int = MIN_STEPS
    max_missed_excess: float = MAX_MISSED_EXCESS
    missed_p_value: float = MISSED_P_VALUE
    min_unexplained: float = MIN_UNEXPLAINED
    present_correlation: float = PRESENT_CORRELATION
    max_fve_drop: float = MAX_FVE_DROP
    max_ce_recovered_drop: float = MAX_CE_RECOVERED_DROP
    min_seed_floor: float = MIN_SEED_FLOOR

    def __post_init__(self) -> None:
        where = "DiagnosticsConfig"
        for name in ("max_dead_fraction", "max_correction", "min_tokens_per_feature", "settle_tolerance",
                     "max_missed_excess", "min_unexplained", "max_fve_drop", "max_ce_recovered_drop"):  # fmt: skip
            check_number(where, name, getattr(self, name), 0)
        check_number(where, "settle_window", self.settle_window, 0, 1, strict_low=True)
        check_number(where, "missed_p_value", self.missed_p_value, 0, 1)
        check_number(where, "present_correlation", self.present_correlation, -1, 1)
        check_number(where, "min_seed_floor", self.min_seed_floor, 0, 1)
        check_int(where, "min_steps", self.min_steps)


@dataclass
class WidthCheck(Config):
    """The thresholds of the width check (``compare_activations`` / ``compare_checkpoints``, ``widen``
    rounds; docs/design.md, "Thresholds, their defaults and why"; docs/metrics.md, "Widening").

    In each round, every SAE whose scored share (scored latents over its width: ``n_scored / n_features``) is
    at least ``min_scored`` gets a probe ``factor`` times as wide: the reference's, and with ``targets`` each
    target's. Where ``narrow_reference`` is on and the narrow-reference diagnostic
    (``featdiff.comparison.diagnostics.narrow_reference``) fires, the reference is probed whatever its live
    share. Where any probe cuts its own SAE's unexplained variance on that checkpoint's held-out tokens by
    at least ``min_reduction``, or the diagnostic fires, every SAE (reference, targets, replicas) is
    trained again ``factor`` times as wide, the probes serving as their checkpoints' SAEs.

    ``min_scored``: default ``WIDEN_MIN_SCORED`` = 0.9 (an SAE with spare latents is not held back by its
    width). ``min_reduction``: default ``WIDEN_REDUCTION`` = 0.2. ``narrow_reference``: whether the
    diagnostic triggers the probe and the widening (default True). ``factor``: the width multiplier of the
    probes and of each widening (default 2). ``targets``: whether the targets' SAEs are probed too (default
    True): a target with more features than the reference (SFT adds them) outgrows a width that fits the
    reference, and its recombinations then read as its kept features firing together.

    Examples
    --------
    >>> WidthCheck(min_reduction=0.3).to_dict()
    {'min_scored': 0.9, 'min_reduction': 0.3, 'narrow_reference': True, 'factor': 2, 'targets': True}
    >>> WidthCheck.from_dict(WidthCheck().to_dict()) == WidthCheck()
    True
    """

    min_scored: float = WIDEN_MIN_SCORED
    min_reduction: float = WIDEN_REDUCTION
    narrow_reference: bool = True
    factor: int = 2
    targets: bool = True

    def __post_init__(self) -> None:
        where = "WidthCheck"
        check_number(where, "min_scored", self.min_scored, 0, 1)
        check_number(where, "min_reduction", self.min_reduction, 0, 1)
        check_int(where, "factor", self.factor, minimum=2)
        for name in ("narrow_reference", "targets"):
            if not isinstance(getattr(self, name), bool):
                raise FeatdiffError(
                    f"The {name!r} parameter of {where} must be True or False; got {getattr(self, name)!r}."
                )


@dataclass
class CompareConfig(Config):
    """The thresholds and choices of a comparison, whichever method computes it (docs/design.md's defaults).

    SAE route: ``reuse_threshold`` (cosine of a reused match), ``fit_threshold``, ``max_components`` and
    ``min_components`` (recombination by a subset fit), ``recombination_margin`` (how much better
    than its best single reference row a recombination must fit), ``min_coefficient`` (the smallest
    coefficient of a component, of the unit target row), ``n_candidates`` (the reference rows most
    correlated with a target row that the exhaustive fit searches; the crosscoder route's fit too),
    ``absorbed`` / ``absorbed_threshold`` / ``absorbed_min_tokens`` / ``own_feature_rate`` (off by default:
    also list the reference features the target carries by firing kept features together, found from paired
    activations, as rows of status "absorbed" that no fraction counts, with their number in the summary's
    ``n_absorbed``; such a feature fires on at least ``absorbed_min_tokens`` tokens and no own target latent
    is tied to its tokens by ``own_feature_rate``: featdiff.metrics.recombination.absorbed_recombination),
    ``method`` /
    ``on`` (how dictionaries are aligned; ``method="index"`` pairs latent j with latent j, for dictionaries
    fine-tuned from the reference), ``eps`` (firing-frequency smoothing of freq_shift), ``min_contribution``
    (which live features are scored: a feature is live when it fired at least once on the evaluation
    activations, and a live feature is scored when it
    carries at least this fraction of the mean share of the decoded energy of the live features; the others
    get status ``faint``, counted in ``n_faint`` and not scored, as ``dead`` ones, which never fired; 0
    scores every live feature; featdiff.dictionaries.stats.scored_features),
    ``child_cofiring`` / ``child_lift`` (a live latent that fires on at least ``child_cofiring`` of its tokens
    together with a reused latent, at least ``child_lift`` times that latent's overall rate, and with it
    rebuilds that latent's reference feature is a child of it, status ``split``:
    featdiff.comparison.statuses.add_children; ``child_cofiring=0`` switches it off),
    ``correct`` (apply the noise-floor correction; False prints the raw fractions as the corrected ones,
    flagged ``uncorrected``).
    Crosscoder route: ``nrn_shared`` (NRN bounds of a shared feature), ``mas_threshold`` (MAS above which
    a feature is one checkpoint's), ``pair_share`` (with three or more checkpoints, the share of a feature's
    norms the reference and the target must hold for it to count as theirs) and ``p`` (decoder norm).
    Uncertainty: ``estimator`` (how raw fractions are corrected with the replicas' null profile; default
    ``union``: reuse = ``reuse_union`` / ``reuse_union_floor``, recombination = (recombination_raw - reuse
    x recombination_floor) / reuse_floor, every share a summary column; featdiff.metrics.uncertainty and
    docs/metrics.md give each estimator), ``interval_level`` and ``n_bootstrap`` (the ``<col>_lo`` /
    ``<col>_hi`` intervals), ``n_token_chunks`` (the token chunks ``transfer_fve`` is resampled by:
    featdiff.metrics.uncertainty.fve_chunks; the SAE-quality columns' too).
    SAE quality (featdiff.comparison.quality): ``dense_threshold`` (a latent firing on more than this share
    of the held-out tokens is dense; SAEBench's 10 %) and ``lm_eval_tokens`` (the held-out tokens the
    language-model splice runs on, the first held-out sequences up to this many; 0 skips it).
    docs/design.md lists every threshold with its default, its home and why.
    Diagnostics: ``diagnostics`` (a ``DiagnosticsConfig``, or its dict): when the scoring routes warn that
    a reading is weak. Width check: ``width_check`` (a ``WidthCheck``, or its dict): when the ``widen``
    rounds of ``compare_activations`` / ``compare_checkpoints`` train every SAE again wider. Every default
    is a named constant (docs/design.md).

    Examples
    --------
    >>> CompareConfig(reuse_threshold=0.8).to_dict()["reuse_threshold"]
    0.8
    >>> try:
    ...     CompareConfig.from_dict({"reuse_treshold": 0.8})
    ... except ValueError as e:
    ...     print(str(e).split(";")[0])
    Unknown CompareConfig keys ['reuse_treshold']
    >>> CompareConfig.from_dict({"diagnostics": {"max_correction": 10}}).diagnostics.max_correction
    10
    >>> cfg = CompareConfig(width_check=WidthCheck(factor=3))
    >>> CompareConfig.from_dict(cfg.to_dict()) == cfg, cfg.to_dict()["width_check"]["factor"]
    (True, 3)
    """

    reuse_threshold: float = REUSE_THRESHOLD
    fit_threshold: float = FIT_THRESHOLD
    max_components: int = MAX_COMPONENTS
    min_components: int = MIN_COMPONENTS
    recombination_margin: float = RECOMBINATION_MARGIN
    min_coefficient: float = MIN_COEFFICIENT
    n_candidates: int = N_CANDIDATES
    child_cofiring: float = CHILD_COFIRING
    child_lift: float = CHILD_LIFT
    absorbed: bool = False
    absorbed_threshold: float = ABSORBED_THRESHOLD
    absorbed_min_tokens: int = ABSORBED_MIN_TOKENS
    own_feature_rate: float = OWN_FEATURE_RATE
    method: str = "hungarian"
    on: str = "decoder"
    eps: float = FREQ_EPS
    min_contribution: float = MIN_CONTRIBUTION
    correct: bool = True
    nrn_shared: tuple[float, float] = NRN_SHARED
    mas_threshold: float = MAS_THRESHOLD
    pair_share: float = PAIR_SHARE
    p: int = 2
    estimator: str = DEFAULT_ESTIMATOR
    interval_level: float = INTERVAL_LEVEL
    n_bootstrap: int = N_BOOTSTRAP
    n_token_chunks: int = N_TOKEN_CHUNKS
    dense_threshold: float = DENSE_THRESHOLD
    lm_eval_tokens: int = LM_EVAL_TOKENS
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    width_check: WidthCheck = field(default_factory=WidthCheck)

    def __post_init__(self) -> None:
        where = "CompareConfig"
        check_choice("method", self.method, ("hungarian", "max", "index"), where)
        check_choice("on", self.on, ("decoder", "activations"), where)
        check_choice("p", self.p, (1, 2), where)
        check_choice("estimator", self.estimator, ESTIMATORS, where)
        check_number(where, "interval_level", self.interval_level, 0, 1, strict_low=True, strict_high=True)
        check_int(where, "n_bootstrap", self.n_bootstrap, minimum=10)
        for name in ("reuse_threshold", "fit_threshold"):
            check_number(where, name, getattr(self, name), -1, 1)
        check_number(where, "eps", self.eps, 0)
        check_number(where, "child_cofiring", self.child_cofiring, 0, 1)
        check_number(where, "child_lift", self.child_lift, 1)
        check_number(where, "recombination_margin", self.recombination_margin, 0, 1)
        check_number(where, "absorbed_threshold", self.absorbed_threshold, 0, 1, strict_low=True)
        check_number(where, "min_coefficient", self.min_coefficient, 0)
        check_number(where, "own_feature_rate", self.own_feature_rate, 0, 1)
        check_int(where, "absorbed_min_tokens", self.absorbed_min_tokens, minimum=0)
        check_int(where, "n_token_chunks", self.n_token_chunks)
        check_number(where, "dense_threshold", self.dense_threshold, 0, 1)
        check_int(where, "lm_eval_tokens", self.lm_eval_tokens, minimum=0)
        for name in ("mas_threshold", "pair_share"):
            check_number(where, name, getattr(self, name), 0, 1)
        for name in ("max_components", "min_components", "n_candidates"):
            check_int(where, name, getattr(self, name))
        if self.min_components > self.max_components:
            raise FeatdiffError(
                f"CompareConfig needs 1 <= min_components <= max_components; got {self.min_components}, "
                f"{self.max_components}."
            )
        for name, kind in (("diagnostics", DiagnosticsConfig), ("width_check", WidthCheck)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, kind.from_dict(value))
            elif not isinstance(value, kind):
                raise FeatdiffError(
                    f"The {name!r} parameter of {where} must be a {kind.__name__} or its dict; got "
                    f"{type(value).__name__}."
                )
        self.nrn_shared = tuple(self.nrn_shared)  # type: ignore[assignment]
        lo, hi = self.nrn_shared if len(self.nrn_shared) == 2 else (2.0, 0.0)
        if not 0 <= lo <= hi <= 1:
            raise FeatdiffError(
                f"The 'nrn_shared' parameter of {where} must be (low, high) with 0 <= low <= high <= 1; "
                f"got {self.nrn_shared}."
            )
