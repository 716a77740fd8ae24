"""The crosscoder view's MAS and NRN tables and its feature evolution over the intermediate checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from featdiff.activations.activations import ActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.analyses.crosscoder_view.config import (
    EVOLUTION_COLUMNS,
    MAS_CATEGORY_COLUMNS,
    MAS_COLUMNS,
    NRN_COLUMNS,
    CrosscoderViewConfig,
)
from featdiff.analyses.evolution import (
    CheckpointCrosscoder,
    direction_overlap,
    feature_evolution,
    top_specific_features,
)
from featdiff.dictionaries.crosscoder.model import stack
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.lab.store import checkpoints
from featdiff.metrics.crosscoder import mas, nrn
from featdiff.models.load import load_model


def mas_tables(
    cc: Any, acts: Any, cfg: CrosscoderViewConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:

    m = mas(cc, cfg.mas_threshold, acts=acts).reset_index()
    m = m[MAS_COLUMNS].astype({"feature": "int64", "dead": bool})
    live = ~m["dead"].to_numpy()
    n_live = int(live.sum())
    cat_rows = []
    for c in ("base", "rl", "sft", "shared"):
        n = int((m.loc[live, "category"] == c).sum())
        cat_rows.append(("base+rl+sft", c, n, n / n_live if n_live else math.nan))
    nrn_rows = []
    lo, hi = cfg.nrn_shared
    for name in ("rl", "sft"):
        r = nrn(cc, name, "base").to_numpy(dtype=float)
        dead = m["dead"].to_numpy()
        nrn_rows.append(
            pd.DataFrame(
                {
                    "checkpoint": name,
                    "feature": np.arange(cc.d_sae, dtype=np.int64),
                    "nrn": np.where(dead, np.nan, r),
                    "dead": dead,
                }
            )
        )
        rl_ = r[live]
        for c, sel in (("base", rl_ < lo), ("shared", (rl_ >= lo) & (rl_ <= hi)), (name, rl_ > hi)):
            n = int(sel.sum())
            cat_rows.append((f"{name} vs base", c, n, n / n_live if n_live else math.nan))
    cats = pd.DataFrame(cat_rows, columns=MAS_CATEGORY_COLUMNS).astype(
        {"n_features": "int64", "fraction": "float64"}
    )
    return m, cats, pd.concat(nrn_rows, ignore_index=True)[NRN_COLUMNS]


def evolution_table(
    lab_path: Path,
    base: Any,
    cc: Any,
    acts: Any,
    tokens: torch.Tensor,
    hook: str,
    pad: int,
    cfg: CrosscoderViewConfig,
    seed: int,
) -> pd.DataFrame:

    series: dict[str, dict[int, Any]] = {}
    index: dict[tuple[str, int], int] = {}
    noise: dict[str, float] = {}
    for run in ("rl", "sft"):
        paths = checkpoints(lab_path, run)
        models = {f"step_{i}": load_model(p) for i, p in enumerate(paths, start=1)}
        steps = {
            key: int((m.featdiff_meta or {}).get("step", i)) for i, (key, m) in enumerate(models.items(), 1)
        }
        for i, s in enumerate(steps.values(), start=1):
            index[(run, s)] = i
        ck = collect_activations(
            {"base": base, **models}, tokens, hook, pad_token_id=pad, outlier_factor=None, progress=False
        )
        series[run] = {}
        if cfg.evolution == "decoders":
            for key, s in steps.items():
                pair = ActivationSet.from_tensors({"base": ck["base"], run: ck[key]}, hook=hook)
                small = train_crosscoder(
                    pair,
                    d_sae=cfg.evolution_d_sae,
                    k=cfg.evolution_k,
                    seed=seed,
                    n_steps=cfg.evolution_n_steps,
                    batch_size=cfg.batch_size,
                    progress=False,
                )
                codes = small.encode_acts(pair)
                live = torch.nonzero((codes != 0).any(0)).flatten().tolist()
                series[run][s] = CheckpointCrosscoder(small, live)
            noise[run] = _noise_floor(pair, series[run][max(series[run])], run, cfg, seed)
        else:  # "shared": the 3-model crosscoder scores each checkpoint in the run's slot
            a0 = ck["base"]
            with torch.no_grad():
                f0 = cc.encode(stack({n: a0 for n in cc.names}, cc.names))
                for key, s in steps.items():
                    x = {n: (ck[key] if n == run else a0) for n in cc.names}
                    series[run][s] = (cc.encode(stack(x, cc.names)) - f0).mean(0)
    table = feature_evolution(series, k=cfg.evolution_top_k, threshold=cfg.evolution_threshold)
    table.insert(2, "checkpoint_index", [index[(r, s)] for r, s in zip(table.run, table.step, strict=True)])
    table["noise_floor"] = [noise.get(r, math.nan) for r in table.run]
    return table.astype({"checkpoint_index": "int64"})[EVOLUTION_COLUMNS]


def _noise_floor(pair: Any, final: Any, run: str, cfg: CrosscoderViewConfig, seed: int) -> float:
    """Overlap of the final checkpoint's top-k set with that of a crosscoder trained with another seed on
    the same activations: the overlap that says "same features" for this dictionary size and training."""

    other = train_crosscoder(
        pair,
        d_sae=cfg.evolution_d_sae,
        k=cfg.evolution_k,
        seed=seed + 1,
        n_steps=cfg.evolution_n_steps,
        batch_size=cfg.batch_size,
        progress=False,
    )
    live = torch.nonzero((other.encode_acts(pair) != 0).any(0)).flatten().tolist()
    a = final.crosscoder.decoder(run)[
        top_specific_features(final.crosscoder, cfg.evolution_top_k, live=final.live_features)
    ]
    b = other.decoder(run)[top_specific_features(other, cfg.evolution_top_k, live=live)]
    return direction_overlap(a, b, cfg.evolution_threshold)
