"""evaluate_intervention: the task effect of feature edits, each against matched random controls."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from featdiff.analyses.interventions.controls import (
    ALTERNATIVES,
    N_CONTROLS,
    add_holm,
    default_alternative,
    empirical_p_value,
    live_features,
    matched_controls,
    random_features,
)
from featdiff.analyses.interventions.edit import FeatureEdit
from featdiff.analyses.interventions.edit_hooks import check_model_hook, edit_features, remember_others
from featdiff.analyses.interventions.generation import exact_match, generate_greedy, prompt_groups
from featdiff.core.config import check_int
from featdiff.core.output import progress_bar
from featdiff.errors import FeatdiffError, check_choice

EVAL_COLUMNS = [
    "condition",
    "subset",
    "task",
    "accuracy",
    "n",
    "n_controls",
    "p_min",
    "p_value",
    "p_holm",
    "n_tests",
]


def _correct(
    model: Any,
    prompts: Tensor,
    answers: Tensor,
    edit: FeatureEdit | None,
    eval_fn,
    checker,
    n_new: int,
    batch_size: int,
) -> Tensor:
    if eval_fn is not None:
        ctx = edit_features(model, edit) if edit is not None else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            res = torch.as_tensor(eval_fn(model, prompts, answers)).bool().flatten()
    else:
        pred = generate_greedy(model, prompts, n_new, edit=edit, batch_size=batch_size)
        res = torch.as_tensor((checker or exact_match)(pred, answers)).bool().flatten()
    if res.shape[0] != len(prompts):
        raise FeatdiffError(f"The evaluation returned {res.shape[0]} results for {len(prompts)} samples.")
    return res


def evaluate_intervention(
    model: Any,
    edit: FeatureEdit,
    tasks: Mapping[str, tuple[Int[Tensor, "n pos"], Int[Tensor, "n n_answer"]]],
    critical: Mapping[str, Sequence[int]] | None = None,
    eval_fn: Callable[[Any, Tensor, Tensor], Tensor] | None = None,
    checker: Callable[[Tensor, Tensor], Tensor] | Mapping[str, Callable] | None = None,
    n_new_tokens: int | Mapping[str, int] | None = None,
    n_random: int = N_CONTROLS,
    live: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    frequency: Sequence[float] | Tensor | None = None,
    alternative: str | None = None,
    match_width: int = 10,
) -> pd.DataFrame:
    """Task accuracy without the edit, with it, and with equal-size random-feature edits (the controls).

    ``tasks``: ``{task: (prompts, answers)}``; by default a sample is correct when greedy decoding of
    ``n_new_tokens`` tokens (default ``answers.shape[1]``; an int or ``{task: int}``) reproduces
    ``answers`` exactly. ``checker(pred, answers) -> per-sample bool`` (or ``{task: checker}``, e.g.
    ``{name: ts.task.check}`` for the lab) replaces exact match; ``eval_fn(model, prompts, answers) ->
    per-sample bool`` replaces generation and checking (it runs with the edit active). ``critical``:
    ``{task: sample
    indices}`` for the critical subset. Score an edit on samples that took no part in choosing its
    features (e.g. ``GeneralizationFeatures.heldout(task)``): on the selection samples the effect is
    biased upward.

    Controls: ``n_random`` seeded sets of ``len(edit.features)`` features from the live features
    (``live``, or those that fire on the tasks' prompts) outside the edit; with ``frequency`` (every
    feature's firing frequency) each set is matched to the edit's firing frequencies feature by feature
    (``matched_controls``, ``match_width``), else drawn uniformly (``random_features``). The edit's
    empirical p-value per (task, subset) is ``(1 + #controls whose accuracy is at least as extreme) /
    (1 + n_random)`` (``empirical_p_value``) in the direction ``alternative`` (``"less"``: the edit lowers
    accuracy; ``"greater"``: it raises it; default: ``"less"`` for an ablation or alpha < 1, else
    ``"greater"``). With 20 controls the smallest possible p is 1/21 = 0.048 (``p_min``).

    Several tasks give several tests: ``p_holm`` is ``p_value`` Holm-adjusted (``holm``) within its
    subset, one family per subset (the critical subset tests the features, the full subset their side
    effects), and ``n_tests`` is the family's size. The smallest attainable ``p_holm`` is
    ``n_tests * p_min``: with 4 tests a Holm-adjusted p below 0.05 needs ``n_random >= 80``.

    Returns a DataFrame with columns condition (``none`` | ``edit`` | ``random``), subset (``critical`` |
    ``full``), task, accuracy (float; ``random``: the mean over the controls), n (samples, int),
    n_controls (int), p_min (float: 1 / (1 + n_controls), the smallest p the controls allow), p_value
    (float), p_holm (float) and n_tests (int); the last four on the ``edit`` rows only (NaN or 0 elsewhere
    and without controls).

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> edit = FeatureEdit(sae, [0], hook="blocks.0.hook_resid_post")
    >>> tasks = {"copy": (torch.tensor([[1, 2], [3, 4]]), torch.tensor([[2], [4]]))}
    >>> table = evaluate_intervention(model, edit, tasks, n_random=0, progress=False)
    >>> list(table.condition), table.columns[-4:].tolist()
    (['none', 'edit'], ['p_min', 'p_value', 'p_holm', 'n_tests'])
    """

    if not isinstance(edit, FeatureEdit):
        raise FeatdiffError(f"evaluate_intervention needs a FeatureEdit; got {type(edit).__name__}.")
    if not isinstance(tasks, Mapping) or not tasks:
        raise FeatdiffError(
            "The 'tasks' of evaluate_intervention must be a non-empty dict {task: (prompts, answers)}."
        )
    check_model_hook(model, edit.hook)
    critical = dict(critical or {})
    unknown = sorted(set(critical) - set(tasks))
    if unknown:
        raise FeatdiffError(f"critical names tasks {unknown} that are not in tasks {list(tasks)}.")
    check_int("evaluate_intervention", "n_random", n_random, minimum=0)
    alternative = default_alternative(edit) if alternative is None else alternative
    check_choice("alternative", alternative, ALTERNATIVES, where="evaluate_intervention")
    controls: list[list[int]] = []
    if n_random > 0 and edit.features:
        if live is None:
            live_set: set[int] = set()
            for prompts, _ in tasks.values():
                for _, toks in prompt_groups(prompts):
                    live_set.update(live_features(model, edit, toks))
            live = sorted(live_set)
        if frequency is not None:
            controls = matched_controls(
                edit.features, frequency, live, n_random, width=match_width, seed=seed
            )
        else:
            controls = [
                random_features(live, len(edit.features), edit.features, seed=seed + i)
                for i in range(n_random)
            ]
    conditions: list[tuple[str, FeatureEdit | None]] = [("none", None), ("edit", edit)]
    conditions += [("random", edit.with_features(c)) for c in controls]
    bar = progress_bar(total=len(tasks) * len(conditions), disable=not progress, desc="evaluate_intervention")
    with remember_others():
        table = _evaluate_conditions(
            model,
            tasks,
            critical,
            conditions,
            controls,
            alternative,
            eval_fn,
            checker,
            n_new_tokens,
            batch_size,
            bar,
        )
    bar.close()
    return table


def _evaluate_conditions(
    model, tasks, critical, conditions, controls, alternative, eval_fn, checker, n_new_tokens, batch_size, bar
) -> pd.DataFrame:
    """The rows of ``evaluate_intervention``: each condition on each task, then the p-values."""
    rows = []
    for task, (prompts, answers) in tasks.items():
        answers = torch.as_tensor(answers)
        if len(prompts) != len(answers):
            raise FeatdiffError(f"Task {task!r} has {len(prompts)} prompts but {len(answers)} answers.")
        crit = torch.as_tensor(list(critical.get(task, [])), dtype=torch.long)
        if len(crit) and (crit.min() < 0 or crit.max() >= len(prompts)):
            raise FeatdiffError(f"critical samples of task {task!r} must be indices in [0, {len(prompts)}).")
        n_new = n_new_tokens.get(task) if isinstance(n_new_tokens, Mapping) else n_new_tokens
        n_new = answers.shape[1] if n_new is None else n_new
        task_checker = checker.get(task) if isinstance(checker, Mapping) else checker
        acc: dict[str, list[tuple[float, float]]] = {}
        for cond, e in conditions:
            ok = _correct(model, prompts, answers, e, eval_fn, task_checker, n_new, batch_size).float()
            crit_acc = float(ok[crit].mean()) if len(crit) else float("nan")
            acc.setdefault(cond, []).append((crit_acc, float(ok.mean())))
            bar.update()
        nc = len(controls)
        for cond, vals in acc.items():
            mean = torch.tensor(vals).mean(0)
            for j, subset, n in ((0, "critical", len(crit)), (1, "full", len(prompts))):
                if subset == "critical" and task not in critical:
                    continue
                p = p_min = math.nan
                if cond == "edit" and nc:
                    p = empirical_p_value(vals[0][j], [v[j] for v in acc["random"]], alternative)
                    p_min = 1 / (1 + nc)
                rows.append((cond, subset, task, float(mean[j]), n, nc, p_min, p))
    table = pd.DataFrame(rows, columns=EVAL_COLUMNS[:-2])
    table = table.astype(
        {"n": "int64", "accuracy": "float64", "n_controls": "int64", "p_min": "float64", "p_value": "float64"}
    )
    return add_holm(table, by=["subset"])[EVAL_COLUMNS]
