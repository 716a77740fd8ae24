"""The crosscoder view of a lab: Shi et al. (ACL 2026)'s feature-level analysis of base, RL and SFT.

``crosscoder_view(lab_path)`` runs the whole analysis on a lab built by ``featdiff.lab.build`` and returns
a ``CrosscoderView`` (tables, figures, meta):

1. paired activations of base / rl / sft at the middle layer on the lab's stored prompts (padding and BOS
   dropped), and one 3-model BatchTopK crosscoder trained on them (``compare_crosscoder`` scores it);
2. model attribution scores (MAS) per feature and their categories, NRN of rl and sft vs base;
3. feature evolution over the intermediate checkpoints of each run (``featdiff.analyses.evolution``);
4. generalization features: features whose activation rises from base to rl on the samples the base gets
   wrong and rl right, on every task outside RL's training task where RL beats the base (by default the
   near-domain tasks), ``featdiff.analyses.generalization``;
5. the intervention table: those features ablated in rl and amplified in base, against equal-size random
   feature sets of matched firing frequency (an empirical p-value), on held-out critical samples (the
   features are selected on the other part of each task's critical samples) and on a full sample of each
   task (the selection samples left out), on the generalization tasks and on the in-domain task
   (``featdiff.analyses.interventions``).

Every step is seeded; the same lab, config and seed give the same numbers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from featdiff._version import __version__
from featdiff.activations.activations import ActivationSet, collect_activations
from featdiff.analyses.evolution import (
    CheckpointCrosscoder,
    direction_overlap,
    feature_evolution,
    plot_feature_evolution,
    top_specific_features,
)
from featdiff.analyses.generalization import (
    OVERLAP_COLUMNS,
    TASK_COLUMNS,
    generalization_features,
    sample_codes,
)
from featdiff.analyses.interventions import FeatureEdit, add_holm, evaluate_intervention
from featdiff.comparison.scoring import compare_crosscoder
from featdiff.comparison.table import CompareConfig
from featdiff.core.config import Config, check_int, check_number
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import progress_bar
from featdiff.core.threads import torch_threads
from featdiff.dictionaries.crosscoder.model import stack
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.errors import FeatdiffError, check_choice
from featdiff.lab.config import LabConfig
from featdiff.lab.store import accuracy, checkpoints, load
from featdiff.lab.suite import task_groups, tasks
from featdiff.lab.task import PAD
from featdiff.metrics.crosscoder import firing_frequency, mas, nrn
from featdiff.models.models import default_hook, load_model, load_prompts
from featdiff.report.figures import plot_interventions, plot_mas, plot_nrn

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
    checkpoint, directions matched: the faithful definition of ``featdiff.analyses.evolution``), ``"shared"`` (the
    3-model crosscoder scores every checkpoint: cheap, biased toward "settled") or ``"none"``;
    ``evolution_d_sae``, ``evolution_k``, ``evolution_n_steps`` size the per-checkpoint crosscoders;
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
    mas_threshold: float = 0.5
    nrn_shared: tuple[float, float] = (0.3, 0.7)
    evolution: str = "decoders"
    evolution_d_sae: int = 128
    evolution_k: int = 8
    evolution_n_steps: int = 200
    evolution_top_k: int = 20
    evolution_threshold: float = 0.7
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


# -------------------------------------------------------------------------------------------- view


@dataclass
class CrosscoderView:
    """What ``crosscoder_view`` found: the Comparison, tidy tables, matplotlib figures and meta.

    ``tables`` (stable keys; every table is a tidy DataFrame with the columns below, key columns first):

    - ``"mas"``: one row per crosscoder feature: feature, base, rl, sft (MAS per checkpoint, rows sum to
      1), dominant, category (base | rl | sft | shared | dead), dead (bool, never fired on the tokens).
    - ``"mas_categories"``: view (``"base+rl+sft"``: MAS categories; ``"rl vs base"``, ``"sft vs base"``:
      NRN categories base / shared / the checkpoint), category, n_features, fraction (of live features;
      sums to 1 per view).
    - ``"nrn"``: checkpoint (rl | sft), feature, nrn (n^T / (n^base + n^T), in [0, 1]; NaN if dead), dead.
    - ``"evolution"``: run (rl | sft), step (training step), checkpoint_index (1..n), overlap_prev,
      overlap_final (see ``featdiff.analyses.evolution``), noise_floor (overlap of the final checkpoint's set with
      that of a crosscoder trained with another seed on the same activations; NaN for
      ``evolution="shared"``). The per-checkpoint crosscoders share one seed, hence one initialisation, so
      overlaps between checkpoints are partly inherited from it; the noise floor says how reproducible a
      top-k set is at all. Empty when ``evolution="none"``.
    - ``"generalization_features"``: feature, min_score, mean_score (best first).
    - ``"generalization_overlaps"``: task_a, task_b, n_a, n_b, n_shared, jaccard (last row: ``all``).
    - ``"generalization_tasks"``: task, group, base_accuracy, rl_accuracy, n_samples, n_critical,
      n_selection, n_heldout (critical samples that selected the features / held out), max_score,
      n_selected, votes.
    - ``"interventions"``: edit (``ablate_in_rl`` | ``amplify_in_base``), model, mode, alpha, n_features
      (the number of selected features edited), condition (none | edit | random: the mean of the
      controls), subset (critical: held-out critical samples | full), task, group, n_selection (critical
      samples of the task that selected the features; never among the scored ones), accuracy (in [0, 1]),
      n (scored samples), n_controls, p_min (1 / (1 + n_controls): the smallest p the controls allow),
      p_value (on the edit rows: empirical, one-sided in the expected direction: lower accuracy for
      ablate, higher for amplify), p_holm (Holm-adjusted over the subset's tests), n_tests (that family's
      size), few_samples (n < ``min_critical`` on a critical subset).
    - ``"crosscoder_eval"``: checkpoint, fve, mse, l0, dead_fraction.

    ``figures``: ``"mas"`` (ternary plot of the features' MAS and stacked bars of the categories per
    checkpoint), ``"nrn"`` (NRN histograms of rl and sft vs base), ``"evolution"`` (overlap with the
    previous and the final checkpoint), ``"interventions"`` (accuracy per condition). A figure is absent
    when its table is empty.

    ``meta``: hook, token count, seed, config, lab key, timings (seconds per stage), the generalization
    tasks used, ``intervention_samples`` (per task, the eval-split indices of the critical samples that
    selected the features and of the held-out critical and full samples that scored the edits; the first
    never meets the other two) and ``notes`` (why a table is empty, e.g. no critical samples; one sentence
    per edit and task with the held-out effect, n and p).

    ``to_dir(path)`` writes ``<key>.csv`` per table, ``figures/<key>.png`` per figure and
    ``crosscoder_view.json`` (meta).
    """

    comparison: Any = field(repr=False)
    tables: dict[str, pd.DataFrame] = field(repr=False)
    figures: dict[str, Any] = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    crosscoder: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        t = self.tables.get("mas_categories")
        lines = [f"CrosscoderView(hook={self.meta.get('hook')!r}, n_tokens={self.meta.get('n_tokens')})"]
        if t is not None and len(t):
            lines.append(t.round(3).to_string(index=False))
        lines.append(f"generalization features: {self.meta.get('n_generalization_features')}")
        for note in self.meta.get("notes", []):
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def to_dir(self, path: str | os.PathLike, atomic: bool = True, dpi: int = 110) -> Path:
        """Write the tables (``<key>.csv``), figures (``figures/<key>.png``) and ``crosscoder_view.json``.

        ``atomic=True`` (default) builds the folder beside ``path`` and renames it into place (replacing
        an existing ``path``); ``atomic=False`` writes into ``path`` (created if needed, other files left
        alone), each file through a temporary name, for a caller that assembles a larger report folder.
        """

        def write(root: Path) -> None:
            for name, table in self.tables.items():
                tmp = root / f".{name}.csv.tmp"
                table.to_csv(tmp, index=False)
                tmp.replace(root / f"{name}.csv")
            if self.figures:
                (root / FIGURES_DIR).mkdir(exist_ok=True)
            for name, fig in self.figures.items():
                target = root / FIGURES_DIR / f"{name}.png"
                tmp = target.with_name(f".{name}.tmp.png")
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
                tmp.replace(target)
            write_json(root / META_FILE, {**self.meta, "featdiff_version": __version__})

        path = Path(path)
        if atomic:
            with atomic_dir(path) as tmp:
                write(tmp)
        else:
            path.mkdir(parents=True, exist_ok=True)
            write(path)
        return path


# ------------------------------------------------------------------------------------------ helpers


class _Stages:
    """A tqdm bar over the view's stages that also records how long each took."""
    def __init__(self, names: list[str], progress: bool):
        self.bar = progress_bar(total=len(names), desc="crosscoder view", disable=not progress)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        t = time.perf_counter()
        yield
        self.timings[f"{name}_s"] = round(time.perf_counter() - t, 3)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _lab_config(model: Any):
    meta = getattr(model, "featdiff_meta", None) or {}
    if "lab" not in meta:
        raise FeatdiffError("The lab's checkpoints carry no lab config in featdiff_meta; rebuild the lab.")
    return LabConfig.from_dict(meta["lab"])


