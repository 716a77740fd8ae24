"""What a dictionary (an SAE or a crosscoder) does to activations: unit decoder rows, codes, firing
frequencies, L0 and the fraction of variance explained.

One streamed implementation serves every dictionary: ``update_stats`` / ``compute_stats`` accumulate, batch
by batch, the firing counts and the sums behind the fraction of variance explained (torchmetrics'
update/compute pattern), so codes are never all held in memory and batch and streaming results agree.
Anything with ``encode``, ``decode`` and ``W_dec`` works: a sae-lens SAE, or a ``Crosscoder`` on stacked
rows ``(batch, n_models, d_in)`` (its variance explained is then per checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.activations.shards import ActivationColumn
from featdiff.errors import FeatdiffError


def unit_decoder(dictionary) -> Float[Tensor, "d_sae d_in"]:
    """Unit-normalised decoder rows (float32, CPU, detached) of an SAE (anything with a 2-d ``W_dec``) or
    of a (d_sae, d_in) tensor.

    Examples
    --------
    >>> unit_decoder(2 * torch.eye(2))
    tensor([[1., 0.],
            [0., 1.]])
    """
    W = dictionary if isinstance(dictionary, Tensor) else getattr(dictionary, "W_dec", None)
    if not isinstance(W, Tensor) or W.ndim != 2:
        raise FeatdiffError(
            "A dictionary must be an SAE with a 2-d W_dec (d_sae, d_in) or such a tensor; "
            f"got {type(dictionary).__name__}."
        )
    W = W.detach().float().cpu()
    bad = ~torch.isfinite(W).all(dim=1)
    if bad.any():
        raise FeatdiffError(
            f"The dictionary's decoder has NaN or infinite values in {int(bad.sum())} of {len(W)} rows "
            f"(e.g. row {int(bad.nonzero()[0])}); retrain it or drop those features."
        )
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


# --------------------------------------------------------------------------- streamed statistics
def new_stats(d_sae: int, d_in: int, n_models: int | None = None) -> dict:
    """Empty accumulators for ``update_stats``: ``n_models`` None for an SAE, else per checkpoint."""
    shape = () if n_models is None else (n_models,)
    z = torch.zeros
    return {
        "n": 0,
        "fired": z(d_sae, dtype=torch.float64),
        "energy": z(d_sae, dtype=torch.float64),
        "sse": z(shape, dtype=torch.float64),
        "sum": z((*shape, d_in), dtype=torch.float64),
        "sumsq": z(shape, dtype=torch.float64),
        "reconstructed": False,
    }


def update_stats(
    stats: dict,
    x: Float[Tensor, "batch *models d_in"],
    codes: Float[Tensor, "batch d_sae"],
    x_hat: Float[Tensor, "batch *models d_in"] | None = None,
) -> None:
    """Add one batch: firing counts from ``codes`` and, with ``x_hat``, the variance-explained sums."""
    stats["n"] += x.shape[0]
    stats["fired"] += (codes != 0).sum(0).double().cpu()
    stats["energy"] += codes.double().pow(2).sum(0).cpu()
    if x_hat is not None:
        x64, reduce = x.double(), (0, x.ndim - 1)
        stats["sse"] += (x64 - x_hat.double()).pow(2).sum(reduce).cpu()
        stats["sum"] += x64.sum(0).cpu()
        stats["sumsq"] += x64.pow(2).sum(reduce).cpu()
        stats["reconstructed"] = True


def compute_stats(stats: dict) -> dict:
    """``frequency`` (per feature, float32), ``l0`` (mean active features per row), ``fve`` (fraction of
    variance explained, a float for an SAE or a float64 tensor per checkpoint; NaN where the rows have no
    variance or nothing was reconstructed) and ``energy`` (per feature, the sum of its squared codes)."""
    n = stats["n"]
    if n == 0:
        raise FeatdiffError("No rows were streamed through the dictionary: the activations are empty.")
    total = stats["sumsq"] - stats["sum"].pow(2).sum(-1) / n
    if stats["reconstructed"]:
        fve = torch.where(total > 0, 1.0 - stats["sse"] / total.clamp_min(1e-300), torch.nan)
    else:
        fve = torch.full_like(total, float("nan"))
    return {
        "frequency": (stats["fired"] / n).float(),
        "l0": float(stats["fired"].sum() / n),
        "fve": float(fve) if fve.ndim == 0 else fve,
        "energy": stats["energy"].clone(),
    }


# --------------------------------------------------------------------------- SAEs
def _device_dtype(dictionary) -> tuple[torch.device, torch.dtype]:
    p = next(iter(dictionary.parameters()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _check_x(sae, x, where: str) -> Tensor | ActivationColumn:
    if not isinstance(x, (Tensor, ActivationColumn)) or x.ndim != 2:
        raise FeatdiffError(f"{where} needs x of shape (n_tokens, d_in); got {getattr(x, 'shape', type(x))}.")
    d_in = sae.W_dec.shape[1]
    if x.shape[1] != d_in:
        raise FeatdiffError(f"{where}: x has {x.shape[1]} columns but the SAE has d_in={d_in}.")
    if x.shape[0] == 0:
        raise FeatdiffError(f"{where}: x is empty (0 rows).")
    return x


def stream_codes(
    sae, x: Tensor | ActivationColumn, batch_size: int = 4096, where: str = "stream_codes"
) -> Iterator[tuple[Tensor, Tensor]]:
    """(rows on the dictionary's device and dtype, their codes), one batch of ``x`` at a time, no grad.
    ``x`` may be an on-disk ``ActivationColumn`` (``acts.column(name)``): it is read chunk by chunk."""
    x = _check_x(sae, x, where)
    dev, dt = _device_dtype(sae)
    if isinstance(x, Tensor):
        chunks = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        chunks = x.chunks(batch_size)
    with torch.no_grad():
        for xb in chunks:
            xb = xb.to(dev, dt)
            yield xb, sae.encode(xb)




@torch.no_grad()
def best_match(
    rows: Float[Tensor, "n d_in"], against: Float[Tensor, "m d_in"], chunk: int = 2048
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Per row of ``rows``, the largest dot product with a row of ``against`` and that row's index (cosines
    for unit rows), ``chunk`` rows at a time in float32: the (n, m) matrix is never held whole (32,768 x
    98,304 in float64 would be 26 GB), and float32 cosines are exact to ~1e-7, far below any threshold.

    Examples
    --------
    >>> best_match(torch.eye(3)[:2], torch.tensor([[0.0, 1.0, 0.0], [0.6, 0.8, 0.0]]))
    (tensor([0.6000, 1.0000]), tensor([1, 0]))
    """
    B = against.detach().float()
    vals, idx = [], []
    for i in range(0, len(rows), chunk):
        v, j = (rows[i : i + chunk].detach().float() @ B.T).max(1)
        vals.append(v)
        idx.append(j)
    if not vals:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(vals), torch.cat(idx)


@torch.no_grad()
def cofiring(
    ref,
    ref_x: Float[Tensor, "n_tokens d_in"],
    tgt,
    tgt_x: Float[Tensor, "n_tokens d_in"],
    rows: Tensor,
    batch_size: int = 4096,
) -> dict[str, Tensor]:
    """Firing counts of two dictionaries on paired tokens (row i of ``ref_x`` and of ``tgt_x`` come from the
    same token), conditioned on the reference features ``rows``, in one streamed pass.

    Returns float64 counts: ``n`` (tokens), ``ref_all`` (d_ref) and ``tgt_all`` (d_tgt) firing counts,
    ``on`` (len(rows)): tokens where each of ``rows`` fires, ``ref_on`` (len(rows), d_ref) and ``tgt_on``
    (len(rows), d_tgt): tokens where it fires together with each reference / target feature; ``ref_x_on``
    / ``tgt_x_on`` (len(rows), d_in): the sums of the activations on the tokens where each of ``rows``
    fires, and ``ref_x_all`` / ``tgt_x_all`` (d_in) over all tokens. Counts are
    summed per batch in float32 (exact below 2**24 tokens per batch) and across batches in float64.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> sae = sae_from_dictionary(torch.eye(2), k=1)
    >>> c = cofiring(sae, torch.tensor([[1.0, 0], [0, 1.0]]), sae, torch.tensor([[0, 1.0], [0, 1.0]]), torch.tensor([0]))
    >>> c["on"].tolist(), c["tgt_on"].tolist()
    ([1.0], [[0.0, 1.0]])
    """
    rows = torch.as_tensor(rows, dtype=torch.long)
    if len(ref_x) != len(tgt_x):
        raise FeatdiffError(f"cofiring needs paired tokens; got {len(ref_x)} and {len(tgt_x)} rows.")
    d_ref, d_tgt = ref.W_dec.shape[0], tgt.W_dec.shape[0]
    out = {
        "n": torch.zeros((), dtype=torch.float64),
        "ref_all": torch.zeros(d_ref, dtype=torch.float64),
        "tgt_all": torch.zeros(d_tgt, dtype=torch.float64),
        "on": torch.zeros(len(rows), dtype=torch.float64),
        "ref_on": torch.zeros(len(rows), d_ref, dtype=torch.float64),
        "tgt_on": torch.zeros(len(rows), d_tgt, dtype=torch.float64),
        "ref_x_on": torch.zeros(len(rows), ref_x.shape[1], dtype=torch.float64),
        "tgt_x_on": torch.zeros(len(rows), tgt_x.shape[1], dtype=torch.float64),
        "ref_x_all": torch.zeros(ref_x.shape[1], dtype=torch.float64),
        "tgt_x_all": torch.zeros(tgt_x.shape[1], dtype=torch.float64),
    }
    streams = zip(
        stream_codes(ref, ref_x, batch_size, "cofiring"), stream_codes(tgt, tgt_x, batch_size, "cofiring"), strict=True
    )
    for (xr, fr), (xt, ft) in streams:
        zr, zt = (fr != 0).float().cpu(), (ft != 0).float().cpu()
        xr, xt = xr.float().cpu(), xt.float().cpu()
        zs = zr[:, rows]
        out["n"] += len(zr)
        out["ref_all"] += zr.sum(0).double()
        out["tgt_all"] += zt.sum(0).double()
        out["on"] += zs.sum(0).double()
        out["ref_on"] += (zs.T @ zr).double()
        out["tgt_on"] += (zs.T @ zt).double()
        out["ref_x_on"] += (zs.T @ xr).double()
        out["tgt_x_on"] += (zs.T @ xt).double()
        out["ref_x_all"] += xr.sum(0).double()
        out["tgt_x_all"] += xt.sum(0).double()
    return out


@torch.no_grad()
def encode(sae, x: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096) -> Float[Tensor, "n_tokens d_sae"]:
    """Feature activations of ``x`` (float32, CPU), computed in batches on the SAE's device.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> encode(sae_from_dictionary(torch.eye(2), k=1), torch.tensor([[3.0, 1.0]]))
    tensor([[3., 0.]])
    """
    return torch.cat([f.float().cpu() for _, f in stream_codes(sae, x, batch_size, "encode")])


def sae_stats(
    sae, x: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096, reconstruct: bool = True, where: str = "sae_stats"
) -> dict:
    """``compute_stats`` of ``sae`` on ``x`` in one streamed pass (see the module docstring)."""
    stats = new_stats(sae.W_dec.shape[0], sae.W_dec.shape[1])
    for xb, f in stream_codes(sae, x, batch_size, where):
        update_stats(stats, xb, f, sae.decode(f) if reconstruct else None)
    return compute_stats(stats)


def code_stats(sae, x: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096) -> tuple[Tensor, float]:
    """(firing frequency per feature, fraction of variance explained) of ``sae`` on ``x``, in one pass.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> freq, fve = code_stats(sae_from_dictionary(torch.eye(2), k=2), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    >>> freq.tolist(), fve
    ([0.5, 0.5], 1.0)
    """
    s = sae_stats(sae, x, batch_size, where="code_stats")
    return s["frequency"], s["fve"]


def scored_features(
    sae, x: Float[Tensor, "n_tokens d_in"], min_contribution: float = 0.0, batch_size: int = 4096
) -> tuple[Tensor, float, Tensor]:
    """(firing frequency per feature, fraction of variance explained, scored mask) of ``sae`` on ``x``, in one
    pass. A feature is live when it fires at least once, and scored when it is live and its share of the
    decoded energy (the sum over tokens of (code * ||decoder row||)^2, over that of all features) is at
    least ``min_contribution`` times the mean share of the features that fire (1 / their number): a feature
    that fires a handful of times, or often but negligibly, is an unused latent (status ``faint``), not a
    feature of the activations, and is not scored (docs/design.md, "Definitions").

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.01]])
    >>> freq, fve, live = scored_features(sae_from_dictionary(torch.eye(3), k=1), x, min_contribution=0.05)
    >>> freq.tolist(), live.tolist()
    ([0.3333333432674408, 0.3333333432674408, 0.3333333432674408], [True, True, False])
    """
    s = sae_stats(sae, x, batch_size, where="scored_features")
    freq = s["frequency"]
    fired = freq > 0
    live = fired.clone()
    if min_contribution > 0 and fired.any():
        contribution = s["energy"] * sae.W_dec.detach().double().cpu().pow(2).sum(1)
        share = contribution / contribution.sum().clamp_min(1e-300)
        live &= share >= min_contribution / int(fired.sum())
    return freq, s["fve"], live


def firing_frequency(dictionary, x, batch_size: int = 4096) -> Float[Tensor, " d_sae"]:
    """Fraction of the tokens on which each feature fires (code != 0), float32: for an SAE, of the rows of
    ``x`` (a tensor or an ``ActivationColumn``); for a crosscoder, of the paired tokens of ``x`` (an
    ActivationSet or a dict of tensors holding its checkpoints), one shared code per token.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> firing_frequency(sae_from_dictionary(torch.eye(2), k=1), torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    tensor([1., 0.])
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=3, k=1))
    >>> firing_frequency(cc, {"base": torch.randn(10, 2), "rl": torch.randn(10, 2)}).shape
    torch.Size([3])
    """
    if hasattr(dictionary, "stream_codes"):  # a crosscoder streams its own paired batches
        stats = new_stats(dictionary.d_sae, dictionary.d_in, dictionary.n_models)
        for xb, f in dictionary.stream_codes(x, batch_size):
            update_stats(stats, xb, f)
        return compute_stats(stats)["frequency"]
    return sae_stats(dictionary, x, batch_size, reconstruct=False, where="firing_frequency")["frequency"]


def l0(sae, x: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096) -> float:
    """Mean number of active features per row of ``x``.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> l0(sae_from_dictionary(torch.eye(3), k=2), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    1.5
    """
    return sae_stats(sae, x, batch_size, reconstruct=False, where="l0")["l0"]


def explained_variance(sae, x: Float[Tensor, "n_tokens d_in"], batch_size: int = 4096) -> float:
    """Fraction of variance explained: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> explained_variance(sae_from_dictionary(torch.eye(2), k=2), x)
    1.0
    >>> round(explained_variance(sae_from_dictionary(torch.eye(2), k=1), torch.tensor([[1.0, 0.5], [0.0, 0.0]])), 3)
    0.6
    """
    fve = sae_stats(sae, x, batch_size, where="explained_variance")["fve"]
    if fve != fve:
        raise FeatdiffError("explained_variance is undefined: x has zero variance (all rows equal).")
    return fve
