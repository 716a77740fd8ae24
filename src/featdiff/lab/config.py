"""Dataclass configurations of the lab: one per stage, nested in ``LabConfig``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from featdiff.core.config import Config
from featdiff.errors import FeatdiffError, check_choice
from featdiff.lab.task import Task

LAB_VERSION = 1  # bump when training code changes what a config produces (it is part of the cache key)


def _positive(obj, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not v > 0:
            raise FeatdiffError(f"The '{n}' field of {type(obj).__name__} must be > 0; got {v!r}.")


@dataclass
class TaskConfig(Config):
    """Which tasks the lab uses: one in-domain (post-training) task, near-domain and out-of-domain tasks.

    Task names are an operation (``sort``, ``copy``, ``rev``, ``max``, ``succ``, ``sort_desc``, ``min``,
    ``smallest3``) with lists of ``list_len`` digits, or ``op_len<L>`` for another list length.
    """

    in_domain: str = "sort"
    near_domain: tuple[str, ...] = ("sort_desc", "smallest3")
    out_of_domain: tuple[str, ...] = ("copy", "rev", "max", "succ")
    list_len: int = 8
    n_eval: int = 500  # prompts per task in the final accuracy table
    n_eval_checkpoint: int = 200  # prompts per task for intermediate checkpoints and pretraining checks
    n_store: int = 128  # prompts per task stored with every checkpoint (activations are collected on them)

    def __post_init__(self):
        names = [self.in_domain, *self.near_domain, *self.out_of_domain]
        if len(set(names)) != len(names):
            raise FeatdiffError(f"Task names of TaskConfig must be distinct; got {names}.")
        for n in names:
            Task.parse(n, self.list_len)
        _positive(self, "list_len", "n_eval", "n_eval_checkpoint", "n_store")


@dataclass
class ModelConfig(Config):
    """The tiny HookedTransformer (d_vocab and n_ctx follow from the tasks)."""

    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    act_fn: str = "gelu"

    def __post_init__(self):
        _positive(self, "n_layers", "d_model", "n_heads", "d_mlp")
        if self.d_model % self.n_heads:
            raise FeatdiffError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")


@dataclass
class PretrainConfig(Config):
    """Pretraining on the task mixture, stopped when in-domain is partly and out-of-domain well solved."""

    lr: float = 1e-3
    batch_size: int = 256
    max_steps: int = 1500
    eval_every: int = 25
    in_domain_weight: float = 0.06  # share of the mixture
    near_domain_weight: float = 0.06  # share of each near-domain task
    stop_in_domain: float = 0.3  # stop at the first check where the in-domain task reaches this...
    stop_out_of_domain: float = 0.95  # ...and every out-of-domain task reaches this

    def __post_init__(self):
        _positive(self, "lr", "batch_size", "max_steps", "eval_every")


@dataclass
class SFTConfig(Config):
    """Supervised fine-tuning on the in-domain prompts: teacher-written answers or the base's own format."""

    answer_format: str = "teacher"
    lr: float = 3e-4
    batch_size: int = 32
    epochs: int = 4

    def __post_init__(self):
        check_choice("answer_format", self.answer_format, ["teacher", "base"], where="SFTConfig")
        _positive(self, "lr", "batch_size", "epochs")


@dataclass
class GRPOConfig(Config):
    """GRPO on the in-domain prompts: sampled groups, 0/1 reward, group-normalised advantages."""

    lr: float = 2e-4
    prompts_per_step: int = 32
    group_size: int = 8
    temperature: float = 1.0
    kl_coef: float = 0.0  # weight of the KL penalty to the base (k3 estimator); 0 switches it off
    epochs: int = 2

    def __post_init__(self):
        _positive(self, "lr", "prompts_per_step", "temperature", "epochs")
        if self.group_size < 2:
            raise FeatdiffError(f"GRPOConfig.group_size must be >= 2; got {self.group_size}.")
        if self.kl_coef < 0:
            raise FeatdiffError(f"GRPOConfig.kl_coef must be >= 0; got {self.kl_coef}.")


@dataclass
class LabConfig(Config):
    """Everything that determines a lab's checkpoints; its hash is the cache key.

    Examples
    --------
    >>> c = LabConfig.small()
    >>> LabConfig.from_dict(c.to_dict()) == c
    True
    >>> try:
    ...     LabConfig.from_dict({"sede": 1})
    ... except FeatdiffError as e:
    ...     print(str(e)[:31])
    Unknown LabConfig keys ['sede']
    """

    seed: int = 0
    n_train: int = 1024  # in-domain prompts shared by SFT and RL
    n_checkpoints: int = 5  # intermediate checkpoints saved per post-training run
    tasks: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def __post_init__(self):
        _positive(self, "n_train", "n_checkpoints")

    @classmethod
    def small(cls) -> LabConfig:
        """A small, fast configuration (seconds on a CPU) for tests; its contrast is not tuned."""
        return cls(
            n_train=80,
            tasks=TaskConfig(
                in_domain="sort",
                near_domain=("sort_desc",),
                out_of_domain=("copy", "max"),
                list_len=3,
                n_eval=32,
                n_eval_checkpoint=16,
                n_store=8,
            ),
            model=ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64),
            pretrain=PretrainConfig(
                batch_size=64,
                max_steps=100,
                eval_every=20,
                in_domain_weight=0.2,
                near_domain_weight=0.2,
                stop_out_of_domain=0.8,
            ),
            sft=SFTConfig(batch_size=16, epochs=1),
            grpo=GRPOConfig(prompts_per_step=16, group_size=4, epochs=1, lr=3e-4),
        )

    def key(self) -> str:
        """The cache key: a hash of the configuration and the lab version."""
        blob = json.dumps({"lab_version": LAB_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
