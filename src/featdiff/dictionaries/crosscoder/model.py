"""A crosscoder for any number of checkpoints: one shared sparse code, one encoder and decoder per checkpoint.

For checkpoints m = 1..M with activations a^m of one token (Lindsey et al. 2024, "Sparse crosscoders"):

    f     = sparse(sum_m W_enc^m (s_m a^m) + b_enc)          codes, shared by every checkpoint
    â^m   = (W_dec^m f + b_dec^m) / s_m                      reconstruction of checkpoint m, raw units

**Units.** ``s_m = norm_scale[m]`` is one scalar per checkpoint, estimated from the training data so that
E||s_m a^m||^2 = d_in (turn off with ``normalise=False``, then s_m = 1). ``W_enc``, ``W_dec``, ``b_dec`` and
the decoder norms that the attribution metrics use all live in this *normalised* space, so that checkpoints
whose residual streams have different scales are compared on equal terms. The public methods take and
return *raw* activations: ``encode`` multiplies by s_m, ``decode`` divides by it. ``decoder(name)`` returns
W_dec^m / s_m, the raw-unit direction of every feature in checkpoint ``name``: editing the codes of one
token from f to f' in that checkpoint's forward pass is ``h' = h + (f' - f) @ cc.decoder(name)``.

Sparsity is ``"batchtopk"`` (default; Bussmann et al. 2024, as used for crosscoders by Minder et al. 2025)
or ``"l1"`` (ReLU with an L1 penalty weighted by the summed decoder norms, Lindsey et al. 2024).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from featdiff import constants
from featdiff._version import __version__
from featdiff.activations.activations import ActivationSet
from featdiff.core.config import Config, check_int, check_number, run_steps
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import progress_bar
from featdiff.core.runstate import RunCheckpoint, data_fingerprint
from featdiff.dictionaries.stats import compute_stats, new_stats, update_stats
from featdiff.errors import FeatdiffError, FeatdiffWarning, check_choice

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
    >>> CrosscoderConfig(names=["base", "rl"], d_in=8, d_sae=32, sparsity="topk")
    Traceback (most recent call last):
    ...
    featdiff.errors.FeatdiffError: The 'sparsity' parameter of CrosscoderConfig must be one of ['batchtopk', 'l1']; got 'topk'.
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
    settle_window: float = 0.1
    settle_tolerance: float = 0.02
    max_dead_fraction: float = 0.5

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


def stack(
    batch: Mapping[str, Float[Tensor, "batch d_in"]], names: list[str]
) -> Float[Tensor, "batch n_models d_in"]:
    """Stack a batch dict {checkpoint: rows} into one tensor with the checkpoints in the order ``names``.

    Examples
    --------
    >>> stack({"rl": torch.ones(5, 3), "base": torch.zeros(5, 3)}, ["base", "rl"]).shape
    torch.Size([5, 2, 3])
    """
    missing = [n for n in names if n not in batch]
    if missing:
        raise FeatdiffError(
            f"The batch lacks checkpoints {missing}; it has {list(batch)} and {names} are needed."
        )
    xs = [batch[n] for n in names]
    if len({tuple(x.shape) for x in xs}) != 1 or xs[0].ndim != 2:
        shapes = {n: tuple(x.shape) for n, x in zip(names, xs, strict=True)}
        raise FeatdiffError(f"Every checkpoint's rows must have the same shape (batch, d_in); got {shapes}.")
    return torch.stack(xs, dim=1)


class Crosscoder(nn.Module):
    """One shared sparse dictionary over M >= 2 checkpoints (see the module docstring for the units).

    Parameters: ``W_enc`` (n_models, d_in, d_sae), ``W_dec`` (n_models, d_sae, d_in), ``b_enc`` (d_sae,),
    ``b_dec`` (n_models, d_in), in normalised units, checkpoints in the order ``cc.names``. Buffers:
    ``norm_scale`` (n_models,) and the batchtopk inference ``threshold`` (a scalar; < 0 until learned).

    Examples
    --------
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
    >>> x = torch.randn(3, 2, 4)
    >>> cc.encode(x).shape, cc.decode(cc.encode(x)).shape, cc.decoder("rl").shape
    (torch.Size([3, 8]), torch.Size([3, 2, 4]), torch.Size([8, 4]))
    """

    W_enc: Float[Tensor, "n_models d_in d_sae"]
    W_dec: Float[Tensor, "n_models d_sae d_in"]
    b_enc: Float[Tensor, " d_sae"]
    b_dec: Float[Tensor, "n_models d_in"]
    norm_scale: Float[Tensor, " n_models"]
    threshold: Float[Tensor, ""]

    def __init__(self, cfg: CrosscoderConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        m, d, s = cfg.n_models, cfg.d_in, cfg.d_sae
        g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(m, s, d, generator=g)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * cfg.init_decoder_norm
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.transpose(1, 2).clone())
        self.b_enc = nn.Parameter(torch.zeros(s))
        self.b_dec = nn.Parameter(torch.zeros(m, d))
        self.register_buffer("norm_scale", torch.ones(m))
        self.register_buffer("threshold", torch.tensor(-1.0))
        self.diagnostics: dict = {}  # how training went (train_crosscoder fills it; not saved)

    # ----------------------------------------------------------------- shape and units
    @property
    def names(self) -> list[str]:
        return list(self.cfg.names)

    @property
    def n_models(self) -> int:
        return self.cfg.n_models

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def hook(self) -> str | None:
        return self.cfg.hook

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"Crosscoder(names={c.names}, d_in={c.d_in}, d_sae={c.d_sae}, sparsity={c.sparsity!r}, k={c.k})"
        )

    def model_index(self, name: str, param: str = "name") -> int:
        """Position of checkpoint ``name`` in ``cc.names`` (raises FeatdiffError for an unknown name)."""
        check_choice(param, name, self.names, "this Crosscoder")
        return self.names.index(name)

    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != (self.n_models, self.d_in):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise FeatdiffError(
                f"Crosscoder input must have shape (batch, n_models={self.n_models}, d_in={self.d_in}) "
                f"with checkpoints in the order {self.names}; got {shape}. Build it with stack(batch, cc.names)."
            )
        return x.to(self.W_enc.device, self.W_enc.dtype)  # computed where the crosscoder is

    def _normalise(self, x: Float[Tensor, "batch n_models d_in"]) -> Float[Tensor, "batch n_models d_in"]:
        return x * self.norm_scale[None, :, None]

    def _weighted_norms(self) -> Float[Tensor, " d_sae"]:
        return self.W_dec.norm(p=self.cfg.p, dim=-1).sum(0)

    # ----------------------------------------------------------------- forward pass
    def _pre(self, x_norm: Float[Tensor, "batch n_models d_in"]) -> Float[Tensor, "batch d_sae"]:
        return torch.einsum("bmd,mds->bs", x_norm, self.W_enc) + self.b_enc

    def _batchtopk(self, acts: Float[Tensor, "batch d_sae"], data_parallel=None) -> tuple[Tensor, Tensor]:
        """Keep the batch's k * batch largest acts * sum_m ||d^m||; return codes and the smallest kept score.
        With ``data_parallel`` (featdiff.distributed.DataParallel) the batch is the one all ranks share."""
        scores = acts * self._weighted_norms()
        if data_parallel is not None:
            mask = data_parallel.batch_top_mask(scores, self.cfg.k) & (acts > 0)
            return acts * mask, data_parallel.min_kept(scores[mask])
        n_keep = min(self.cfg.k * acts.shape[0], scores.numel())
        top = scores.flatten().topk(n_keep, sorted=False)
        mask = torch.zeros_like(scores, dtype=torch.bool).flatten()
        mask[top.indices] = True
        mask = mask.view_as(scores) & (acts > 0)
        kept = scores[mask]
        min_kept = kept.min().detach() if kept.numel() else torch.tensor(0.0)
        return acts * mask, min_kept

    def encode(
        self, x: Float[Tensor, "batch n_models d_in"], use_threshold: bool = True
    ) -> Float[Tensor, "batch d_sae"]:
        """Codes of raw activations. batchtopk keeps the codes whose ``f_k * sum_m ||W_dec^m[k]||_p`` exceed
        the learned ``threshold`` (batch-independent; plain ReLU before training), or with
        ``use_threshold=False`` the training-time batch top-k (k * batch codes). l1 is a plain ReLU."""
        acts = torch.relu(self._pre(self._normalise(self._check_x(x))))
        if self.cfg.sparsity == "l1":
            return acts
        if use_threshold:
            thr = self.threshold.clamp(min=0.0)
            return acts * (acts * self._weighted_norms() > thr)
        return self._batchtopk(acts)[0]

    def decode(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch n_models d_in"]:
        """Raw-unit reconstructions of every checkpoint from codes."""
        return self._decode_norm(f) / self.norm_scale[None, :, None]

    def _decode_norm(self, f: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch n_models d_in"]:
        if f.ndim != 2 or f.shape[1] != self.d_sae:
            raise FeatdiffError(f"Codes must have shape (batch, d_sae={self.d_sae}); got {tuple(f.shape)}.")
        return torch.einsum("bs,msd->bmd", f.to(self.W_dec), self.W_dec) + self.b_dec

    def forward(self, x: Float[Tensor, "batch n_models d_in"]) -> Float[Tensor, "batch n_models d_in"]:
        """Reconstruct raw activations: ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def decoder(self, name: str) -> Float[Tensor, "d_sae d_in"]:
        """Raw-unit decoder of checkpoint ``name``: W_dec^m / norm_scale[m] (a detached copy).

        Feature k adds ``f_k * cc.decoder(name)[k]`` to that checkpoint's activation, so an edit of the
        codes f -> f' is ``h + (f' - f) @ cc.decoder(name)`` in the checkpoint's own units.
        """
        m = self.model_index(name)
        return (self.W_dec[m] / self.norm_scale[m]).detach().clone()

    @torch.no_grad()
    def encode_acts(
        self, acts: ActivationSet | Mapping[str, Float[Tensor, "n_tokens d_in"]], batch_size: int = 4096
    ) -> Float[Tensor, "n_tokens d_sae"]:
        """Codes of every token of ``acts`` (an ActivationSet or a dict holding at least ``cc.names``)."""
        acts = _as_acts(acts, self.names)
        out = [
            self.encode(stack(b, self.names)).cpu()
            for b in acts.batches(batch_size, shuffle=False, names=self.names)
        ]
        return torch.cat(out)

    # ----------------------------------------------------------------- evaluation and attribution
    @torch.no_grad()
    def evaluate(
        self, acts: ActivationSet | Mapping[str, Float[Tensor, "n_tokens d_in"]], batch_size: int = 4096
    ) -> pd.DataFrame:
        """Per checkpoint: ``fve`` (fraction of variance explained), ``mse`` (per token, raw units), and
        the shared-code ``l0`` (mean active features per token) and ``dead_fraction`` (never fired)."""
        acts = _as_acts(acts, self.names)
        stats = new_stats(self.d_sae, self.d_in, self.n_models)
        for b in acts.batches(batch_size, shuffle=False, names=self.names):
            x = stack(b, self.names)
            f = self.encode(x)
            update_stats(stats, x, f.cpu(), self.decode(f).cpu())
        out = compute_stats(stats)
        return pd.DataFrame(
            {
                "checkpoint": self.names,
                "fve": out["fve"].float().numpy(),
                "mse": (stats["sse"] / stats["n"]).float().numpy(),
                "l0": out["l0"],
                "dead_fraction": float((out["frequency"] == 0).float().mean()),
            }
        )

    def decoder_norms(self, p: int = 2) -> pd.DataFrame:
        """Per feature (index ``feature``), one float column per checkpoint: ||W_dec^m[k]||_p in normalised
        units (p = 2, or 1).

        Examples
        --------
        >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=1, k=1))
        >>> with torch.no_grad():
        ...     cc.W_dec[:] = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])
        >>> cc.decoder_norms().loc[0].tolist(), cc.decoder_norms(p=1).loc[0].tolist()
        ([5.0, 1.0], [7.0, 1.0])
        """
        check_choice("p", p, (1, 2), "decoder_norms")
        n = self.W_dec.detach().float().cpu().norm(p=p, dim=-1)
        return pd.DataFrame(n.T.numpy(), index=pd.RangeIndex(self.d_sae, name="feature"), columns=self.names)

    # Deprecated in 0.2: the attribution metrics live in featdiff.metrics.crosscoder (a dictionary does not
    # import the metrics above it); these aliases keep old notebooks working for one release.
    def _deprecated_metric(self, name: str):

        warnings.warn(
            f"Crosscoder.{name}() is deprecated; use featdiff.{name}(crosscoder, ...).",
            DeprecationWarning,
            stacklevel=3,
        )
        from featdiff.metrics import crosscoder as metrics  # deprecated alias only: an upward import

        return getattr(metrics, name)

    def nrn(self, tuned: str, base: str = "base", p: int = 2) -> pd.Series:
        """Deprecated: ``featdiff.nrn(cc, tuned, base, p)``."""
        return self._deprecated_metric("nrn")(self, tuned=tuned, base=base, p=p)

    def mas(self, threshold: float = 0.5, p: int = 2) -> pd.DataFrame:
        """Deprecated: ``featdiff.mas(cc, threshold, p)``."""
        return self._deprecated_metric("mas")(self, threshold=threshold, p=p)

    def decoder_cosine(self, a: str, b: str) -> pd.Series:
        """Deprecated: ``featdiff.decoder_cosine(cc, a, b)``."""
        return self._deprecated_metric("decoder_cosine")(self, a, b)

    def latent_scaling(self, acts, features=None, tuned: str | None = None, base: str = "base", **kwargs):
        """Deprecated: ``featdiff.latent_scaling(cc, acts, ...)``."""
        return self._deprecated_metric("latent_scaling")(
            self, acts, features=features, tuned=tuned, base=base, **kwargs
        )

    # ----------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write cfg.json and the weights (safetensors) to the folder ``path``, atomically."""


        path = Path(path)
        cfg = {"featdiff_version": __version__, "format_version": constants.FORMAT_VERSION}
        cfg.update(self.cfg.to_dict())
        with atomic_dir(path) as tmp:
            tensors = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
            save_file(tensors, str(tmp / constants.CROSSCODER_WEIGHTS))
            write_json(tmp / constants.CROSSCODER_CFG, cfg)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Crosscoder:
        """Read a folder written by ``save``.

        Examples
        --------
        >>> import tempfile
        >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     back = Crosscoder.load(cc.save(f"{d}/cc"))
        >>> torch.equal(back.W_dec, cc.W_dec), back.names
        (True, ['base', 'rl'])
        """

        path = Path(path)
        cfg_file, w_file = path / constants.CROSSCODER_CFG, path / constants.CROSSCODER_WEIGHTS
        if not cfg_file.is_file() or not w_file.is_file():
            raise FeatdiffError(
                f"{path} is not a crosscoder folder (it needs {constants.CROSSCODER_CFG} and "
                f"{constants.CROSSCODER_WEIGHTS}); write one with Crosscoder.save."
            )
        try:
            raw = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FeatdiffError(
                f"Cannot read {cfg_file}: {e}. The folder is corrupted; save it again."
            ) from None
        if not isinstance(raw, dict):
            raise FeatdiffError(f"{cfg_file} must hold a JSON object; got {type(raw).__name__}.")
        cfg = CrosscoderConfig.from_dict(_migrate_cfg(raw, cfg_file))
        try:
            tensors = load_file(str(w_file))
        except Exception as e:  # truncated or corrupted safetensors
            raise FeatdiffError(
                f"Cannot read {w_file}: {e}. The folder is corrupted; save it again."
            ) from None
        cc = cls(cfg)
        expected = {k: tuple(v.shape) for k, v in cc.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if expected != got:
            raise FeatdiffError(
                f"{w_file} holds tensors {got} but its cfg.json implies {expected}; save it again."
            )
        cc.load_state_dict(tensors)
        return cc


def _migrate_cfg(raw: dict, where: Path) -> dict:
    """Turn an on-disk cfg.json of any known format version into CrosscoderConfig keys."""
    raw = dict(raw)
    raw.pop("featdiff_version", None)
    version = raw.pop("format_version", None)
    if version is None or version > constants.FORMAT_VERSION:
        raise FeatdiffError(
            f"{where} has format_version {version!r}; this featdiff reads versions <= {constants.FORMAT_VERSION}."
        )
    return raw  # version 1 is the current format: nothing to migrate yet


def _as_acts(acts, names: list[str]) -> ActivationSet:
    if isinstance(acts, Mapping) and not isinstance(acts, ActivationSet):
        acts = ActivationSet.from_tensors(acts)
    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(f"acts must be an ActivationSet or a dict of tensors; got {type(acts).__name__}.")
    missing = [n for n in names if n not in acts]
    if missing:
        raise FeatdiffError(
            f"The activations lack checkpoints {missing}; they have {acts.names}, need {names}."
        )
    return acts


# --------------------------------------------------------------------------- training
def train_crosscoder(
    acts: ActivationSet,
    d_sae: int | None = None,
    sparsity: str | None = None,
    k: int | None = None,
    seed: int | None = None,
    config: CrosscoderConfig | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    keep_checkpoint: bool = True,
    data_parallel=None,
    **overrides,
) -> Crosscoder:
    """Train one crosscoder on paired activations of every checkpoint in ``acts`` (in ``acts.names`` order).

    Without ``config`` the settings are ``d_sae`` (default 8 * d_in), ``sparsity`` (default "batchtopk"),
    ``k`` (default ``default_crosscoder_k(d_in, d_sae)``), ``lr`` (default ``default_crosscoder_lr(d_in)``),
    ``seed`` (default 0) and any CrosscoderConfig
    field passed as a keyword (``lr=1e-3``, ``n_samples=200_000``...). With ``config``, the config supplies
    every setting, arguments and keywords that are given still override it, and its ``names`` pick (and
    order) the checkpoints of ``acts``. The run length is ``n_steps`` if set, else ``n_epochs`` passes over
    the tokens if set, else ``n_samples`` rows (default 500,000; the data is cycled), as in
    ``train_saes``. The same seed gives identical weights.

    ``cc.diagnostics`` says how the run went: ``n_steps``, ``n_samples``, ``final_loss``,
    ``loss_settling`` (see ``loss_settling``), ``loss_settled``, ``dead_fraction``, ``n_dead``,
    ``n_eval_tokens``. A ``FeatdiffWarning`` says when the loss had not settled or more than
    ``max_dead_fraction`` of the latents are dead.

    ``device`` (default the CPU) is where it trains, e.g. "cuda"; each batch is moved there. The result is on the CPU in eval mode, with ``norm_scale`` and the inference threshold set.
    ``data_parallel`` (a ``featdiff.distributed.DataParallel``, under torchrun) trains each rank on its share
    of every batch with the batch-wide top-k and all-reduced gradients; ``featdiff.distributed`` passes it.

    ``checkpoint_dir`` makes the run resumable, as in ``train_saes``: every ``checkpoint_every`` steps (and
    at the end) the weights, optimizer state, dead-latent counters, losses and RNG state are saved there;
    the same call after a kill continues from the last save to the weights of an uninterrupted run.
    ``keep_checkpoint=False`` removes featdiff's checkpoint files after success.

    Examples
    --------
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    >>> cc = train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False)
    >>> cc.names, tuple(cc.W_dec.shape), list(cc.evaluate(acts).columns)
    (['base', 'rl'], (2, 16, 8), ['checkpoint', 'fve', 'mse', 'l0', 'dead_fraction'])
    """

    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(
            f"train_crosscoder needs an ActivationSet; got {type(acts).__name__}. "
            "Wrap tensors with ActivationSet.from_tensors({name: X})."
        )
    if acts.n_tokens < 2:
        raise FeatdiffError(
            f"train_crosscoder needs at least 2 tokens; the ActivationSet has {acts.n_tokens}."
        )
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise FeatdiffError(
            f"train_crosscoder: bad device {device!r} ({e}); use e.g. 'cpu' or 'cuda'."
        ) from None
    given = {"d_sae": d_sae, "sparsity": sparsity, "k": k, "seed": seed}
    given = {key: v for key, v in given.items() if v is not None}
    if config is None:
        base = {
            "names": acts.names,
            "d_in": acts.d_model,
            "d_sae": 8 * acts.d_model,
            "sparsity": "batchtopk",
            "seed": 0,
            "hook": acts.hook,
        }
    else:
        if not isinstance(config, CrosscoderConfig):
            raise FeatdiffError(f"config must be a CrosscoderConfig; got {type(config).__name__}.")
        base = config.to_dict()
    base.update(given)
    base.update(overrides)
    cfg = CrosscoderConfig.from_dict(base)
    acts = _as_acts(acts, cfg.names)
    if acts.d_model != cfg.d_in:
        raise FeatdiffError(
            f"The config says d_in={cfg.d_in} but the activations have d_model={acts.d_model}."
        )
    if acts.names != cfg.names:
        acts = acts.select(cfg.names)

    g = torch.Generator().manual_seed(cfg.seed)
    cc = Crosscoder(cfg, generator=g)
    _init_from_data(cc, acts)
    cc.to(dev)

    n_steps = cfg.n_steps_for(acts.n_tokens)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    decay_start = int(n_steps * (1 - cfg.lr_decay_fraction))
    warmup = max(1, int(n_steps * cfg.l1_warmup_fraction))
    since_fired = torch.zeros(cfg.d_sae, device=dev)
    aux_k = cfg.aux_k or max(1, cfg.d_in // 2)

    def batches(start: int):
        # the order is a function of the seed and the epoch: a resumed run skips to batch ``start``
        epoch, skip = divmod(start, max(1, acts.n_tokens // cfg.batch_size))
        while True:
            for b in acts.batches(
                cfg.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch, names=cfg.names
            ):
                if b[cfg.names[0]].shape[0] == cfg.batch_size or acts.n_tokens < cfg.batch_size:
                    if skip:
                        skip -= 1
                        continue
                    yield stack(b, cfg.names)
            epoch += 1

    losses = torch.zeros(n_steps)
    state = {"smoothed": None}
    run_ckpt, start = None, 0
    if checkpoint_dir is not None:
        settings = {"config": cfg.to_dict(), "n_tokens": acts.n_tokens, "data": data_fingerprint(acts, cfg.names)}
        run_ckpt = RunCheckpoint(checkpoint_dir, "train_crosscoder", settings, checkpoint_every, n_steps)
        start = run_ckpt.resume(lambda folder: _load_run_state(folder, cc, opt, since_fired, losses, state))
    it = batches(start)
    bar = progress_bar(
        range(start, n_steps), total=n_steps, initial=start, desc="crosscoder", disable=not progress, leave=False
    )
    for step in bar:
        if step >= decay_start and n_steps > decay_start:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (n_steps - step) / (n_steps - decay_start)
        x = next(it) if data_parallel is None else data_parallel.share(next(it))
        x = cc._normalise(x.to(dev))
        loss, parts = _loss(cc, x, step, warmup, since_fired, aux_k, data_parallel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if data_parallel is not None:
            parts["mse"] = data_parallel.reduce_gradients(cc.parameters(), parts["mse"])
        opt.step()
        losses[step] = parts["mse"]
        # the bar shows an exponential moving average of the reconstruction loss it trains on
        smoothed = state["smoothed"]
        state["smoothed"] = smoothed = parts["mse"] if smoothed is None else 0.95 * smoothed + 0.05 * parts["mse"]
        if progress and (step % 50 == 0 or step == n_steps - 1):
            bar.set_postfix(mse=f"{smoothed:.4g}")
        if run_ckpt is not None:
            run_ckpt.step_done(
                step + 1, lambda folder: _save_run_state(folder, cc, opt, since_fired, losses, state)
            )
    cc = cc.cpu().eval()
    cc.diagnostics = _diagnose(cc, acts, losses)
    _warn_diagnostics(cc.diagnostics, cfg)
    if run_ckpt is not None and not keep_checkpoint:
        run_ckpt.clear()
    return cc


def _save_run_state(
    folder: Path, cc: Crosscoder, opt, since_fired: Tensor, losses: Tensor, state: dict
) -> None:
    """What a resumed ``train_crosscoder`` needs: weights and buffers, optimizer, counters, losses, RNG."""
    weights = {k: v.detach().cpu().contiguous() for k, v in cc.state_dict().items()}
    save_file(weights, str(folder / "crosscoder.safetensors"))
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "since_fired": since_fired.cpu(),
            "losses": losses,
            "smoothed": state["smoothed"],
            "torch_rng": torch.get_rng_state(),
        },
        folder / "trainer_state.pt",
    )


def _load_run_state(
    folder: Path, cc: Crosscoder, opt, since_fired: Tensor, losses: Tensor, state: dict
) -> None:
    dev = since_fired.device
    cc.load_state_dict(load_file(str(folder / "crosscoder.safetensors"), device=str(dev)))
    saved = torch.load(folder / "trainer_state.pt", map_location=dev)
    opt.load_state_dict(saved["optimizer"])
    since_fired.copy_(saved["since_fired"])
    losses.copy_(saved["losses"])
    state["smoothed"] = saved["smoothed"]
    torch.set_rng_state(saved["torch_rng"].cpu())


def loss_settling(losses: Float[Tensor, " n_steps"], window: float = 0.1, end: int | None = None) -> float:
    """Relative fall of a training loss over its last ``window`` fraction of steps before step ``end``
    (default: the last step): (a - b) / a, with a and b the mean loss of the window's first and second
    halves (at least 10 steps in all; NaN when there are fewer). A settled run gives about 0 (minibatch
    noise); a run still learning gives > 0.

    Examples
    --------
    >>> round(loss_settling(torch.linspace(2.0, 1.0, 100)), 3)  # still falling: last 10 steps drop 5 %
    0.047
    >>> loss_settling(torch.ones(100)), math.isnan(loss_settling(torch.ones(5)))
    (0.0, True)
    """
    losses = losses[: len(losses) if end is None else end]
    n = len(losses)
    w = max(10, int(round(window * n)))
    if n < w:
        return float("nan")
    tail = losses[n - w :].double()
    a, b = tail[: w // 2].mean(), tail[w // 2 :].mean()
    return float((a - b) / a.clamp(min=1e-12))


@torch.no_grad()
def _diagnose(cc: Crosscoder, acts: ActivationSet, losses: Tensor, max_tokens: int = 1 << 18) -> dict:
    """n_steps, final_loss (mean of the last 10 % of steps), loss_settling (over the last settle_window of
    the steps before the lr decay), loss_settled, dead_fraction (latents that never fire on the first
    ``max_tokens`` training tokens, inference rule)."""
    cfg = cc.cfg
    n = len(losses)
    # Judge the constant-lr phase: during the final decay the loss falls because the lr anneals.
    decay_start = int(n * (1 - cfg.lr_decay_fraction))
    drop = loss_settling(losses, cfg.settle_window, end=decay_start if decay_start >= 10 else None)
    sub = acts if acts.n_tokens <= max_tokens else acts.subset(slice(0, max_tokens))
    fired = torch.zeros(cc.d_sae, dtype=torch.bool)
    for b in sub.batches(4096, shuffle=False, names=cc.names):
        fired |= (cc.encode(stack(b, cc.names)) != 0).any(0)
    return {
        "n_steps": n,
        "n_samples": n * min(cfg.batch_size, acts.n_tokens),
        "final_loss": float(losses[n - max(1, n // 10) :].mean()),
        "loss_settling": drop,
        "loss_settled": bool(drop <= cfg.settle_tolerance),  # NaN (too short to tell) is not settled
        "dead_fraction": float((~fired).float().mean()),
        "n_dead": int((~fired).sum()),
        "n_eval_tokens": sub.n_tokens,
    }


def _warn_diagnostics(diag: dict, cfg: CrosscoderConfig) -> None:
    if not diag["loss_settled"]:
        if math.isnan(diag["loss_settling"]):
            how = f"ran only {diag['n_steps']} steps, too few to tell whether its loss settled"
        else:
            how = (
                f"had not settled: its reconstruction loss still fell by {100 * diag['loss_settling']:.1f} % "
                f"over the last {100 * cfg.settle_window:.0f} % of its steps before the lr decay "
                f"({diag['n_steps']} steps in all; tolerance {100 * cfg.settle_tolerance:.1f} %)"
            )
        warnings.warn(
            f"train_crosscoder {how}. Train longer (raise n_samples, now {diag['n_samples']} rows, "
            "or n_steps) before reading its features.",
            FeatdiffWarning,
            stacklevel=3,
        )
    if diag["dead_fraction"] > cfg.max_dead_fraction:
        warnings.warn(
            f"train_crosscoder left {diag['n_dead']} of {cfg.d_sae} latents "
            f"({100 * diag['dead_fraction']:.0f} %) dead on {diag['n_eval_tokens']} training tokens "
            f"(more than max_dead_fraction={cfg.max_dead_fraction}). Lower d_sae (the data may hold fewer "
            "features), train longer, or lower dead_steps_threshold so the auxiliary loss revives them "
            "sooner; dead latents are counted, not scored.",
            FeatdiffWarning,
            stacklevel=3,
        )


@torch.no_grad()
def _init_from_data(cc: Crosscoder, acts: ActivationSet) -> None:
    """Estimate norm_scale (E||s_m a^m||^2 = d_in) and start b_dec at the mean normalised activation."""
    sumsq = torch.zeros(cc.n_models, dtype=torch.float64)
    total = torch.zeros(cc.n_models, cc.d_in, dtype=torch.float64)
    for b in acts.batches(65536, shuffle=False, names=cc.names):
        x = stack(b, cc.names).double()
        sumsq += x.pow(2).sum((0, 2))
        total += x.sum(0)
    n = acts.n_tokens
    if cc.cfg.normalise:
        mean_sq = (sumsq / n).clamp(min=1e-12)
        cc.norm_scale.copy_((cc.d_in / mean_sq).sqrt().float())
    cc.b_dec.copy_((total / n).float() * cc.norm_scale[:, None])


def _loss(cc: Crosscoder, x: Tensor, step: int, warmup: int, since_fired: Tensor, aux_k: int, data_parallel=None):
    """Training loss on normalised activations x: squared error summed over checkpoints and d_in (with
    ``data_parallel``, x is this rank's share of the batch and the batch top-k spans the ranks)."""
    cfg = cc.cfg
    pre = cc._pre(x)
    acts = torch.relu(pre)
    if cfg.sparsity == "batchtopk":
        f, min_kept = cc._batchtopk(acts, data_parallel)
    else:
        f, min_kept = acts, None
    x_hat = torch.einsum("bs,msd->bmd", f, cc.W_dec) + cc.b_dec
    residual = x - x_hat
    mse = residual.pow(2).sum((1, 2)).mean()
    parts = {"mse": float(mse.detach())}
    loss = mse
    with torch.no_grad():
        fired = (f > 0).any(0)
        if data_parallel is not None:
            fired = data_parallel.any(fired)
        since_fired += 1
        since_fired[fired] = 0
    if cfg.sparsity == "l1":
        lam = cfg.l1_coefficient * min(1.0, (step + 1) / warmup)
        l1 = (f * cc._weighted_norms()).sum(-1).mean()
        loss = loss + lam * l1
        parts["l1"] = float(l1.detach())
    else:
        with torch.no_grad():
            if cc.threshold < 0:
                cc.threshold.copy_(min_kept)
            else:
                mom = cfg.threshold_momentum
                cc.threshold.mul_(mom).add_((1 - mom) * min_kept)
        dead = since_fired > cfg.dead_steps_threshold
        n_dead = int(dead.sum())
        if n_dead > 0 and cfg.aux_k_coefficient > 0:
            k_aux = min(aux_k, n_dead)
            scale = min(n_dead / aux_k, 1.0)
            dead_pre = torch.where(dead[None], acts, torch.full_like(acts, -torch.inf))
            top = dead_pre.topk(k_aux, dim=-1, sorted=False)
            aux_f = torch.zeros_like(acts).scatter(-1, top.indices, top.values.clamp(min=0))
            aux_hat = torch.einsum("bs,msd->bmd", aux_f, cc.W_dec)
            aux = (aux_hat - residual.detach()).pow(2).sum((1, 2)).mean()
            loss = loss + cfg.aux_k_coefficient * scale * aux
            parts["aux"] = float(aux.detach())
    return loss, parts
