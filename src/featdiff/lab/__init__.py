"""The controlled post-training lab: base, SFT and RL checkpoints trained from one base on synthetic tasks.

Examples
--------
>>> import featdiff as fd                                   # doctest: +SKIP
>>> path = fd.lab.build()                                   # doctest: +SKIP
>>> fd.lab.accuracy(path)                                   # doctest: +SKIP
>>> cmp = fd.compare_checkpoints(*fd.lab.load(path))        # doctest: +SKIP
"""

from featdiff.lab.config import (
    GRPOConfig,
    LabConfig,
    ModelConfig,
    PretrainConfig,
    SFTConfig,
    TaskConfig,
)
from featdiff.lab.evaluation import accuracy_table, correctness, evaluate
from featdiff.lab.store import accuracy, build, checkpoints, default_cache_dir, lab_path, load
from featdiff.lab.suite import task_groups, tasks
from featdiff.lab.task import Task, TaskSet
from featdiff.lab.train import grpo, grpo_advantages, make_model, pretrain, sft

__all__ = [
    "GRPOConfig",
    "LabConfig",
    "ModelConfig",
    "PretrainConfig",
    "SFTConfig",
    "Task",
    "TaskConfig",
    "TaskSet",
    "accuracy",
    "accuracy_table",
    "build",
    "checkpoints",
    "correctness",
    "default_cache_dir",
    "evaluate",
    "grpo",
    "grpo_advantages",
    "lab_path",
    "load",
    "make_model",
    "pretrain",
    "sft",
    "task_groups",
    "tasks",
]
