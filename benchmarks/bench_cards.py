"""How long feature cards take next to the comparison they describe (run by hand).

    .venv/bin/python benchmarks/bench_cards.py [--n-tokens 50000] [--d-in 64] [--d-sae 512]

Prints, with ratios against baselines measured in the same run:
- export_features with every feature's card (top contexts, logits, top components), against encoding the
  target's activations once (the floor: top contexts need one streamed pass, their windows a second,
  smaller one) and against compare_dictionaries itself;
- the report's 15 cards per checkpoint (with their base features' cards), against the same encode.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import featdiff as fd
from featdiff.dictionaries.stats import encode


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-tokens", type=int, default=50_000)
    ap.add_argument("--d-in", type=int, default=64)
    ap.add_argument("--d-sae", type=int, default=512)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(a.d_sae, a.d_in, generator=g), dim=1)
    x = torch.relu(torch.randn(a.n_tokens, a.d_sae, generator=g) - 2.0) @ W
    acts = fd.ActivationSet.from_tensors(
        {"base": x, "rl": x + 0.01 * torch.randn(x.shape, generator=g)},
        token_ids=torch.randint(0, 1000, (a.n_tokens,), generator=g),
        sequence_ids=torch.arange(a.n_tokens) // 64,
    )
    saes = {"base": fd.sae_from_dictionary(W, k=16), "rl": fd.sae_from_dictionary(W, k=16)}
    cmp, t_cmp = timed(lambda: fd.compare_dictionaries(saes, acts, progress=False, n_bootstrap=10))
    _, t_enc = timed(lambda: encode(saes["rl"], acts["rl"]))
    path = os.path.join(tempfile.mkdtemp(), "features.json")
    _, t_exp = timed(lambda: fd.export_features(cmp, path))
    _, t_rep = timed(lambda: cmp.feature_cards([("rl", i) for i in range(15)]))
    print(f"n_tokens={a.n_tokens} d_in={a.d_in} d_sae={a.d_sae}")
    print(f"encode rl once:             {t_enc:7.2f} s")
    print(f"compare_dictionaries:       {t_cmp:7.2f} s")
    print(
        f"export_features with cards: {t_exp:7.2f} s  ({t_exp / t_enc:.1f}x one encode, {t_exp / t_cmp:.2f}x the "
        f"comparison; {os.path.getsize(path) / 1e6:.1f} MB)"
    )
    print(f"15 cards with base cards:   {t_rep:7.2f} s  ({t_rep / t_enc:.1f}x one encode)")


if __name__ == "__main__":
    main()
