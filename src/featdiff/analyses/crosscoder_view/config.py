"""The crosscoder view's settings (CrosscoderViewConfig) and the columns of each of its tables."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from featdiff.analyses.evolution import EVOLUTION_THRESHOLD
from featdiff.analyses.generalization import (
    OVERLAP_COLUMNS,
    TASK_COLUMNS,
)
from featdiff.comparison.config import NRN_SHARED
from featdiff.core.config import Config, check_int, check_number
from featdiff.errors import FeatdiffError, check_choice
from featdiff.metrics.crosscoder import MAS_THRESHOLD

EVOLUTION_METHODS = ("decoders", "shared", "none")
ANSWER_FORMATS = ("base", "teacher")
CODES = ("joint", "single")
CONTROLS = ("matched", "live")
META_FILE = "crosscoder_view.json"
FIGURES_DIR = "figures"

MAS_COLUMNS = ["feature", "base", "rl", "sft", "dominant", "category", "dead"]
MAS_CATEGORY_COLUMNS = ["view", "category", "n_features", "fraction"]
NRN_COLUMNS = ["checkpoint", "feature", "nrn", "dead"]
EVOLUTION_COLUMNS = ["run", "step", "checkpoint_index", "overlap_prev", "overlap_final", "noise_floor"]
GENERALIZATION_FEATURE_COLUMNS = ["feature", "min_score", "mean_score"]
GENERALIZATION_OVERLAP_COLUMNS = OVERLAP_COLUMNS
# the generalization module's task table with the two checkpoints' accuracies after the task's name
GENERALIZATION_TASK_COLUMNS = [TASK_COLUMNS[0], "group", "base_accuracy", "rl_accuracy", *TASK_COLUMNS[1:]]
INTERVENTION_COLUMNS = [
    "edit",
    "model",
    "mode",
    "alpha",
    "n_features",
    "condition",
    "subset",
    "task",
    "group",
    "n_selection",
    "accuracy",
    "n",
    "n_controls",
    "p_min",
    "p_value",
    "p_holm",
    "n_tests",
    "few_samples",
]
CROSSCODER_EVAL_COLUMNS = ["checkpoint", "fve", "mse", "l0", "dead_fraction"]
TABLE_COLUMNS = {
    "mas": MAS_COLUMNS,
    "mas_categories": MAS_CATEGORY_COLUMNS,
    "nrn": NRN_COLUMNS,
    "evolution": EVOLUTION_COLUMNS,
    "generalization_features": GENERALIZATION_FEATURE_COLUMNS,
    "generalization_overlaps": GENERALIZATION_OVERLAP_COLUMNS,
    "generalization_tasks": GENERALIZATION_TASK_COLUMNS,
    "interventions": INTERVENTION_COLUMNS,
    "crosscoder_eval": CROSSCODER_EVAL_COLUMNS,
}
FIGURE_NAMES = ("mas", "nrn", "evolution", "interventions")


# ------------------------------------------------------------------------------------------- config


@dataclass
class CrosscoderViewConfig(Config):
    """Settings of ``crosscoder_view`` (defaults sized for the default lab on two CPU cores).

    Crosscoder: ``d_sae``, ``k`` (BatchTopK), ``n_steps``, ``batch_size``, ``lr``; ``hook`` (None: the
    middle layer's residual stream); ``mas_threshold`` (a feature is m-specific when MAS^m exceeds it);
    ``nrn_shared`` (NRN bounds of "shared" in the pairwise views).

    Evolution: ``evolution`` is ``"decoders"`` (one small (base, checkpoint) crosscoder per intermediate
    checkpoint, directions matched: the faithful definition of ``featdiff.analyses.evolution``),
    ``"shared"`` (the
    3-model crosscoder scores every checkpoint: cheap, biased toward "settled") or ``"none"``;
    ``evolution_d_sae``, ``evolution_k``, ``evolution_n_steps`` size the per-checkpoint crosscoders (400
    steps: on the default lab their loss settles; at 200 it still fell by 2.1-2.8 % and each warned);
    ``evolution_top_k`` features per set, matched at cosine >= ``evolution_threshold``.

    Generalization: ``generalization_tasks`` (None: the tasks of ``generalization_groups`` on which rl's
    accuracy beats the base's); ``answer_format``: the answer teacher-forced after the prompt when codes
    are read (``"base"``: the true answer as base and rl write it; ``"teacher"``: reversed answer, SEP,
    answer, as SFT writes it); ``fraction`` of the largest score a feature must reach; ``codes``:
    ``"joint"`` (exact crosscoder codes) or ``"single"``; ``heldout_fraction``: the share of each
    generalization task's critical samples held out of the selection (a seeded split by sample) to score
    the interventions on; ``min_critical``: fewer held-out (or selection) critical samples than this on a
    task gives a warning, a note and ``few_samples`` in the intervention table.

    Interventions: ``alpha`` (amplification in base), ``n_random`` random control sets of the edit's size
    drawn from the live features outside it (``control="matched"``: each edited feature gets a partner
    among the ``match_width`` features nearest to it in firing frequency, so that a control removes as
    much activity; ``"live"``: any live feature); the edit's empirical p-value is (1 + #controls at least
    as effective) / (1 + n_random), so 20 controls can give p >= 1/21 = 0.048 (``p_min``); ``p_holm``
    adjusts the p-values for the number of tests ``n_tests`` (Holm, one family per subset over both edits
    and every task), so it cannot fall below ``n_tests * p_min``. Evaluated on at most
    ``n_critical`` held-out critical samples per task (base wrong, rl right; a seeded draw), with
    ``n_random`` controls, and on ``n_full`` samples per task (the first of the lab's eval split that did
    not select the features), with the first ``n_random_full`` of those controls: the full subset shows
    side effects, the critical one tests the features, and each control costs as much as the edit (about
    0.5 s per 64 samples on the default lab), hence fewer on the larger full subset. ``in_domain`` adds
    the in-domain task (whose critical samples took no part in the selection).

    ``num_threads``: torch threads while the view runs (restored afterwards; 1 is fastest for the lab's
    tiny models on a shared CPU); None keeps torch's setting.

    Examples
    --------
    >>> c = CrosscoderViewConfig.small()
    >>> CrosscoderViewConfig.from_dict(c.to_dict()) == c
    True
    >>> try:
    ...     CrosscoderViewConfig.from_dict({"d_sea": 8})
    ... except FeatdiffError as e:
    ...     print(str(e)[:48])
    Unknown CrosscoderViewConfig keys ['d_sea']; all
    """

    d_sae: int = 256
    k: int = 8
    n_steps: int = 600
    batch_size: int = 256
    lr: float = 3e-3
    hook: str | None = None
    mas_threshold: float = MAS_THRESHOLD
    nrn_shared: tuple[float, float] = NRN_SHARED
    evolution: str = "decoders"
    evolution_d_sae: int = 128
    evolution_k: int = 8
    evolution_n_steps: int = 400
    evolution_top_k: int = 20
    evolution_threshold: float = EVOLUTION_THRESHOLD
    generalization_tasks: tuple[str, ...] | None = None
    generalization_groups: tuple[str, ...] = ("near_domain",)
    answer_format: str = "base"
    fraction: float = 0.2
    codes: str = "joint"
    heldout_fraction: float = 0.5
    min_critical: int = 10
    alpha: float = 3.0
    n_random: int = 20
    n_random_full: int = 2
    control: str = "matched"
    match_width: int = 10
    n_full: int = 64
    n_critical: int = 64
    in_domain: bool = True
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        where = "CrosscoderViewConfig"
        for name in (
            "d_sae",
            "k",
            "n_steps",
            "batch_size",
            "evolution_d_sae",
            "evolution_k",
            "evolution_n_steps",
            "evolution_top_k",
            "n_full",
            "n_critical",
            "min_critical",
            "match_width",
        ):
            check_int(where, name, getattr(self, name))
        for name in ("n_random", "n_random_full"):
            check_int(where, name, getattr(self, name), minimum=0)
        check_int(where, "num_threads", self.num_threads, optional=True)
        if self.k > self.d_sae or self.evolution_k > self.evolution_d_sae:
            raise FeatdiffError(f"{where} needs k <= d_sae and evolution_k <= evolution_d_sae.")
        check_choice("evolution", self.evolution, EVOLUTION_METHODS, where)
        check_choice("answer_format", self.answer_format, ANSWER_FORMATS, where)
        check_choice("codes", self.codes, CODES, where)
        check_choice("control", self.control, CONTROLS, where)
        for name in ("mas_threshold", "fraction"):
            check_number(where, name, getattr(self, name), 0, 1)
        check_number(where, "heldout_fraction", self.heldout_fraction, 0, 1, strict_high=True)
        check_number(where, "evolution_threshold", self.evolution_threshold, 0, 1, strict_low=True)
        self.nrn_shared = tuple(float(x) for x in self.nrn_shared)  # type: ignore[assignment]
        lo, hi = self.nrn_shared if len(self.nrn_shared) == 2 else (2.0, 0.0)
        if not 0 <= lo <= hi <= 1:
            raise FeatdiffError(
                f"The 'nrn_shared' field of {where} must be (low, high) with 0 <= low <= high <= 1; got {self.nrn_shared}."
            )
        check_number(where, "lr", self.lr, 0, strict_low=True)
        if isinstance(self.generalization_tasks, str):
            self.generalization_tasks = (self.generalization_tasks,)
        if self.generalization_tasks is not None:
            self.generalization_tasks = tuple(self.generalization_tasks)
        if isinstance(self.generalization_groups, str):
            self.generalization_groups = (self.generalization_groups,)
        self.generalization_groups = tuple(self.generalization_groups)
        for g in self.generalization_groups:
            check_choice("generalization_groups", g, ("in_domain", "near_domain", "out_of_domain"), where)

    @classmethod
    def small(cls) -> CrosscoderViewConfig:
        """A tiny, fast configuration for tests (seconds on ``LabConfig.small()``)."""
        return cls(
            d_sae=32,
            k=4,
            n_steps=60,
            batch_size=128,
            evolution_d_sae=16,
            evolution_k=2,
            evolution_n_steps=20,
            evolution_top_k=4,
            n_random=3,
            n_random_full=1,
            n_full=16,
            n_critical=16,
            min_critical=2,
        )


def empty_table(columns: list[str], dtypes: dict | None = None) -> pd.DataFrame:
    dtypes = dtypes or {}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in columns})
