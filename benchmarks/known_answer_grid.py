"""The known-answer grid: planted base/target dictionaries, SAEs trained and compared by the library's default
pipeline (fd.compare_activations: the SAE route of compare_checkpoints, with reference replicas and the width
check), every estimator of the true fractions scored against the planted truth.

    OMP_NUM_THREADS=1 python benchmarks/known_answer_grid.py            # the full grid (~9 min on 1 core)
    python benchmarks/known_answer_grid.py --cells width_0.75x power_law_1x --estimators union   # stress cells
    python benchmarks/known_answer_grid.py --cells width_1x split --csv grid.csv
    python benchmarks/known_answer_grid.py --min-contribution 0 0.01   # the same SAEs: every latent that fires scored vs the default

Prints one markdown table per estimator (a row per cell x target x category: truth, estimate, interval,
whether it is within tolerance and covered) and a comparison of the estimators (worst and mean absolute
error, share within tolerance, interval coverage). Tolerances: featdiff.synthetic.planted.known_answer_table.
"""

from __future__ import annotations

import argparse
import itertools
import time

import pandas as pd
import torch

import featdiff as fd
from featdiff.comparison.config import CompareConfig
from featdiff.metrics.uncertainty import DEFAULT_ESTIMATOR, ESTIMATORS
from featdiff.synthetic.planted import known_answer_table, plant_checkpoints

