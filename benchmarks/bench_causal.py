"""The lab's causal test, held out: generalization features selected on half of the critical samples,
interventions scored on the other half against frequency-matched random controls (empirical p-values,
Holm-adjusted for the number of tests).

Run: python benchmarks/bench_causal.py [--seeds 0 1 2] [--n-random 20] [--small]

For each seed (the crosscoder's seed and the split's), it runs ``featdiff.crosscoder_view`` on the default
lab (built into ``$FEATDIFF_CACHE`` if absent: a few minutes) without the evolution stage (which does not
touch the interventions), prints the held-out sentences of ``meta["notes"]`` and the intervention stage's
time, and at the end one line per (seed, edit, task) with n, the accuracies, p, its Holm adjustment over
the view's critical-subset tests (``p_holm``; ``n_tests`` of them: 2 edits x the scored tasks) and the
smallest p the controls allow (``p_min``). With 4 tests and 20 controls no Holm-adjusted p can fall below
4/21 = 0.19; ``--n-random 80`` is the least that allows one below 0.05. These are the numbers the README
and docs/lab.md quote (seed 0 is what ``featdiff demo`` shows).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import featdiff as fd
    from featdiff.analyses.crosscoder_view import CrosscoderViewConfig, crosscoder_view

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-random", type=int, default=CrosscoderViewConfig().n_random)
    ap.add_argument("--small", action="store_true", help="the tests' small lab (checks the script only)")
    args = ap.parse_args()
    lab_cfg = fd.lab.LabConfig.small() if args.small else fd.lab.LabConfig()
    path = fd.lab.build(lab_cfg, progress=False)
    base = CrosscoderViewConfig.small() if args.small else CrosscoderViewConfig()
    cfg = base.replace(evolution="none", n_random=args.n_random)
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        view = crosscoder_view(path, cfg, progress=False, seed=seed)
        print(
            f"seed {seed}: {time.perf_counter() - t:.1f} s, interventions "
            f"{view.meta['timings']['interventions_s']:.1f} s, features {view.meta['generalization_feature_ids']}"
        )
        for note in view.meta["notes"]:
            print("  " + note)
        table = view.tables["interventions"]
        crit = table[table.subset == "critical"]
        for (edit, task), g in crit.groupby(["edit", "task"], sort=False):
            acc = g.set_index("condition")["accuracy"]
            e = g[g.condition == "edit"].iloc[0]
            rows.append(
                f"{seed:>4} {edit:<16} {task:<10} {int(e.n_features):>3} {int(e.n_selection):>5} {int(e.n):>4} "
                f"{acc['none']:.2f} -> {acc['edit']:.2f}  controls {acc.get('random', float('nan')):.2f}  "
                f"p = {e.p_value:.3f}  p_holm = {e.p_holm:.3f} ({int(e.n_tests)} tests)  p_min = {e.p_min:.3f}"
            )
    print("seed edit             task       k     sel    n  none -> edit     controls (mean)  p, Holm-adjusted")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
