"""The settings of a crosscoder (``CrosscoderConfig``) and their measured defaults (k, lr, run length)."""

from __future__ import annotations

from dataclasses import dataclass

from featdiff.core.config import Config, check_int, check_number, run_steps
from featdiff.dictionaries.health import MAX_DEAD_FRACTION, SETTLE_TOLERANCE, SETTLE_WINDOW
from featdiff.errors import FeatdiffError, check_choice

SPARSITIES = ("batchtopk", "l1")

N_SAMPLES = 500_000
"""Default run length of ``train_crosscoder`` in training rows (as ``SAETrainConfig.n_samples``)."""


def default_crosscoder_k(d_in: int, d_sae: int) -> int:
    """The default BatchTopK ``k`` of a crosscoder: ``d_in // 8`` (as ``train_saes``), at least 3, at
    most ``d_sae // 4``.

    Measured on planted shared / specific atoms (docs/crosscoder.md): a k at the data's true activity
    recovers them; k = 32 whatever d_in merged atoms at d_in <= 64, and at d_in 16 (3 atoms per token)
    k = 2 lost specific atoms and k = 4 merged shared ones.

    Examples
    --------
    >>> default_crosscoder_k(16, 128), default_crosscoder_k(64, 512), default_crosscoder_k(512, 4096)
    (3, 8, 64)
    >>> default_crosscoder_k(8, 8)
    2
    """
    return max(1, min(max(3, d_in // 8), d_sae // 4))


def default_crosscoder_lr(d_in: int) -> float:
    """The default Adam learning rate of a crosscoder: ``min(1e-2, 0.4 / d_in)`` (inputs normalised to
    E||x||^2 = d_in).

    Measured on planted atoms (docs/crosscoder.md): 1e-2 recovers every atom at d_in 16-64 (at d_in 8,
    3e-3 had not settled after 1,500 steps); at d_in 128, 1e-2 left mixed atoms (final loss 7.8-10.8)
    where 3e-3 recovered them all (final loss 2.3).

    Examples
    --------
    >>> default_crosscoder_lr(32), default_crosscoder_lr(64), default_crosscoder_lr(128)
    (0.01, 0.00625, 0.003125)
    """
    return min(1e-2, 0.4 / d_in)


def _fail(msg: str) -> None:
    raise FeatdiffError(msg)


@dataclass
class CrosscoderConfig(Config):
    """Every setting of a crosscoder: its shape, its sparsity and how it was trained.

    Run length, as ``SAETrainConfig``: ``n_steps`` if set, else ``n_epochs`` passes over the tokens if set,
    else ``n_samples`` training rows (the data is cycled, reshuffled each epoch). ``k=None`` means
    ``default_crosscoder_k(d_in, d_sae)``; ``lr=None`` means ``default_crosscoder_lr(d_in)``.
    ``aux_k=None`` means d_in // 2 (as sae-lens TopK).
    ``p`` is the norm of the per-checkpoint decoder rows used in training (batchtopk ranking, L1 penalty).

    Diagnostics: ``train_crosscoder`` warns (``FeatdiffWarning``) when the reconstruction loss of the last
    ``settle_window`` of the steps before the lr decay still fell by more than ``settle_tolerance``
    (relative: mean of the window's first half against its second half), or when more than
    ``max_dead_fraction`` of the latents never fire on the training tokens.

    Examples
    --------
    >>> cfg = CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=32, k=4)
    >>> CrosscoderConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=32, sparsity="topk")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    featdiff.errors.FeatdiffError: The 'sparsity' parameter of CrosscoderConfig must be one of [...]...
    """

    names: list[str]
    d_in: int
    d_sae: int
    sparsity: str = "batchtopk"
    k: int | None = None
    l1_coefficient: float = 1.0
    l1_warmup_fraction: float = 0.05
    lr: float | None = None
    lr_decay_fraction: float = 0.2
    batch_size: int = 256
    n_steps: int | None = None
    n_epochs: float | None = None
    n_samples: int | None = N_SAMPLES
    aux_k: int | None = None
    aux_k_coefficient: float = 1.0 / 32
    dead_steps_threshold: int = 200
    threshold_momentum: float = 0.99
    normalise: bool = True
    p: int = 2
    init_decoder_norm: float = 0.1
    seed: int = 0
    hook: str | None = None
    settle_window: float = SETTLE_WINDOW
    settle_tolerance: float = SETTLE_TOLERANCE
    max_dead_fraction: float = MAX_DEAD_FRACTION

    def __post_init__(self) -> None:
        where = "CrosscoderConfig"
        if self.k is None and isinstance(self.d_in, int) and isinstance(self.d_sae, int):
            self.k = default_crosscoder_k(self.d_in, self.d_sae)
        if self.lr is None and isinstance(self.d_in, int) and self.d_in > 0:
            self.lr = default_crosscoder_lr(self.d_in)
        self.names = list(self.names) if not isinstance(self.names, str) else [self.names]
        if len(self.names) < 2:
            _fail(
                f"A crosscoder needs at least 2 checkpoints; got {len(self.names)} ({self.names}). "
                "For one checkpoint train an SAE (featdiff.train_saes)."
            )
        if len(set(self.names)) != len(self.names) or not all(isinstance(n, str) and n for n in self.names):
            _fail(f"Checkpoint names must be distinct non-empty strings; got {self.names}.")
        check_choice("sparsity", self.sparsity, SPARSITIES, where)
        check_choice("p", self.p, (1, 2), where)
        for name in ("d_in", "d_sae", "k", "batch_size", "dead_steps_threshold"):
            check_int(where, name, getattr(self, name))
        if self.sparsity == "batchtopk" and self.k > self.d_sae:
            _fail(f"k ({self.k}) must be at most d_sae ({self.d_sae}); lower k or raise d_sae.")
        check_int(where, "n_steps", self.n_steps, optional=True)
        check_int(where, "n_samples", self.n_samples, optional=True)
        if self.n_steps is None and self.n_epochs is None and self.n_samples is None:
            _fail(f"{where} needs a run length: set n_samples, n_epochs or n_steps.")
        check_int(where, "aux_k", self.aux_k, optional=True)
        check_number(where, "n_epochs", self.n_epochs, 0, strict_low=True, optional=True)
        for name in ("lr", "init_decoder_norm", "settle_tolerance"):
            check_number(where, name, getattr(self, name), 0, strict_low=True)
        for name in ("l1_coefficient", "aux_k_coefficient"):
            check_number(where, name, getattr(self, name), 0)
        for name in (
            "l1_warmup_fraction",
            "lr_decay_fraction",
            "threshold_momentum",
            "settle_window",
            "max_dead_fraction",
        ):
            check_number(where, name, getattr(self, name), 0, 1)

    @property
    def n_models(self) -> int:
        return len(self.names)

    def n_steps_for(self, n_tokens: int) -> int:
        """Optimiser steps this config runs on ``n_tokens`` training rows (full batches per epoch).

        Examples
        --------
        >>> cfg = CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=32, n_samples=10_000)
        >>> cfg.n_steps_for(100_000), cfg.n_steps_for(100)  # 10_000 / 256 batches; batches of 100 rows
        (40, 100)
        """
        return run_steps(self.n_steps, self.n_epochs, self.n_samples, self.batch_size, n_tokens, full_batches=True)