D_IN, N_ATOMS, K_PLANTED = 32, 64, 4
MIXED = {
    "mixed": {"reused": 0.7, "recombined": 0.15, "novel": 0.15},
    "sft_like": {"reused": 0.45, "recombined": 0.2, "novel": 0.35},
}
# cell -> (plant_checkpoints keywords, train_saes keywords)
CELLS = {
    "width_0.5x": ({}, {"d_sae": N_ATOMS // 2, "k": K_PLANTED}),
    "width_1x": ({}, {"d_sae": N_ATOMS, "k": K_PLANTED}),
    "width_2x": ({}, {"d_sae": 2 * N_ATOMS, "k": K_PLANTED}),
    "k_below": ({}, {"d_sae": N_ATOMS, "k": K_PLANTED // 2}),
    "k_above": ({}, {"d_sae": N_ATOMS, "k": 2 * K_PLANTED}),
    # the library's defaults: d_sae = 4 * d_in (2x the planted count here), k = default_k(d_in) = 4
    "power_law": ({"frequencies": "power_law"}, {}),
    "recombine_kept": ({"recombine_from": "kept"}, {"d_sae": N_ATOMS, "k": K_PLANTED}),
    "split": (
        {"targets": {"split": {"reused": 0.6, "split": 0.15, "recombined": 0.1, "novel": 0.15}}},
        {"d_sae": N_ATOMS, "k": K_PLANTED},
    ),
    "identical_disjoint": (
        {"targets": {"identical": "identical", "disjoint": {"novel": 1.0}}},
        {"d_sae": N_ATOMS, "k": K_PLANTED},
    ),
}
# beyond the axes, not in the default run (docs/metrics.md, "Widening"): a width between 0.5x and
# 1x, and power-law firing at a width equal to the planted count, where top-k's budget of k latents per
# token merges frequent atoms (the width check does not widen there: it fails)
STRESS_CELLS = {
    "width_0.75x": ({}, {"d_sae": 3 * N_ATOMS // 4, "k": K_PLANTED}),
    "power_law_1x": ({"frequencies": "power_law"}, {"d_sae": N_ATOMS, "k": K_PLANTED}),
}
CELLS_ALL = {**CELLS, **STRESS_CELLS}


def run_cell(
    cell: str,
    seed: int = 0,
    n_replicas: int = 2,
    n_train: int = 100_000,
    n_eval: int = 10_000,
    estimators=ESTIMATORS,
    train_kwargs: dict | None = None,
    min_contributions: tuple = (None,),
    widen: int = 1,
) -> pd.DataFrame:
    """Plant, train (base, targets, ``n_replicas`` base replicas and, for ``symmetric``, one replica per
    target) and score every estimator; one row per (min_contribution, estimator, checkpoint, category).
    ``min_contributions``: CompareConfig.min_contribution values to score the same SAEs with (None: the
    library's default)."""
    plant_kw, sae_kw = CELLS_ALL[cell]
    plant_kw = {"targets": MIXED, **plant_kw}
    planted = plant_checkpoints(d_in=D_IN, n_atoms=N_ATOMS, k=K_PLANTED, seed=seed, **plant_kw)
    train = planted.sample(n_train, seed=seed + 1)
    held_out = planted.sample(n_eval, seed=seed + 2)
    # the library's SAE route (fd.compare_activations, as compare_checkpoints runs it: replicas, and
    # widening where the reference is too narrow); the first estimator's run trains the SAEs (symmetric first:
    # it needs a replica per target), the others score the same SAEs
    order = sorted(estimators, key=lambda e: e != "symmetric")
    first = fd.compare_activations(
        train,
        held_out=held_out,
        n_replicas=n_replicas,
        seed=seed,
        widen=widen,
        config=CompareConfig(estimator=order[0]),
        metrics=[],
        progress=False,
        train_kwargs=train_kwargs,
        **sae_kw,
    )
    saes, all_replicas = first.dictionaries, first.extras["replica_saes"]
    d_sae_used = first.meta["sae"]["d_sae"]
    # the width check (compare_activations(widen=...)): the reference's scored share and the first probe's
    # unexplained-variance reduction
    check = (first.meta.get("width_check") or [{}])[0]
    out = []
    for mc, est in itertools.product(min_contributions, estimators):
        kw = {} if mc is None else {"min_contribution": mc}
        if mc is None and est == order[0]:
            cmp = first
        else:
            replicas = all_replicas if est == "symmetric" else {"base": all_replicas["base"]}
            cmp = fd.compare_dictionaries(
                saes, held_out, replicas=replicas, estimator=est, metrics=[], progress=False, **kw
            )
        t = known_answer_table(cmp.summary, planted)
        t.insert(0, "estimator", est)
        t.insert(1, "cell", cell)
        t.insert(2, "min_contribution", CompareConfig().min_contribution if mc is None else mc)
        t["d_sae"] = d_sae_used
        t["scored_share"] = check.get("reference_scored_share", float("nan"))
        t["probe_reduction"] = check.get("unexplained_reduction", float("nan"))
        t["raw"] = [
            float(cmp.summary.loc[c, f"{k}_raw"]) for c, k in zip(t.checkpoint, t.category, strict=True)
        ]
        t["floor"] = [
            float(cmp.summary.loc[c, f"{k}_floor"]) for c, k in zip(t.checkpoint, t.category, strict=True)
        ]
        t["saturated"] = [bool(cmp.summary.loc[c, "saturated"]) for c in t.checkpoint]
        # the narrow-reference diagnostic (featdiff.comparison.diagnostics): the target's base-present latents, how
        # many the reference misses, and whether it warned
        misses = cmp.meta.get("reference_misses", {})
        t["n_present"] = [misses.get(c, {}).get("n_present") for c in t.checkpoint]
        t["n_missed"] = [misses.get(c, {}).get("n_missed") for c in t.checkpoint]
        t["missed_unexplained"] = [misses.get(c, {}).get("missed_unexplained") for c in t.checkpoint]
        t["narrow_warning"] = [
            any(w.startswith(f"{c}:") and "lacks features of its own activations" in w for w in cmp.meta["warnings"])
            for c in t.checkpoint
        ]
        out.append(t)
    return pd.concat(out, ignore_index=True)


def compare_estimators(results: pd.DataFrame) -> pd.DataFrame:
    """Per estimator: worst and mean absolute error, share of categories within tolerance, coverage."""
    g = results.assign(abs_error=results.error.abs()).groupby("estimator")
    return pd.DataFrame(
        {
            "worst_abs_error": g.abs_error.max(),
            "mean_abs_error": g.abs_error.mean(),
            "within_tolerance": g.within.mean(),
            "interval_coverage": g.covered.mean(),
            "n": g.size(),
        }
    ).sort_values("worst_abs_error")


def replica_sweep(seed: int = 0, max_replicas: int = 4, cell: str = "width_2x") -> pd.DataFrame:
    """Cost and interval width against the number of reference replicas: one training pass of the base,
    the targets and ``max_replicas`` replicas (timed with and without the replicas), then the comparison
    with the first 1, 2, ... of them."""
    plant_kw, sae_kw = CELLS[cell]
    planted = plant_checkpoints(d_in=D_IN, n_atoms=N_ATOMS, k=K_PLANTED, seed=seed, targets=MIXED, **plant_kw)
    train, held_out = planted.sample(100_000, seed=seed + 1), planted.sample(10_000, seed=seed + 2)
    t0 = time.perf_counter()
    saes = fd.train_saes(train, seed=seed, progress=False, **sae_kw)
    t_plain = time.perf_counter() - t0
    extra = {f"rep{i}": ("base", seed + 1 + i) for i in range(max_replicas)}
    t0 = time.perf_counter()
    saes = fd.train_saes(train, seed=seed, extra=extra, progress=False, **sae_kw)
    t_all = time.perf_counter() - t0
    reps = [saes.pop(f"rep{i}") for i in range(max_replicas)]
    rows = []
    for m in range(1, max_replicas + 1):
        t0 = time.perf_counter()
        cmp = fd.compare_dictionaries(saes, held_out, replicas=reps[:m], metrics=[], progress=False)
        t_cmp = time.perf_counter() - t0
        s = cmp.summary
        t = known_answer_table(s, planted)
        rows.append(
            {
                "n_replicas": m,
                "train_s": t_plain + (t_all - t_plain) * m / max_replicas,
                "compare_s": t_cmp,
                "reuse_width": float((s.reuse_hi - s.reuse_lo).mean()),
                "novelty_width": float((s.novelty_hi - s.novelty_lo).mean()),
                "reuse_floor": float(s.reuse_floor.iloc[0]),
                "mean_abs_error": float(t.error.abs().mean()),
                "coverage": float(t.covered.mean()),
            }
        )
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, index: bool = False) -> str:
    """A markdown table (3 decimals), without the optional tabulate dependency."""
    if index:
        df = df.reset_index()

    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS_ALL))
    ap.add_argument("--widen", type=int, default=1, help="compare_activations(widen=...): 0 keeps each cell's d_sae")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-replicas", type=int, default=2)
    ap.add_argument(
        "--min-contribution",
        type=float,
        nargs="*",
        default=None,
        help="score the same SAEs with each CompareConfig.min_contribution (default: the library's)",
    )
    ap.add_argument("--architecture", default=None, help="train_saes architecture (default: the library's)")
    ap.add_argument("--estimators", nargs="*", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    ap.add_argument("--csv", default=None, help="write every row to this CSV")
    ap.add_argument("--replica-sweep", action="store_true", help="cost and interval width per n_replicas")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.replica_sweep:
        print(markdown(replica_sweep(seed=args.seed)))
        return
    parts = []
    for cell in args.cells:
        t0 = time.perf_counter()
        mcs = tuple(args.min_contribution) if args.min_contribution else (None,)
        train_kwargs = {"architecture": args.architecture} if args.architecture else None
        parts.append(
            run_cell(
                cell,
                seed=args.seed,
                n_replicas=args.n_replicas,
                estimators=tuple(args.estimators),
                train_kwargs=train_kwargs,
                min_contributions=mcs,
                widen=args.widen,
            )
        )
        print(f"# {cell}: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.csv:  # after every cell, so a long run leaves what it has
            pd.concat(parts, ignore_index=True).to_csv(args.csv, index=False)
    results = pd.concat(parts, ignore_index=True)
    cols = [
        "cell",
        "checkpoint",
        "category",
        "truth",
        "raw",
        "floor",
        "estimate",
        "lo",
        "hi",
        "within",
        "covered",
    ]
    for mc, res in results.groupby("min_contribution", dropna=False):
        print(f"\n# min_contribution = {mc}")
        print(f"\n## The default estimator ({DEFAULT_ESTIMATOR})\n")
        print(markdown(res[res.estimator == DEFAULT_ESTIMATOR][cols]))
        print("\n## The estimators compared\n")
        print(markdown(compare_estimators(res), index=True))


if __name__ == "__main__":
    main()
