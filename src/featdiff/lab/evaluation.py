"""Greedy exact-match evaluation of checkpoints on the lab's tasks: per sample and per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from featdiff.core.output import progress_bar
from featdiff.errors import FeatdiffError
from featdiff.lab.config import LabConfig
from featdiff.lab.decoding import generate
from featdiff.lab.suite import tasks
from featdiff.lab.task import GROUPS, TaskSet

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

CORRECTNESS_COLUMNS = ["checkpoint", "task", "group", "sample", "correct"]


def _default_tasks(models: Mapping[str, HookedTransformer]) -> dict[str, TaskSet]:
    for m in models.values():
        lab = (getattr(m, "featdiff_meta", None) or {}).get("lab")
        if lab is not None:
            return tasks(LabConfig.from_dict(lab), split="eval")
    raise FeatdiffError(
        "featdiff.lab.evaluate needs 'tasks' (e.g. featdiff.lab.tasks(config)) unless a model comes from "
        "the lab (its featdiff_meta carries the lab config); got neither."
    )


def correctness(
    models: Mapping[str, HookedTransformer],
    tasks: Mapping[str, TaskSet] | None = None,
    batch_size: int = 1024,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-sample greedy exact match: a tidy DataFrame with one row per (checkpoint, task, sample).

    Columns: ``checkpoint`` (str), ``task`` (str), ``group`` (in_domain | near_domain | out_of_domain),
    ``sample`` (int, the prompt's index in its TaskSet), ``correct`` (bool). Each model generates
    ``task.generation_len`` tokens greedily; the final answer is read as ``Task.check`` says.
    ``tasks`` defaults to the eval split of the lab a model comes from.

    Examples
    --------
    >>> from featdiff.lab import LabConfig, tasks
    >>> from featdiff.lab.train import make_model
    >>> df = correctness({"base": make_model(LabConfig.small())}, tasks(LabConfig.small(), n=3),
    ...                  progress=False)
    >>> list(df.columns), len(df)
    (['checkpoint', 'task', 'group', 'sample', 'correct'], 12)
    """
    if not models:
        raise FeatdiffError("featdiff.lab.correctness needs at least one model in 'models'; got none.")
    task_sets = dict(tasks) if tasks is not None else _default_tasks(models)
    frames = []
    bar = progress_bar(total=len(models) * len(task_sets), desc="lab: evaluate", disable=not progress, leave=False)
    for ckpt, model in models.items():
        for name, ts in task_sets.items():
            completions = generate(model, ts.prompts, ts.task.generation_len, batch_size=batch_size)
            ok = ts.check(completions)
            frames.append(
                pd.DataFrame(
                    {
                        "checkpoint": ckpt,
                        "task": name,
                        "group": ts.group,
                        "sample": range(len(ok)),
                        "correct": ok.numpy().astype(bool),
                    }
                )
            )
            bar.update(1)
    bar.close()
    return pd.concat(frames, ignore_index=True)[CORRECTNESS_COLUMNS]


def accuracy_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per checkpoint from per-sample correctness: one row per checkpoint (in first-seen order),
    a ``checkpoint`` column, one column per task, then the group means (``in_domain``, ``near_domain`` when
    there are near-domain tasks, ``out_of_domain``; each the mean of its tasks' accuracies). Values are in
    [0, 1]; ``table.attrs["groups"]`` maps each task to its group.
    """
    order = list(dict.fromkeys(per_sample["checkpoint"]))
    task_order = list(dict.fromkeys(per_sample["task"]))
    groups = dict(zip(per_sample["task"], per_sample["group"], strict=True))
    wide = per_sample.pivot_table(index="checkpoint", columns="task", values="correct", aggfunc="mean")
    wide = wide.reindex(index=order, columns=task_order).astype(float)
    for group in GROUPS:
        members = [t for t in task_order if groups[t] == group]
        if members:
            wide[group] = wide[members].mean(axis=1)
    table = wide.reset_index()
    table.columns.name = None
    table.attrs["groups"] = groups
    return table


def evaluate(
    models: Mapping[str, HookedTransformer],
    tasks: Mapping[str, TaskSet] | None = None,
    batch_size: int = 1024,
    progress: bool = True,
) -> pd.DataFrame:
    """Greedy exact-match accuracy per task for each model: see ``accuracy_table`` for the columns.

    Examples
    --------
    >>> from featdiff.lab import LabConfig, tasks
    >>> from featdiff.lab.train import make_model
    >>> t = evaluate({"base": make_model(LabConfig.small())}, tasks(LabConfig.small(), n=3), progress=False)
    >>> list(t.columns)
    ['checkpoint', 'sort', 'sort_desc', 'copy', 'max', 'in_domain', 'near_domain', 'out_of_domain']
    """
    return accuracy_table(correctness(models, tasks, batch_size=batch_size, progress=progress))
