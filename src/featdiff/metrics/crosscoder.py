"""Which checkpoint does each crosscoder feature belong to? Decoder-norm attribution and latent scaling.

All decoder norms are taken in the crosscoder's *normalised* units (each checkpoint's activations scaled
so that E||a||^2 = d_in), so a checkpoint with a larger residual stream does not look more important.
n_k^m = ||W_dec^m[k]||_p (p = 2 by default, 1 available).

- ``nrn`` (relative decoder norm): n_k^T / (n_k^base + n_k^T), 0 = base-only, 0.5 = shared, 1 = T-only.
- ``mas`` (model attribution score): MAS_k^m = n_k^m / sum_m' n_k^m'; a feature is m-specific when
  MAS_k^m > threshold (0.5), else "shared".
- ``latent_scaling`` (Minder et al. 2025): does the *other* checkpoint actually carry a feature that the
  norms call T-specific?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.dictionaries.crosscoder.model import Crosscoder, as_acts, stack
from featdiff.dictionaries.stats import firing_frequency as stats_firing_frequency
from featdiff.errors import FeatdiffError

MAS_THRESHOLD = 0.5  # a feature is a checkpoint's when its MAS there is above this, else "shared"


def _norms(cc: Crosscoder, p: int) -> Float[Tensor, "n_models d_sae"]:
    return torch.from_numpy(cc.decoder_norms(p).to_numpy().T.copy())


def _index(cc: Crosscoder) -> pd.Index:
    return pd.RangeIndex(cc.d_sae, name="feature")


def decoder_norms(cc: Crosscoder, p: int = 2) -> pd.DataFrame:
    """Per feature, one column per checkpoint: ||W_dec^m[k]||_p (normalised units); see ``Crosscoder.decoder_norms``."""
    return cc.decoder_norms(p)


def nrn(
    cc: Crosscoder,
    tuned: str,
    base: str = "base",
    p: int = 2,
    acts: ActivationSet | Mapping[str, Tensor] | None = None,
) -> pd.Series:
    """Relative decoder norm n^tuned / (n^base + n^tuned) per feature (Series ``nrn``, index ``feature``).

    Features with both norms zero, and (when ``acts`` are given) features that never fire, are NaN.

    Examples
    --------
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=1, k=1))
    >>> with torch.no_grad():
    ...     cc.W_dec[:] = torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]]])
    >>> float(nrn(cc, tuned="rl").loc[0])
    0.75
    """
    i_t = cc.model_index(tuned, "tuned")
    i_b = cc.model_index(base, "base")
    if i_t == i_b:
        raise FeatdiffError(f"nrn needs two different checkpoints; got tuned=base={base!r}.")
    n = _norms(cc, p).double()
    denom = n[i_b] + n[i_t]
    out = torch.where(denom > 0, n[i_t] / denom.clamp(min=1e-30), torch.full_like(denom, float("nan")))
    s = pd.Series(out.numpy(), index=_index(cc), name="nrn")
    if acts is not None:
        s[dead_features(cc, acts).to_numpy()] = np.nan
    return s


def mas(
    cc: Crosscoder,
    threshold: float = MAS_THRESHOLD,
    p: int = 2,
    acts: ActivationSet | Mapping[str, Tensor] | None = None,
) -> pd.DataFrame:
    """Model attribution scores per feature (index ``feature``).

    Columns: one float column per checkpoint, MAS_k^m = n_k^m / sum_m' n_k^m' (rows sum to 1);
    ``dominant`` (str, the argmax checkpoint); ``category`` (str, ``dominant`` when its MAS > threshold,
    else ``"shared"``). With ``acts``, also ``dead`` (bool, never fired) and category ``"dead"`` for those.

    Examples
    --------
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl", "sft"], d_in=1, d_sae=2, k=1))
    >>> with torch.no_grad():
    ...     cc.W_dec[:, :, 0] = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 3.0]])
    >>> mas(cc).round(3)[["sft", "dominant", "category"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'sft': 0.333, 'dominant': 'base', 'category': 'shared'},
     {'sft': 0.75, 'dominant': 'sft', 'category': 'sft'}]
    """
    if not 0 <= threshold <= 1:
        raise FeatdiffError(f"The 'threshold' parameter of mas must be in [0, 1]; got {threshold!r}.")
    n = _norms(cc, p).double()
    total = n.sum(0)
    share = torch.where(total > 0, n / total.clamp(min=1e-30), torch.full_like(n, float("nan")))
    df = pd.DataFrame(share.T.numpy(), index=_index(cc), columns=cc.names)
    best = share.nan_to_num(-1.0).argmax(0)
    df["dominant"] = [cc.names[i] for i in best.tolist()]
    top = share.nan_to_num(-1.0).max(0).values.numpy()
    df["category"] = np.where(top > threshold, df["dominant"].to_numpy(), "shared").astype(object)
    if acts is not None:
        dead = dead_features(cc, acts).to_numpy()
        df["dead"] = dead
        df.loc[dead, "category"] = "dead"
    return df


def decoder_cosine(cc: Crosscoder, a: str, b: str) -> pd.Series:
    """Cosine between checkpoint ``a``'s and ``b``'s decoder rows, per feature (NaN where a row is zero).

    Examples
    --------
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=1, k=1))
    >>> with torch.no_grad():
    ...     cc.W_dec[:] = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    >>> round(float(decoder_cosine(cc, "base", "rl").loc[0]), 4)
    0.7071
    """
    wa = cc.W_dec[cc.model_index(a, "a")].detach().double()
    wb = cc.W_dec[cc.model_index(b, "b")].detach().double()
    denom = wa.norm(dim=-1) * wb.norm(dim=-1)
    cos = torch.where(
        denom > 0, (wa * wb).sum(-1) / denom.clamp(min=1e-30), torch.full_like(denom, float("nan"))
    )
    return pd.Series(cos.numpy(), index=_index(cc), name=f"cosine_{a}_{b}")


def dead_features(cc: Crosscoder, acts: ActivationSet | Mapping[str, Tensor]) -> pd.Series:
    """True for features that never fire on ``acts`` (Series ``dead``, index ``feature``)."""
    return pd.Series((stats_firing_frequency(cc, acts) == 0).numpy(), index=_index(cc), name="dead")


# --------------------------------------------------------------------------- latent scaling
def latent_scaling(
    cc: Crosscoder,
    acts: ActivationSet | Mapping[str, Tensor],
    features: Sequence[int] | None = None,
    tuned: str | None = None,
    base: str = "base",
    error_threshold: float = 0.5,
    reconstruction_threshold: float = 0.5,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Latent scaling (Minder et al. 2025): is a ``tuned``-specific feature really absent from ``base``?

    For feature k with tuned decoder row d = W_dec^T[k] and codes f_k (normalised units), fit
    ``beta = argmin sum_t ||beta f_k(t) d - y(t)||^2 = sum_t f_k(t) <d, y(t)> / (||d||^2 sum_t f_k(t)^2)``
    against four targets, as in the paper's code (science-of-finetuning):

    - error, model m in {base, tuned}: y = a^m - (â^m - f_k d^m_k), the reconstruction error with feature
      k's own contribution to checkpoint m added back (how much of d the dictionary leaves unexplained);
    - reconstruction, model m: y = â^m, the full reconstruction (how much of d the other features carry).

    ``nu_error = beta_error_base / beta_error_tuned`` (high: "Complete Shrinkage", the base has the
    direction but the sparsity penalty shrank its base decoder to zero) and ``nu_reconstruction =
    beta_reconstruction_base / beta_reconstruction_tuned`` (high: "Latent Decoupling", other features
    reconstruct it in the base). ``sparsity_artefact`` is ``nu_error > error_threshold or
    nu_reconstruction > reconstruction_threshold``; the rest are genuinely tuned-specific.

    ``features`` defaults to the features whose MAS category is ``tuned``; ``tuned`` defaults to the only
    checkpoint other than ``base`` (required with more than two). Columns: ``feature`` (int),
    ``n_active`` (int, tokens where it fires), ``beta_error_base``, ``beta_error_tuned``,
    ``beta_reconstruction_base``, ``beta_reconstruction_tuned``, ``nu_error``, ``nu_reconstruction``
    (floats, NaN when the feature never fires) and ``sparsity_artefact`` (bool).

    Examples
    --------
    >>> from featdiff.dictionaries.crosscoder import Crosscoder, CrosscoderConfig
    >>> cc = Crosscoder(CrosscoderConfig(names=["base", "rl"], d_in=2, d_sae=1, k=1, normalise=False))
    >>> with torch.no_grad():  # feature 0 reads rl's first unit and writes it only in rl
    ...     cc.W_enc[:] = 0.0
    ...     cc.W_enc[1, 0, 0] = 1.0
    ...     cc.W_dec[:] = 0.0
    ...     cc.W_dec[1, 0, 0] = 1.0
    >>> x = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    >>> df = latent_scaling(cc, {"base": x, "rl": x}, features=[0], tuned="rl")
    >>> df[["nu_error", "sparsity_artefact"]].to_dict("records")  # base has the direction: an artefact
    [{'nu_error': 1.0, 'sparsity_artefact': True}]
    """
    if tuned is None:
        others = [n for n in cc.names if n != base]
        if len(others) != 1:
            raise FeatdiffError(
                f"latent_scaling needs 'tuned' when the crosscoder has more than two checkpoints; "
                f"pick one of {others}."
            )
        tuned = others[0]
    i_t, i_b = cc.model_index(tuned, "tuned"), cc.model_index(base, "base")
    if i_t == i_b:
        raise FeatdiffError(f"latent_scaling needs two different checkpoints; got tuned=base={base!r}.")
    if features is None:
        cat = mas(cc)["category"]
        feats = torch.tensor(cat.index[cat == tuned].to_numpy(), dtype=torch.long)
    else:
        feats = torch.as_tensor(list(features), dtype=torch.long)
        if feats.numel() and (feats.min() < 0 or feats.max() >= cc.d_sae):
            raise FeatdiffError(f"features must be in [0, {cc.d_sae}); got {features!r}.")
    acts = as_acts(acts, cc.names)

    W = cc.W_dec.detach()
    d = W[i_t, feats]  # (K, d_in): the tuned decoder rows being fitted
    d_sq = d.pow(2).sum(-1).double()
    self_dot = {i: (d * W[i, feats]).sum(-1).double() for i in (i_b, i_t)}  # <d, d^m_k>
    num = {key: torch.zeros(len(feats), dtype=torch.float64) for key in ("eb", "et", "rb", "rt")}
    f_sq = torch.zeros(len(feats), dtype=torch.float64)
    n_active = torch.zeros(len(feats), dtype=torch.long)
    with torch.no_grad():
        for b in acts.batches(batch_size, shuffle=False, names=cc.names):
            x = cc._normalise(stack(b, cc.names))
            f = cc.encode(stack(b, cc.names))
            x_hat = cc._decode_norm(f)
            fk = f[:, feats].double()  # (batch, K)
            for i, e_key, r_key in ((i_b, "eb", "rb"), (i_t, "et", "rt")):
                err_dot = ((x[:, i] - x_hat[:, i]) @ d.T).double()  # <d, a - â>
                num[e_key] += (fk * err_dot).sum(0) + fk.pow(2).sum(0) * self_dot[i]
                num[r_key] += (fk * (x_hat[:, i] @ d.T).double()).sum(0)
            f_sq += fk.pow(2).sum(0)
            n_active += (fk != 0).sum(0)
    denom = (d_sq * f_sq).masked_fill(f_sq == 0, float("nan"))
    beta = {key: (v / denom).numpy() for key, v in num.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        nu_e = beta["eb"] / beta["et"]
        nu_r = beta["rb"] / beta["rt"]
    return pd.DataFrame(
        {
            "feature": feats.numpy().astype(np.int64),
            "n_active": n_active.numpy().astype(np.int64),
            "beta_error_base": beta["eb"],
            "beta_error_tuned": beta["et"],
            "beta_reconstruction_base": beta["rb"],
            "beta_reconstruction_tuned": beta["rt"],
            "nu_error": nu_e,
            "nu_reconstruction": nu_r,
            "sparsity_artefact": (nu_e > error_threshold) | (nu_r > reconstruction_threshold),
        }
    )
