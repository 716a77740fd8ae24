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
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from featdiff._version import __version__
from featdiff.activations.collect import collect_activations
from featdiff.analyses.crosscoder_view.config import (
    CROSSCODER_EVAL_COLUMNS,
    EVOLUTION_COLUMNS,
    GENERALIZATION_FEATURE_COLUMNS,
    GENERALIZATION_OVERLAP_COLUMNS,
    GENERALIZATION_TASK_COLUMNS,
    CrosscoderViewConfig,
    empty_table,
)
from featdiff.analyses.crosscoder_view.intervention_table import interventions_table
from featdiff.analyses.crosscoder_view.tables import evolution_table, mas_tables
from featdiff.analyses.crosscoder_view.view import CrosscoderView
from featdiff.analyses.evolution import (
    plot_feature_evolution,
)
from featdiff.analyses.generalization import (
    generalization_features,
    sample_codes,
)
from featdiff.comparison.config import CompareConfig
from featdiff.comparison.scoring import compare_crosscoder
from featdiff.core.output import progress_bar
from featdiff.core.threads import torch_threads
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.stats import firing_frequency
from featdiff.errors import FeatdiffError, grouped_warnings
from featdiff.lab.config import LabConfig
from featdiff.lab.store import accuracy, load
from featdiff.lab.suite import task_groups, tasks
from featdiff.lab.task import PAD
from featdiff.models.folder import load_prompts
from featdiff.models.hooks import default_hook
from featdiff.report.figures import plot_interventions, plot_mas, plot_nrn


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
        with torch_threads(cfg.num_threads), torch.random.fork_rng(devices=[]), grouped_warnings():
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
        tables["mas"], tables["mas_categories"], tables["nrn"] = mas_tables(cc, acts, cfg)
        live = tables["mas"].loc[~tables["mas"]["dead"], "feature"].astype(int).tolist()
        frequency = firing_frequency(cc, acts).numpy()

    with bar.stage("evolution"):
        if cfg.evolution == "none":
            tables["evolution"] = empty_table(EVOLUTION_COLUMNS)
            notes.append("evolution: skipped (evolution='none').")
        else:
            tables["evolution"] = evolution_table(lab_path, base, cc, acts, tokens, hook, pad, cfg, seed)

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
                notes.append(f"generalization: rl does not beat the base on {', '.join(left)}; they do not vote.")
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
            tables["generalization_features"] = empty_table(
                GENERALIZATION_FEATURE_COLUMNS,
                {"feature": "int64", "min_score": "float64", "mean_score": "float64"},
            )
            tables["generalization_overlaps"] = empty_table(GENERALIZATION_OVERLAP_COLUMNS)
            tables["generalization_tasks"] = empty_table(GENERALIZATION_TASK_COLUMNS)
        features = res.feature_ids if res is not None else []

    with bar.stage("interventions"):
        samples: dict[str, dict[str, list[int]]] = {}
        tables["interventions"] = interventions_table(
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
