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
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from featdiff import constants
from featdiff._version import __version__
from featdiff.activations.activations import ActivationSet
from featdiff.core.io import atomic_dir, write_json
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.stats import compute_stats, new_stats, update_stats
from featdiff.errors import FeatdiffError, check_choice


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

    def stream_codes(
        self, acts: ActivationSet | Mapping[str, Float[Tensor, "n_tokens d_in"]], batch_size: int = 4096
    ) -> Iterator[tuple[Float[Tensor, "batch n_models d_in"], Float[Tensor, "batch d_sae"]]]:
        """(stacked raw activations, their codes), one batch of ``acts`` at a time in token order, no grad
        (``acts``: an ActivationSet or a dict holding at least ``cc.names``); the crosscoder's counterpart
        of featdiff.dictionaries.stats.stream_codes."""
        acts = as_acts(acts, self.names)
        for b in acts.batches(batch_size, shuffle=False, names=self.names):
            x = stack(b, self.names)
            with torch.no_grad():
                f = self.encode(x)
            yield x, f

    @torch.no_grad()
    def encode_acts(
        self, acts: ActivationSet | Mapping[str, Float[Tensor, "n_tokens d_in"]], batch_size: int = 4096
    ) -> Float[Tensor, "n_tokens d_sae"]:
        """Codes of every token of ``acts`` (an ActivationSet or a dict holding at least ``cc.names``)."""
        return torch.cat([f.cpu() for _, f in self.stream_codes(acts, batch_size)])

    # ----------------------------------------------------------------- evaluation and attribution
    @torch.no_grad()
    def evaluate(
        self, acts: ActivationSet | Mapping[str, Float[Tensor, "n_tokens d_in"]], batch_size: int = 4096
    ) -> pd.DataFrame:
        """Per checkpoint: ``fve`` (fraction of variance explained), ``mse`` (per token, raw units), and
        the shared-code ``l0`` (mean active features per token) and ``dead_fraction`` (never fired)."""
        stats = new_stats(self.d_sae, self.d_in, self.n_models)
        for x, f in self.stream_codes(acts, batch_size):
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


def as_acts(acts, names: list[str]) -> ActivationSet:
    """``acts`` (an ActivationSet or a dict of tensors) as an ActivationSet holding every checkpoint of ``names``."""
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



def is_crosscoder(dictionary) -> bool:
    """Whether ``dictionary`` is a crosscoder (one code shared by named checkpoints) rather than an SAE.

    Examples
    --------
    >>> is_crosscoder(Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=4, d_sae=8, k=2)))
    True
    """
    return hasattr(dictionary, "encode_acts") and hasattr(dictionary, "names")

