"""Peak memory of collection, SAE training and scoring at N and 4N tokens: on-disk route vs in memory.

Each stage runs in its own subprocess; its peak resident set size is read from outside, from the
``rusage`` of that child (``os.wait4``), so imports and allocator caches count as a user would see them.
Three tiny attention-only HookedTransformers built from a config (d_model 256 by default) stand in for
base / rl / sft, so the activations (3 x n_tokens x d_model float32) dominate memory.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_memory.py              # 200k vs 800k tokens
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_memory.py --tokens 20000 --d-model 64  # minutes

Training runs 3 SAEs and 2 base replicas (``d_sae`` 1,024 and 4,096 by default, one run each); scoring is
``compare_dictionaries`` with those replicas (floors, bootstraps, children and absorbed recombinations, as
by default) and the feature cards of 10 features.

Prints, per stage and route, the peak RSS at N and 4N tokens and their ratio (target for the on-disk
route: <= 1.25x), the wall time, and the size of the activations on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAMES = ("base", "rl", "sft")
HOOK = "blocks.0.hook_resid_post"


def _models(d_model: int, seq: int):
    from transformer_lens import HookedTransformer

    cfg = dict(
        n_layers=1, d_model=d_model, n_ctx=seq, d_head=64, d_vocab=1000, attn_only=True, act_fn="relu", seed=0
    )
    return {n: HookedTransformer({**cfg, "seed": i}).eval() for i, n in enumerate(NAMES)}


def stage(args) -> dict:
    """One stage in this (child) process; returns what it measured besides memory."""
    import torch

    import featdiff as fd

    torch.manual_seed(0)
    work = Path(args.work)
    acts_dir = work / f"acts_{args.tokens}"
    t0 = time.perf_counter()
    out: dict = {}
    if args.stage == "collect":
        n_seq = args.tokens // args.seq
        tokens = torch.randint(0, 1000, (n_seq, args.seq), generator=torch.Generator().manual_seed(0))
        models = _models(args.d_model, args.seq)
        acts = fd.collect_activations(
            models,
            tokens,
            HOOK,
            batch_size=64,
            progress=False,
            out_dir=acts_dir if args.route == "disk" else None,
        )
        out["n_tokens"] = acts.n_tokens
    else:
        acts = fd.ActivationSet.open(acts_dir) if args.route == "disk" else fd.ActivationSet.load(acts_dir)
        width = args.d_sae[0]
        sae_dir = work / f"saes_{args.route}_{args.tokens}_{width}"
        if args.stage == "train":
            extra = {f"base_seed{i}": ("base", i) for i in (1, 2)}  # the replicas compare_checkpoints trains
            saes = fd.train_saes(
                acts, d_sae=width, k=16, n_steps=args.steps, batch_size=4096, seed=0, extra=extra,
                progress=False,
            )
            if sae_dir.exists():
                shutil.rmtree(sae_dir)
            fd.save_saes(saes, sae_dir)
            out["samples_per_s"] = args.steps * 4096 * len(saes) / (time.perf_counter() - t0)
        else:  # score
            saes = {n: fd.load_sae(sae_dir / n) for n in NAMES}
            reps = [fd.load_sae(sae_dir / f"base_seed{i}") for i in (1, 2)]
            # replicas (floors, bootstraps), children and absorbed recombinations are on by default
            cmp = fd.compare_dictionaries(saes, acts, replicas=reps, progress=False)
            out["reuse_rl"] = float(cmp.summary.loc["rl", "reuse"])
            f = cmp.features
            keys = [(n, int(j)) for n in ("rl", "sft") for j in f[(f.checkpoint == n) & (f.status != "dead")].feature[:5]]
            out["n_cards"] = len(cmp.feature_cards(keys))  # the cards' top activations: one pass per checkpoint
    out["seconds"] = time.perf_counter() - t0
    return out


def run_child(argv: list[str]) -> tuple[dict, float]:
    """Run one stage in a child process; (its report, its peak RSS in MiB from its rusage)."""
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    report = proc.stdout.read()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage {argv} failed with exit code {proc.returncode}")
    return json.loads(report.strip().splitlines()[-1]), usage.ru_maxrss / 1024  # Linux: ru_maxrss in KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=200_000, help="N (the larger run has 4N)")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--d-sae", type=int, nargs="+", default=[1024, 4096], help="one run per width")
    p.add_argument("--steps", type=int, default=60, help="SAE training steps (the same at N and 4N)")
    p.add_argument(
        "--work", default=None, help="folder for the activations (default: a temporary one in /tmp)"
    )
    p.add_argument("--stage", choices=("collect", "train", "score"), help=argparse.SUPPRESS)
    p.add_argument("--route", choices=("disk", "memory"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        print(json.dumps(stage(args)))
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="featdiff_bench_memory_"))
    common = ["--d-model", str(args.d_model), "--seq", str(args.seq)]
    common += ["--steps", str(args.steps), "--work", str(work)]
    sizes = (args.tokens, 4 * args.tokens)
    rows = []
    try:
        plan = [("collect", args.d_sae[0])] + [(st, w) for w in args.d_sae for st in ("train", "score")]
        for st, width in plan:
            for route in ("disk", "memory"):
                res = {}
                for n in sizes:
                    argv = [*common, "--d-sae", str(width), "--stage", st, "--route", route, "--tokens", str(n)]
                    rep, rss = run_child(argv)
                    res[n] = (rss, rep)
                    print(f"  {st:8s} d_sae {width:>6} {route:6s} {n:>9,} tokens: peak RSS {rss:8.0f} MiB, "
                          f"{rep['seconds']:6.1f} s", flush=True)  # fmt: skip
                (r1, a), (r4, b) = res[sizes[0]], res[sizes[1]]
                label = st if st == "collect" else f"{st} (d_sae {width})"
                rows.append((label, route, r1, r4, r4 / r1, a["seconds"], b["seconds"], b))
        disk = {n: sum(f.stat().st_size for f in (work / f"acts_{n}").iterdir()) / 2**20 for n in sizes}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    n1, n4 = sizes
    print(
        f"\nd_model {args.d_model}, 3 checkpoints; activations on disk: {disk[n1]:.0f} MiB at N={n1:,}, "
        f"{disk[n4]:.0f} MiB at 4N={n4:,}"
    )
    print("| stage | route | peak RSS at N (MiB) | at 4N (MiB) | ratio 4N/N | time N (s) | time 4N (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for st, route, r1, r4, ratio, t1, t4, _ in rows:
        flag = "" if route != "disk" else (" ok" if ratio <= 1.25 else " OVER 1.25x")
        print(f"| {st} | {route} | {r1:.0f} | {r4:.0f} | {ratio:.2f}x{flag} | {t1:.1f} | {t4:.1f} |")


if __name__ == "__main__":
    main()
