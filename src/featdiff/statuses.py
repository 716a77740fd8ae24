"""Each target feature's status against the reference (reused, split, recombined, novel or dead): the one
place the metrics of an alignment are combined into the features table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from featdiff.align import Alignment
from featdiff.comparison import STATUSES, CompareConfig
from featdiff.metrics.recombination import recombination
from featdiff.metrics.reuse import drift, split


def feature_table(al: Alignment, cfg: CompareConfig, ref_freq, tgt_freq) -> pd.DataFrame:
    """One row per target feature of ``al`` (FEATURE_COLUMNS): its status (dead > reused > recombined > split
    > novel, DESIGN.md's definitions with ``cfg``'s thresholds), match, similarity, drift, freq_shift and
    components. ``ref_freq`` / ``tgt_freq`` are firing frequencies on the same tokens (or None)."""
    d = drift(al, ref_freq, tgt_freq, cfg.reuse_threshold, cfg.eps)
    rc = recombination(
        al,
        cfg.fit_threshold,
        cfg.max_components,
        cfg.min_components,
        cfg.reuse_threshold,
        margin=cfg.recombination_margin,
    )
    sp = split(al, cfg.reuse_threshold, exclude=rc["recombined"].to_numpy())
    t = al.table()
    status = np.select(
        [~t["live"], d["drift"].notna(), rc["recombined"], sp["split"]],
        ["dead", "reused", "recombined", "split"],
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
        }
    )
