"""compare_checkpoints under torchrun with N processes against one process, in the same run (by hand)

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_distributed.py             # N = 2
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_distributed.py --nproc 4 --n-steps 600

Runs the same script (three tiny TransformerLens models, the SAE route with its 2 base replicas, then the
crosscoder route) once as one plain process and once under ``python -m torch.distributed.run --standalone
--nproc_per_node N`` (gloo on CPUs), and prints each stage's seconds (rank 0's clock, imports excluded),
the ratio one process / N processes, and the largest difference between the two runs' tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    import featdiff as fd
    from featdiff import distributed as fdd
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    out, n_steps, n_seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_vocab=256,
                                  act_fn="relu", d_mlp=256, seed=0, device="cpu")
    base = HookedTransformer(cfg)
    models = {"base": base}
    for i, name in enumerate(["rl", "sft"]):
        m = HookedTransformer(cfg)
        m.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.03 * (i + 1) * torch.randn(p.shape, generator=g))
        models[name] = m
    tokens = torch.randint(0, 256, (n_seq, 32), generator=torch.Generator().manual_seed(0))
    kw = dict(tokens=tokens, d_sae=256, k=8, progress=False, distributed=fdd.launched(),
              train_kwargs={"n_steps": n_steps, "batch_size": 1024})
    fdd.init()
    times, tables = {}, {}
    for method in ("saes", "crosscoder"):
        fdd.barrier()
        t = time.perf_counter()
        cmp = fd.compare_checkpoints(models, method=method, **kw)
        fdd.barrier()
        times[method] = time.perf_counter() - t
        if cmp is not None:
            tables[method] = cmp.summary.select_dtypes("number").to_dict()
    if fdd.is_main():
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        json.dump({"times": times, "tables": tables, "world": fdd.world_size(), "backend": backend}, open(out, "w"))
    """
)


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--n-steps", type=int, default=300, help="training steps of each dictionary")
    ap.add_argument("--n-seq", type=int, default=256, help="sequences of 32 tokens")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        one, many = Path(tmp) / "one.json", Path(tmp) / "many.json"
        rest = [str(args.n_steps), str(args.n_seq)]
        run([sys.executable, str(script), str(one), *rest])
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
        run([*launcher, str(args.nproc), str(script), str(many), *rest])
        a, b = json.loads(one.read_text()), json.loads(many.read_text())
    print(
        f"compare_checkpoints, {args.n_seq} x 32 tokens, {args.n_steps} steps per dictionary ({b['backend']})"
    )
    print(
        f"{'route':12s} {'1 process':>10s} {f'{args.nproc} processes':>12s} {'ratio':>6s}  max |table diff|"
    )
    for method in a["times"]:
        diff = max(
            abs(x - y)
            for col, vals in a["tables"][method].items()
            for key, x in vals.items()
            for y in [b["tables"][method][col][key]]
            if x == x and y == y  # NaN on both sides is agreement
        )
        ta, tb = a["times"][method], b["times"][method]
        print(f"{method:12s} {ta:9.1f}s {tb:11.1f}s {ta / tb:5.2f}x  {diff:.2e}")


if __name__ == "__main__":
    main()
