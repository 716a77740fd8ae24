"""Each target feature's status against the reference (reused, split, recombined, novel, faint or dead;
absorbed rows with CompareConfig.absorbed): the one place the metrics of an alignment are combined into the
features table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from featdiff.alignment.matching import Alignment
from featdiff.comparison.config import CompareConfig
from featdiff.comparison.table import STATUSES
from featdiff.dictionaries.stats import cofiring
from featdiff.metrics.recombination import absorbed_recombination, recombination
from featdiff.metrics.reuse import drift, split


def feature_table(al: Alignment, cfg: CompareConfig, ref_freq, tgt_freq, extra_reference=None) -> pd.DataFrame:
    """One row per target feature of ``al`` (FEATURE_COLUMNS): its status (faint > dead > reused > recombined >
    split > novel, docs/design.md's definitions with ``cfg``'s thresholds; a feature outside ``al.tgt_live`` is
    ``faint`` where ``tgt_freq`` says it fired, else ``dead``), match, similarity, drift, freq_shift and
    components. ``ref_freq`` / ``tgt_freq`` are firing frequencies on the same tokens (or None);
    ``extra_reference``: more rows recombinations may be fitted with (the reference replicas' live rows,
    ``metrics.recombination.recombination``)."""
    d = drift(al, ref_freq, tgt_freq, cfg.reuse_threshold, cfg.eps)
    rc = recombination(
        al,
        cfg.fit_threshold,
        cfg.max_components,
        cfg.min_components,
        cfg.reuse_threshold,
        margin=cfg.recombination_margin,
        min_coefficient=cfg.min_coefficient,
        extra_reference=extra_reference,
        n_candidates=cfg.n_candidates,
    )
    sp = split(al, cfg.reuse_threshold, exclude=rc["recombined"].to_numpy())
    t = al.table()
    # not live: "faint" where it fired (below min_contribution), "dead" where it never fired
    fired = np.ones(len(t), bool) if tgt_freq is None else tgt_freq.double().numpy() > 0
    status = np.select(
        [~t["live"] & fired, ~t["live"], d["drift"].notna(), rc["recombined"], sp["split"]],
        ["faint", "dead", "reused", "recombined", "split"],
        "novel",
    )
    is_split = status == "split"
    # a split names the reference feature it duplicates, and its cosine and frequency shift are with it
    t.loc[is_split, "match"] = sp.loc[is_split, "split_of"]
    t.loc[is_split, "similarity"] = sp.loc[is_split, "split_similarity"]
    if ref_freq is not None and tgt_freq is not None and is_split.any():
        rf, tf = ref_freq.double().numpy(), tgt_freq.double().numpy()
        j = np.flatnonzero(is_split)
        d.loc[is_split, "freq_shift"] = np.abs(
            np.log((tf[j] + cfg.eps) / (rf[t["match"].to_numpy()[j]] + cfg.eps))
        )
    return pd.DataFrame(
        {
            "checkpoint": al.target,
            "feature": t["feature"],
            "status": pd.Categorical(status, categories=STATUSES),
            "match": t["match"],
            "similarity": t["similarity"],
            "drift": d["drift"],
            "freq_shift": d["freq_shift"],
            "components": rc["components"],
            "n_components": rc["n_components"],
            "fit_cosine": rc["fit_cosine"],
            "frequency": np.nan if tgt_freq is None else tgt_freq.double().numpy(),
            "absorbed": False,
            "parent": np.full(al.d_tgt, -1, dtype=np.int64),
        }
    )


def add_absorbed(table: pd.DataFrame, al: Alignment, cfg: CompareConfig, ref, ref_x, tgt, tgt_x) -> pd.DataFrame:
    """``table`` with one more row per absorbed recombination (only with ``cfg.absorbed``;
    ``metrics.recombination.absorbed_recombination``): a reference feature that no target feature reuses and
    that the target carries by firing 2-3 of its reused features together on that feature's tokens
    (``ref_x`` / ``tgt_x``: paired activations).

    Such a recombination has no decoder row of its own, so it is not one of the target's dictionary features:
    its row has status "absorbed" (counted in the summary's ``n_absorbed``, in no fraction), ``feature`` = the
    target's width + j (an id past the dictionary, never an index into it), ``absorbed`` True, ``match`` the
    reference feature it carries, ``components`` (reference feature, excess firing rate) of the carriers and
    ``frequency`` the share of tokens the reference feature fires on."""
    if not cfg.absorbed:
        return table
    status = table["status"].astype(str).to_numpy()
    kept = np.isin(status, ["reused", "split"])
    carriers = table["feature"].to_numpy()[kept]
    carrier_match = table["match"].to_numpy()[kept].astype(np.int64)
    own = table["feature"].to_numpy()[np.isin(status, ["recombined", "novel"])]
    rows = np.setdiff1d(np.flatnonzero(al.ref_live), carrier_match)
    if len(rows) == 0 or len(carriers) < cfg.min_components:
        return table
    counts = cofiring(ref, ref_x, tgt, tgt_x, torch.as_tensor(rows))
    ab = absorbed_recombination(
        counts,
        rows,
        carriers,
        carrier_match,
        own,
        tgt.W_dec.detach().float().cpu(),
        ref.W_dec.detach().float().cpu()[torch.as_tensor(rows)],
        cfg.absorbed_threshold,
        cfg.max_components,
        cfg.min_components,
        min_tokens=cfg.absorbed_min_tokens,
        own_rate=cfg.own_feature_rate,
        max_shift_cosine=cfg.reuse_threshold,
        fit_threshold=cfg.fit_threshold,
        margin=cfg.recombination_margin,
    )
    if ab.empty:
        return table
    n = float(counts["n"])
    extra = pd.DataFrame(
        {
            "checkpoint": al.target,
            "feature": len(table) + np.arange(len(ab), dtype=np.int64),
            "status": pd.Categorical(["absorbed"] * len(ab), categories=STATUSES),
            "match": ab["reference_feature"].to_numpy(),
            "similarity": np.nan,
            "drift": np.nan,
            "freq_shift": np.nan,
            "components": ab["components"],
            "n_components": ab["components"].map(len).to_numpy(dtype=np.int64),
            "fit_cosine": np.nan,
            "frequency": ab["n_tokens"].to_numpy() / n,
            "absorbed": True,
            "parent": np.full(len(ab), -1, dtype=np.int64),
        }
    )
    return pd.concat([table, extra], ignore_index=True)


@torch.no_grad()
def _parent_stats(sae, x, rows: Tensor, parents: Tensor, batch_size: int = 4096) -> dict[str, Tensor]:
    """On the tokens where each latent of ``rows`` fires (``sae`` on its own activations ``x``): how many
    tokens (``on``), on how many of them each latent of ``parents`` fires too (``co``, len(rows) x
    len(parents)), the sum of each parent's code there (``z``, same shape) and of the row's own (``z_own``)."""
    from featdiff.dictionaries.stats import stream_codes

    out = {
        "on": torch.zeros(len(rows), dtype=torch.float64),
        "co": torch.zeros(len(rows), len(parents), dtype=torch.float64),
        "z": torch.zeros(len(rows), len(parents), dtype=torch.float64),
        "z_own": torch.zeros(len(rows), dtype=torch.float64),
    }
    for _, f in stream_codes(sae, x, batch_size, "children"):
        f = f.detach().float().cpu()
        own, fp = f[:, rows], f[:, parents]
        on = (own != 0).float()  # (batch, len(rows))
        out["on"] += on.sum(0).double()
        out["co"] += (on.T @ (fp != 0).float()).double()
        out["z"] += (on.T @ fp).double()
        out["z_own"] += own.sum(0).double()
    return out


def add_children(table: pd.DataFrame, al: Alignment, cfg: CompareConfig, tgt, tgt_x) -> pd.DataFrame:
    """``table`` with the target's child latents called ``split``: a live target latent that is neither
    reused nor recombined, fires (on the target's own activations) only where a latent that reuses a
    reference feature also fires (on at least ``cfg.child_cofiring`` of its tokens, and at least
    ``cfg.child_lift`` times as often as that latent fires overall), and whose decoded
    direction together with that parent's on those tokens (the mean-code-weighted sum of their decoder
    rows) is within ``reuse_threshold`` of the parent's reference feature. A trained SAE wider than the
    features may represent a feature split into children as the parent's latent plus a weak residual
    latent per child (the scenario library's ``split``); the residual is part of a reused feature, not a
    new one. ``match`` is that reference feature and ``similarity`` the combined direction's cosine with
    it. ``cfg.child_cofiring`` = 0 switches this off."""
    if not cfg.child_cofiring:
        return table
    status = table["status"].astype(str).to_numpy()
    feature = table["feature"].to_numpy()
    cand = feature[(status == "novel") & (feature < al.d_tgt)]
    parents = feature[(status == "reused") & (feature < al.d_tgt)]
    if not len(cand) or not len(parents):
        return table
    st = _parent_stats(tgt, tgt_x, torch.as_tensor(cand, dtype=torch.long), torch.as_tensor(parents))
    on = st["on"].clamp_min(1)[:, None]
    share = (st["co"] / on).numpy()  # P(parent fires | candidate fires)
    parent_freq = table.set_index("feature")["frequency"].reindex(parents).to_numpy(dtype=float)
    parent_freq = np.nan_to_num(parent_freq, nan=1.0)
    W = tgt.W_dec.detach().double().cpu()  # the decoded contributions, at their own norms
    R = al.ref_decoder.double()
    match = table.set_index("feature")["match"]
    table = table.copy()
    for r, j in enumerate(cand):
        if st["on"][r] < 1:
            continue
        # a parent fires on nearly all of the child's tokens, and far more there than elsewhere (a dense
        # latent that fires on most tokens is no one's parent)
        ok = (share[r] >= cfg.child_cofiring) & (share[r] >= cfg.child_lift * parent_freq)
        if not ok.any():
            continue
        best = int(np.argmax(np.where(ok, share[r], -1.0)))
        i = int(parents[best])
        zi, zj = float(st["z"][r, best] / on[r, 0]), float(st["z_own"][r] / on[r, 0])
        v = zi * W[i] + zj * W[j]
        m = int(match.loc[i])
        cos = float(v @ R[m] / (v.norm() * R[m].norm()).clamp_min(1e-12))
        if cos >= cfg.reuse_threshold:
            row = np.flatnonzero(feature == j)[0]
            table.loc[row, ["status", "match", "similarity", "parent"]] = ["split", m, cos, i]
    return table
