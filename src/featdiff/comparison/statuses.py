"""Each target feature's status against the reference (reused, split, recombined, novel, faint or dead;
absorbed rows with CompareConfig.absorbed): the one place the metrics of an alignment are combined into the
features table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from featdiff.alignment.matching import Alignment
from featdiff.comparison.table import STATUSES, CompareConfig
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
        extra_reference=extra_reference,
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
        }
    )
    return pd.concat([table, extra], ignore_index=True)
