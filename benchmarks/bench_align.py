"""How fast alignment and scoring are at realistic dictionary sizes (run by hand).

    .venv/bin/python benchmarks/bench_align.py [--d-sae 4096] [--d-in 512]

Prints the time of each stage and ratios against baselines measured in the same run:
- Hungarian matching (scipy) of d_sae x d_sae cosines, against the greedy max matching;
- featdiff's batched OMP over every unmatched target row, against a per-row numpy OMP loop
  (timed on a sample of rows and scaled up);
- compare_dictionaries end to end (streamed codes), against encoding the activations once.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import featdiff as fd
from featdiff.alignment.matching import align
from featdiff.metrics.recombination import omp


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def omp_loop(targets: np.ndarray, atoms: np.ndarray, m: int = 3) -> None:
    for x in targets:
        chosen, r = [], x.copy()
        for _ in range(m):
            s = np.abs(atoms @ r)
            s[chosen] = -1
            chosen.append(int(s.argmax()))
            c, *_ = np.linalg.lstsq(atoms[chosen].T, x, rcond=None)
            r = x - atoms[chosen].T @ c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--n-tokens", type=int, default=20_000)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(args.d_sae, args.d_in, generator=g), dim=1)
    noise = torch.randn(args.d_sae, args.d_in, generator=g) / args.d_in**0.5
    tgt = torch.nn.functional.normalize(ref[torch.randperm(args.d_sae, generator=g)] + 0.5 * noise, dim=1)
    print(f"d_sae={args.d_sae} d_in={args.d_in} n_tokens={args.n_tokens}")

    _, t_max = timed(lambda: align(ref, tgt, method="max"))
    al, t_hung = timed(lambda: align(ref, tgt, method="hungarian"))
    print(f"hungarian          {t_hung:8.2f} s   ({t_hung / t_max:.1f}x the greedy max matching, {t_max:.2f} s)")

    rows = tgt[: args.d_sae // 2]
    _, t_omp = timed(lambda: omp(rows, ref, 3))
    sample = rows[:200].double().numpy()
    _, t_loop = timed(lambda: omp_loop(sample, ref.double().numpy()))
    t_loop *= len(rows) / len(sample)
    print(f"batched omp        {t_omp:8.2f} s   ({t_loop / t_omp:.1f}x faster than a per-row loop, ~{t_loop:.1f} s)")

    saes = {"base": fd.sae_from_dictionary(ref, k=32), "rl": fd.sae_from_dictionary(tgt, k=32)}
    x = torch.relu(torch.randn(args.n_tokens, args.d_sae, generator=g) - 2.5) @ ref
    acts = fd.ActivationSet.from_tensors({"base": x, "rl": x})
    _, t_enc = timed(lambda: fd.dictionaries.encode(saes["base"], x))
    cmp, t_cmp = timed(lambda: fd.compare_dictionaries(saes, acts, progress=False))
    print(f"compare            {t_cmp:8.2f} s   ({t_cmp / t_enc:.1f}x one encoding pass, {t_enc:.2f} s)")
    print(cmp.summary[["reuse_raw", "recombination_raw", "novelty_raw", "drift"]].round(3).to_string())


if __name__ == "__main__":
    main()
