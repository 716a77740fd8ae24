"""The lab's task suite: which tasks a lab configuration uses, in which group, and their prompts."""

from __future__ import annotations

import zlib

import torch

from featdiff.errors import check_choice
from featdiff.lab.config import LabConfig
from featdiff.lab.task import Task, TaskSet


def _task_seed(seed: int, split: str, name: str) -> int:
    # One independent stream per (seed, split, task): adding a task changes no other task's data.
    return zlib.crc32(f"{seed}/{split}/{name}".encode())


def task_groups(config: LabConfig) -> dict[str, str]:
    """Task name -> group, in table order (in-domain, near-domain, out-of-domain)."""
    t = config.tasks
    out = {t.in_domain: "in_domain"}
    out.update({n: "near_domain" for n in t.near_domain})
    out.update({n: "out_of_domain" for n in t.out_of_domain})
    return out


def task_list(config: LabConfig) -> list[Task]:
    """The Task objects of a lab configuration, in table order."""
    return [Task.parse(n, config.tasks.list_len) for n in task_groups(config)]


def tasks(config: LabConfig | None = None, split: str = "eval", n: int | None = None) -> dict[str, TaskSet]:
    """Prompts and true answers of every task of a lab, for evaluation or training.

    ``split`` is ``"eval"`` (``config.tasks.n_eval`` prompts per task), ``"store"`` (the prompts stored with
    the checkpoints), ``"dev"`` (the checks during training) or ``"train"`` (``config.n_train`` prompts: the
    in-domain post-training prompts). Splits are drawn independently.
    The same config, split and ``n`` always give the same prompts.

    Examples
    --------
    >>> from featdiff.lab import LabConfig
    >>> ts = tasks(LabConfig.small(), n=4)
    >>> ts["sort"].group, tuple(ts["sort"].prompts.shape), bool(ts["sort"].check(ts["sort"].answers).all())
    ('in_domain', (4, 6), True)
    """
    config = config or LabConfig()
    check_choice("split", split, ["eval", "store", "dev", "train"], where="featdiff.lab.tasks")
    if n is None:
        n = {
            "eval": config.tasks.n_eval,
            "store": config.tasks.n_store,
            "dev": config.tasks.n_eval_checkpoint,
            "train": config.n_train,
        }[split]
    groups = task_groups(config)
    out = {}
    for task in task_list(config):
        g = torch.Generator().manual_seed(_task_seed(config.seed, split, task.name))
        prompts, answers = task.sample(n, g)
        out[task.name] = TaskSet(task, groups[task.name], prompts, answers)
    return out
