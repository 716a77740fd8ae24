"""The crosscoder view's intervention table: generalization features ablated in rl and amplified in base,
against matched random controls, on held-out critical samples and full task samples, with its sentences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from featdiff.analyses.crosscoder_view.config import (
    INTERVENTION_COLUMNS,
    CrosscoderViewConfig,
    empty_table,
)
from featdiff.analyses.interventions.controls import add_holm
from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.analyses.interventions.evaluate import evaluate_intervention
from featdiff.errors import warn


def critical_samples(correctness: pd.DataFrame, task: str) -> list[int]:
    """The samples of ``task`` the base gets wrong and rl right (the generalization features' samples)."""
    w = correctness[correctness.task == task].pivot_table(
        index="sample", columns="checkpoint", values="correct", aggfunc="first"
    )
    return sorted(int(s) for s in w.index[(~w["base"].astype(bool)) & w["rl"].astype(bool)])


def interventions_table(
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
        return empty_table(INTERVENTION_COLUMNS, dtypes)
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
        c = res.heldout(t) if voted else critical_samples(correctness, t)
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
            warn(msg)
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