def _empty(columns: list[str], dtypes: dict | None = None) -> pd.DataFrame:
    dtypes = dtypes or {}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in columns})


# ----------------------------------------------------------------------------------- MAS and NRN


def _mas_tables(
    cc: Any, acts: Any, cfg: CrosscoderViewConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:

    m = mas(cc, cfg.mas_threshold, acts=acts).reset_index()
    m = m[MAS_COLUMNS].astype({"feature": "int64", "dead": bool})
    live = ~m["dead"].to_numpy()
    n_live = int(live.sum())
    cat_rows = []
    for c in ("base", "rl", "sft", "shared"):
        n = int((m.loc[live, "category"] == c).sum())
        cat_rows.append(("base+rl+sft", c, n, n / n_live if n_live else math.nan))
    nrn_rows = []
    lo, hi = cfg.nrn_shared
    for name in ("rl", "sft"):
        r = nrn(cc, name, "base").to_numpy(dtype=float)
        dead = m["dead"].to_numpy()
        nrn_rows.append(
            pd.DataFrame(
                {
                    "checkpoint": name,
                    "feature": np.arange(cc.d_sae, dtype=np.int64),
                    "nrn": np.where(dead, np.nan, r),
                    "dead": dead,
                }
            )
        )
        rl_ = r[live]
        for c, sel in (("base", rl_ < lo), ("shared", (rl_ >= lo) & (rl_ <= hi)), (name, rl_ > hi)):
            n = int(sel.sum())
            cat_rows.append((f"{name} vs base", c, n, n / n_live if n_live else math.nan))
    cats = pd.DataFrame(cat_rows, columns=MAS_CATEGORY_COLUMNS).astype(
        {"n_features": "int64", "fraction": "float64"}
    )
    return m, cats, pd.concat(nrn_rows, ignore_index=True)[NRN_COLUMNS]


def _evolution(
    lab_path: Path,
    base: Any,
    cc: Any,
    acts: Any,
    tokens: torch.Tensor,
    hook: str,
    pad: int,
    cfg: CrosscoderViewConfig,
    seed: int,
) -> pd.DataFrame:

    series: dict[str, dict[int, Any]] = {}
    index: dict[tuple[str, int], int] = {}
    noise: dict[str, float] = {}
    for run in ("rl", "sft"):
        paths = checkpoints(lab_path, run)
        models = {f"step_{i}": load_model(p) for i, p in enumerate(paths, start=1)}
        steps = {
            key: int((m.featdiff_meta or {}).get("step", i)) for i, (key, m) in enumerate(models.items(), 1)
        }
        for i, s in enumerate(steps.values(), start=1):
            index[(run, s)] = i
        ck = collect_activations(
            {"base": base, **models}, tokens, hook, pad_token_id=pad, outlier_factor=None, progress=False
        )
        series[run] = {}
        if cfg.evolution == "decoders":
            for key, s in steps.items():
                pair = ActivationSet.from_tensors({"base": ck["base"], run: ck[key]}, hook=hook)
                small = train_crosscoder(
                    pair,
                    d_sae=cfg.evolution_d_sae,
                    k=cfg.evolution_k,
                    seed=seed,
                    n_steps=cfg.evolution_n_steps,
                    batch_size=cfg.batch_size,
                    progress=False,
                )
                codes = small.encode_acts(pair)
                live = torch.nonzero((codes != 0).any(0)).flatten().tolist()
                series[run][s] = CheckpointCrosscoder(small, live)
            noise[run] = _noise_floor(pair, series[run][max(series[run])], run, cfg, seed)
        else:  # "shared": the 3-model crosscoder scores each checkpoint in the run's slot
            a0 = ck["base"]
            with torch.no_grad():
                f0 = cc.encode(stack({n: a0 for n in cc.names}, cc.names))
                for key, s in steps.items():
                    x = {n: (ck[key] if n == run else a0) for n in cc.names}
                    series[run][s] = (cc.encode(stack(x, cc.names)) - f0).mean(0)
    table = feature_evolution(series, k=cfg.evolution_top_k, threshold=cfg.evolution_threshold)
    table.insert(2, "checkpoint_index", [index[(r, s)] for r, s in zip(table.run, table.step, strict=True)])
    table["noise_floor"] = [noise.get(r, math.nan) for r in table.run]
    return table.astype({"checkpoint_index": "int64"})[EVOLUTION_COLUMNS]


def _noise_floor(pair: Any, final: Any, run: str, cfg: CrosscoderViewConfig, seed: int) -> float:
    """Overlap of the final checkpoint's top-k set with that of a crosscoder trained with another seed on
    the same activations: the overlap that says "same features" for this dictionary size and training."""

    other = train_crosscoder(
        pair,
        d_sae=cfg.evolution_d_sae,
        k=cfg.evolution_k,
        seed=seed + 1,
        n_steps=cfg.evolution_n_steps,
        batch_size=cfg.batch_size,
        progress=False,
    )
    live = torch.nonzero((other.encode_acts(pair) != 0).any(0)).flatten().tolist()
    a = final.crosscoder.decoder(run)[
        top_specific_features(final.crosscoder, cfg.evolution_top_k, live=final.live_features)
    ]
    b = other.decoder(run)[top_specific_features(other, cfg.evolution_top_k, live=live)]
    return direction_overlap(a, b, cfg.evolution_threshold)


# ------------------------------------------------------------------------------------ generalization


def _critical(correctness: pd.DataFrame, task: str) -> list[int]:
    w = correctness[correctness.task == task].pivot_table(
        index="sample", columns="checkpoint", values="correct", aggfunc="first"
    )
    return sorted(int(s) for s in w.index[(~w["base"].astype(bool)) & w["rl"].astype(bool)])


def crosscoder_view(
    lab_path: str | os.PathLike,
    config: CrosscoderViewConfig | None = None,
    progress: bool = True,
    seed: int = 0,
) -> CrosscoderView:
    """Shi et al. (2026)'s crosscoder analysis of a lab's base, rl and sft checkpoints (module docstring).

    ``lab_path``: a folder from ``featdiff.lab.build``. ``config``: a ``CrosscoderViewConfig`` (default:
    sized for the default lab, about 30-45 s on two CPU cores). See ``CrosscoderView`` for the keys of
    ``tables`` and ``figures`` (the stable interface) and ``meta["notes"]`` for why a table is empty.

    Examples
    --------
    >>> import tempfile, featdiff as fd                                                  # doctest: +SKIP
    >>> path = fd.lab.build(fd.lab.LabConfig.small(), cache_dir=tempfile.mkdtemp())       # doctest: +SKIP
    >>> view = crosscoder_view(path, CrosscoderViewConfig.small(), progress=False)       # doctest: +SKIP
    >>> view.tables["mas_categories"]                                                    # doctest: +SKIP
    >>> view.to_dir("crosscoder_view")                                                   # doctest: +SKIP
    """
    cfg = CrosscoderViewConfig() if config is None else config
    if not isinstance(cfg, CrosscoderViewConfig):
        raise FeatdiffError(
            f"The 'config' parameter of crosscoder_view must be a CrosscoderViewConfig; got {type(cfg).__name__}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FeatdiffError(f"The 'seed' parameter of crosscoder_view must be an int; got {seed!r}.")
    stages = [
        "load",
        "activations",
        "crosscoder",
        "compare",
        "evolution",
        "generalization",
        "interventions",
        "figures",
    ]
    bar = _Stages(stages, progress)
    t_start = time.perf_counter()
    try:
        with torch_threads(cfg.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            view = _run(Path(lab_path), cfg, seed, bar, progress)
    finally:
        bar.close()
    view.meta["timings"] = {**bar.timings, "total_s": round(time.perf_counter() - t_start, 3)}
    return view


def _run(
    lab_path: Path, cfg: CrosscoderViewConfig, seed: int, bar: _Stages, progress: bool
) -> CrosscoderView:

    notes: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    with bar.stage("load"):
        base, rl, sft = load(lab_path)
        models = {"base": base, "rl": rl, "sft": sft}
        lab_cfg = _lab_config(base)
        meta0 = base.featdiff_meta or {}
        pad = int(meta0.get("pad_token_id", PAD))
        tokens = load_prompts(base)
        if tokens is None:
            raise FeatdiffError(
                f"The lab's base checkpoint at {lab_path} carries no prompts; rebuild the lab."
            )
        hook = cfg.hook or default_hook(base)
        correctness = accuracy(lab_path, "samples")
        acc = accuracy(lab_path, "final").set_index("checkpoint")
        groups = task_groups(lab_cfg)

    with bar.stage("activations"):
        acts = collect_activations(models, tokens, hook, pad_token_id=pad, progress=False)

    with bar.stage("crosscoder"):
        cc = train_crosscoder(
            acts,
            d_sae=cfg.d_sae,
            sparsity="batchtopk",
            k=cfg.k,
            seed=seed,
            n_steps=cfg.n_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            progress=progress,
        )
        tables["crosscoder_eval"] = cc.evaluate(acts)[CROSSCODER_EVAL_COLUMNS]

    with bar.stage("compare"):
        comparison = compare_crosscoder(
            cc,
            acts,
            reference="base",
            config=CompareConfig(nrn_shared=cfg.nrn_shared, mas_threshold=cfg.mas_threshold),
            progress=False,
        )
        tables["mas"], tables["mas_categories"], tables["nrn"] = _mas_tables(cc, acts, cfg)
        live = tables["mas"].loc[~tables["mas"]["dead"], "feature"].astype(int).tolist()
        frequency = firing_frequency(cc, acts).to_numpy()

    with bar.stage("evolution"):
        if cfg.evolution == "none":
            tables["evolution"] = _empty(EVOLUTION_COLUMNS)
            notes.append("evolution: skipped (evolution='none').")
        else:
            tables["evolution"] = _evolution(lab_path, base, cc, acts, tokens, hook, pad, cfg, seed)

    with bar.stage("generalization"):
        eval_sets = tasks(lab_cfg, split="eval")
        if cfg.generalization_tasks is not None:
            unknown = [t for t in cfg.generalization_tasks if t not in eval_sets]
            if unknown:
                raise FeatdiffError(
                    f"generalization_tasks {unknown} are not tasks of this lab; it has {list(eval_sets)}."
                )
            gen_tasks = list(cfg.generalization_tasks)
        else:
            candidates = [t for t, g in groups.items() if g in cfg.generalization_groups]
            gen_tasks = [t for t in candidates if acc.loc["rl", t] > acc.loc["base", t]]
            left = [t for t in candidates if t not in gen_tasks]
            if left:
                notes.append(f"generalization: rl does not beat the base on {left}; they do not vote.")
        codes_ref, codes_tuned = {}, {}
        for t in gen_tasks:
            ts = eval_sets[t]
            answers = ts.task.teacher_answer(ts.answers) if cfg.answer_format == "teacher" else ts.answers
            for store, name in ((codes_ref, "base"), (codes_tuned, "rl")):
                others = {n: m for n, m in models.items() if n != name}
                store[t] = sample_codes(
                    cc, models[name], ts.prompts, answers, model_name=name, others=others, codes=cfg.codes
                )
        res = None
        if gen_tasks:
            res = generalization_features(
                codes_ref,
                codes_tuned,
                correctness[correctness.checkpoint.isin(["base", "rl"])],
                "base",
                "rl",
                fraction=cfg.fraction,
                tasks=gen_tasks,
                heldout_fraction=cfg.heldout_fraction,
                seed=seed,
                min_critical=cfg.min_critical,
            )
            tables["generalization_features"] = res.features[GENERALIZATION_FEATURE_COLUMNS]
            tables["generalization_overlaps"] = res.overlaps[GENERALIZATION_OVERLAP_COLUMNS]
            gt = res.tasks.copy()
            gt.insert(1, "group", [groups[t] for t in gt.task])
            gt.insert(2, "base_accuracy", [float(acc.loc["base", t]) for t in gt.task])
            gt.insert(3, "rl_accuracy", [float(acc.loc["rl", t]) for t in gt.task])
            tables["generalization_tasks"] = gt[GENERALIZATION_TASK_COLUMNS]
            no_crit = res.tasks.loc[res.tasks.n_critical == 0, "task"].tolist()
            if no_crit:
                notes.append(f"generalization: no critical samples (base wrong, rl right) on {no_crit}.")
            if not res.feature_ids:
                notes.append(
                    "generalization: the tasks' selections do not intersect; no generalization features."
                )
        else:
            notes.append("generalization: no task outside RL's training task where rl beats the base.")
            tables["generalization_features"] = _empty(
                GENERALIZATION_FEATURE_COLUMNS,
                {"feature": "int64", "min_score": "float64", "mean_score": "float64"},
            )
            tables["generalization_overlaps"] = _empty(GENERALIZATION_OVERLAP_COLUMNS)
            tables["generalization_tasks"] = _empty(GENERALIZATION_TASK_COLUMNS)
        features = res.feature_ids if res is not None else []

    with bar.stage("interventions"):
        samples: dict[str, dict[str, list[int]]] = {}
        tables["interventions"] = _interventions(
            cc,
            models,
            eval_sets,
            correctness,
            gen_tasks,
            lab_cfg.tasks.in_domain,
            groups,
            res,
            features,
            live,
            frequency,
            cfg,
            seed,
            notes,
            samples,
        )

    with bar.stage("figures"):
        figures: dict[str, Any] = {
            "mas": plot_mas(tables["mas"], tables["mas_categories"]),
            "nrn": plot_nrn(tables["nrn"]),
        }
        if len(tables["evolution"]):
            figures["evolution"] = plot_feature_evolution(tables["evolution"])
        if len(tables["interventions"]):
            figures["interventions"] = plot_interventions(tables["interventions"])


    meta = {
        "lab_path": str(lab_path),
        "lab_key": meta0.get("lab_key"),
        "hook": hook,
        "n_tokens": acts.n_tokens,
        "n_sequences": int(tokens.shape[0]),
        "seed": seed,
        "config": cfg.to_dict(),
        "evolution_method": cfg.evolution,
        "generalization_tasks": gen_tasks,
        "generalization_feature_ids": features,
        "n_generalization_features": len(features),
        "n_live_features": len(live),
        "generalization_feature_frequency": [float(frequency[k]) for k in features],
        "intervention_samples": samples,
        "notes": notes,
        "featdiff_version": __version__,
    }
    return CrosscoderView(comparison=comparison, tables=tables, figures=figures, meta=meta, crosscoder=cc)


def _interventions(
    cc: Any,
    models: dict[str, Any],
    eval_sets: dict[str, Any],
    correctness: pd.DataFrame,
    gen_tasks: list[str],
    in_domain: str,
    groups: dict[str, str],
    res: Any,
    features: list[int],
    live: list[int],
    frequency: np.ndarray,
    cfg: CrosscoderViewConfig,
    seed: int,
    notes: list[str],
    record: dict | None = None,
) -> pd.DataFrame:

    dtypes = {
        "alpha": "float64",
        "n_features": "int64",
        "n_selection": "int64",
        "accuracy": "float64",
        "n": "int64",
        "n_controls": "int64",
        "p_min": "float64",
        "p_value": "float64",
        "p_holm": "float64",
        "n_tests": "int64",
        "few_samples": bool,
    }
    if not features:
        notes.append("interventions: skipped, there are no generalization features to edit.")
        return _empty(INTERVENTION_COLUMNS, dtypes)
    task_names = list(dict.fromkeys([*gen_tasks, *([in_domain] if cfg.in_domain else [])]))
    full, crit, n_sel = {}, {}, {}
    g = torch.Generator().manual_seed(seed)
    for t in task_names:
        ts = eval_sets[t]
        # samples that selected the features are never scored: held-out critical samples, and a full
        # sample of the task without them (a task that did not vote keeps all its critical samples)
        voted = res is not None and t in set(res.critical.task)
        chosen = set(res.selection_samples(t)) if voted else set()
        n_sel[t] = len(chosen)
        rest = [i for i in range(len(ts.prompts)) if i not in chosen][: cfg.n_full]
        full[t] = (ts.prompts[rest], ts.answers[rest])
        c = res.heldout(t) if voted else _critical(correctness, t)
        if len(c) > cfg.n_critical:
            c = sorted(c[i] for i in torch.randperm(len(c), generator=g)[: cfg.n_critical].tolist())
        if record is not None:
            record[t] = {"selection": sorted(chosen), "critical": list(c), "full": rest}
        if c:
            crit[t] = (ts.prompts[c], ts.answers[c])
        else:
            notes.append(
                f"interventions: task {t!r} has no held-out critical samples; only its full subset is evaluated."
            )
        if 0 < len(c) < cfg.min_critical:
            msg = (
                f"interventions: task {t!r} has only {len(c)} held-out critical samples (min_critical="
                f"{cfg.min_critical}); its critical effect and p-value are weak evidence. Evaluate more "
                "samples of this task (a larger eval split)."
            )
            notes.append(msg)
            warnings.warn(msg, stacklevel=3)
    pool = [k for k in live if k not in set(features)]
    n_random = cfg.n_random
    if n_random and len(pool) < len(features):
        notes.append(
            f"interventions: {len(pool)} live features outside the {len(features)} edited ones are too few "
            "for a random control; it is left out."
        )
        n_random = 0
    checker = {t: eval_sets[t].task.check for t in task_names}
    n_new = {t: eval_sets[t].task.generation_len for t in task_names}
    edits = [
        ("ablate_in_rl", "rl", "ablate", 0.0),
        ("amplify_in_base", "base", "scale", float(cfg.alpha)),
    ]
    frames = []
    for label, name, mode, alpha in edits:
        others = {n: m for n, m in models.items() if n != name}
        edit = FeatureEdit(
            cc, features, mode=mode, alpha=alpha, model_name=name, others=others, codes=cfg.codes
        )
        for subset, sets in (("critical", crit), ("full", full)):
            if not sets:
                continue
            t = evaluate_intervention(
                models[name],
                edit,
                sets,
                checker=checker,
                n_new_tokens=n_new,
                n_random=n_random if subset == "critical" else min(n_random, cfg.n_random_full),
                live=pool,
                seed=seed,
                batch_size=256,
                progress=False,
                frequency=frequency if cfg.control == "matched" else None,
                match_width=cfg.match_width,
            )
            t["subset"] = subset  # the sets are already the subset; evaluate_intervention calls them "full"
            t.insert(0, "edit", label)
            t.insert(1, "model", name)
            t.insert(2, "mode", mode)
            t.insert(3, "alpha", alpha)
            t.insert(4, "n_features", len(features))
            t["group"] = [groups[x] for x in t.task]
            t["n_selection"] = [n_sel[x] for x in t.task]
            t["few_samples"] = (t.subset == "critical") & (t.n < cfg.min_critical)
            frames.append(t)
    # one Holm family per subset over both edits and every task (evaluate_intervention's are per call)
    table = add_holm(pd.concat(frames, ignore_index=True), by=["subset"])[INTERVENTION_COLUMNS]
    table = table.astype(dtypes)
    notes.extend(_intervention_sentences(table, "matched random" if cfg.control == "matched" else "random"))
    return table


def _intervention_sentences(table: pd.DataFrame, controls: str = "random") -> list[str]:
    """One sentence per (edit, task) on the held-out critical samples, derived from the table's numbers."""
    out = []
    crit = table[table.subset == "critical"]
    for (label, task), t in crit.groupby(["edit", "task"], sort=False):
        acc = t.set_index("condition")["accuracy"]
        e = t[t.condition == "edit"].iloc[0]
        ctrl = (
            f"; {int(e.n_controls)} {controls} controls {acc['random']:.2f} on average, p = {e.p_value:.3f} "
            f"(Holm over {int(e.n_tests)} tests: {e.p_holm:.3f}; the smallest p attainable: {e.p_min:.3f})"
            if "random" in acc
            else "; no random control"
        )
        sel = (
            f"features selected on {int(e.n_selection)} other critical samples"
            if e.n_selection
            else "no sample of this task selected the features"
        )
        out.append(
            f"interventions: {label} ({int(e.n_features)} features) on {task}: held-out critical accuracy "
            f"{acc['none']:.2f} -> {acc['edit']:.2f} (n = {int(e.n)}; {sel}){ctrl}."
        )
    return out
