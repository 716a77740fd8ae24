"""Are planted recombinations and splits called what they are? Recovered fractions vs the planted truth.

For each d_in, seed and ``recombine_from`` ("kept": the target keeps the components of its recombined
atoms, "dropped": it drops them), a target with planted fractions (reused, recombined, novel) is compared
with its base twice: with SAEs built from the planted dictionaries (``sae_from_dictionary``: the detector
alone) and with SAEs trained by ``train_saes`` with its defaults (the detector on what an SAE learns).
It prints the raw fractions of live features per status next to the truth and, for trained SAEs, the
recall of recombined atoms: of the trained target latents whose closest planted target atom (cosine >= 0.9)
is a recombined atom, the share called ``recombined``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_statuses.py            # d_in 32 64, seeds 0 1
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_statuses.py --no-train # planted SAEs only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import featdiff as fd
from featdiff.synthetic import plant_checkpoints

TARGET = {"t": {"reused": 0.6, "recombined": 0.2, "novel": 0.2}}


def _fractions(cmp) -> dict:
    row = cmp.summary.loc["t"]
    out = {c: float(row[f"{c}_raw"]) for c in ("reuse", "recombination", "novelty")}
    out["split"] = float(row["split"]) if "split" in row.index else float("nan")
    return out


def _recall(cmp, sae, planted) -> float:
    """Share of trained latents that sit on a planted recombined atom (cos >= 0.9) called recombined."""
    W = sae.W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True)
    cos = W @ planted.dictionaries["t"].T
    best, atom = cos.max(1)
    truth = planted.truth[planted.truth.checkpoint == "t"].set_index("atom")["status"]
    feats = cmp.features[cmp.features.checkpoint == "t"].set_index("feature")
    on_recombined = (best.numpy() >= 0.9) & (truth.loc[atom.numpy()].to_numpy() == "recombined")
    on_recombined &= (feats["status"] != "dead").to_numpy()
    if not on_recombined.any():
        return float("nan")
    return float((feats["status"].to_numpy()[on_recombined] == "recombined").mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-in", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-train", action="store_true", help="planted SAEs only (seconds)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for d_in in args.d_in:
        for seed in args.seeds:
            for source in ("kept", "dropped"):
                t0 = time.perf_counter()
                planted = plant_checkpoints(d_in=d_in, targets=TARGET, seed=seed, recombine_from=source)
                held_out = planted.sample(10_000, seed=seed + 2)
                k = max(1, int(round(2 * planted.meta["k"])))
                saes = {n: fd.sae_from_dictionary(D, k=k) for n, D in planted.dictionaries.items()}
                cmp = fd.compare_dictionaries(saes, held_out, progress=False)
                truth = planted.fractions.loc["t"]
                base = {"d_in": d_in, "seed": seed, "from": source, "true_recomb": truth["recombination"]}
                rows.append({**base, "saes": "planted", **_fractions(cmp), "recall": float("nan")})
                if not args.no_train:
                    train = planted.sample(100_000, seed=seed + 1)
                    trained = fd.train_saes(train, seed=seed, progress=False)
                    cmp = fd.compare_dictionaries(trained, held_out, progress=False)
                    rec = _recall(cmp, trained["t"], planted)
                    rows.append({**base, "saes": "trained", **_fractions(cmp), "recall": rec})
                print(f"d_in={d_in} seed={seed} {source}: {time.perf_counter() - t0:.1f} s", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        agg = table.groupby(["saes", "from"])[["true_recomb", "recombination", "split", "recall"]].mean()
        print(agg.round(3))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
