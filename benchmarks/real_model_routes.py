"""The independent-SAE route against the warm-started route on a real pretrained checkpoint: floor, reuse
interval width, seed-to-seed agreement, time and peak memory (run by hand; docs/metrics.md, "The warm-started
route").

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_routes.py collect --n-seq 192
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_routes.py run saes 0
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_routes.py run finetune 0
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_routes.py run finetune 1

``collect``: SmolLM2-135M-Instruct and its two fine-tunes (benchmarks/real_model_defaults.py's, cached in
~/.cache/featdiff-bench/finetunes), ``--n-seq`` sequences of 128 tokens (192: the 24,576 tokens of
real_model_defaults.py; half Python source, half English prose), the middle layer's residual stream; the
paired activations are saved to ``$FEATDIFF_BENCH_OUT/acts`` (default ~/.cache/featdiff-bench/routes). ``run
ROUTE SEED``: one process per route, so that its peak RSS is its own: ``compare_activations`` on the saved
activations (held-out 20 % by sequence, 2 reference replicas, no width check) with ``--d-sae``, ``--k``,
``--n-samples`` (the SAEs' run length) and ``--finetune-steps``; prints one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(os.environ.get("FEATDIFF_BENCH_OUT", Path.home() / ".cache" / "featdiff-bench" / "routes"))


def collect(n_seq: int) -> None:
    import torch
    from _real_model import corpora, get_hf_dir, token_chunks
    from bench_real_model import fine_tune

    import featdiff as fd

    ft_dir = Path.home() / ".cache" / "featdiff-bench" / "finetunes"
    hf_dir = get_hf_dir(None)
    base = fd.load_model(str(hf_dir))
    tok, bos = base.tokenizer, base.tokenizer.bos_token_id
    text = corpora()
    models = {"base": base}
    for i, (name, corpus) in enumerate((("sft_code", "code"), ("sft_prose", "prose"))):
        if not (ft_dir / name / "config.json").exists():
            fine_tune(hf_dir, token_chunks(tok, text[corpus], 64, 256, bos), 10, 4, 3e-4, ft_dir / name, i, "cpu")
        models[name] = fd.load_model(str(ft_dir / name))
    skip = 256 * 63
    tokens = torch.cat([token_chunks(tok, text[c], 128, n_seq // 2, bos, start=skip) for c in ("code", "prose")])
    hook = f"blocks.{base.cfg.n_layers // 2}.hook_resid_post"
    t = time.perf_counter()
    acts = fd.collect_activations(models, tokens, hook=hook, batch_size=16, progress=False)
    acts.save(OUT / "acts")
    print(f"collected {acts.n_tokens} paired rows at {hook} in {time.perf_counter() - t:.0f} s -> {OUT / 'acts'}")


def run(route: str, seed: int, d_sae: int, k: int, n_samples: int, finetune_steps: int) -> None:
    import featdiff as fd
    from featdiff.comparison.pipeline import compare_activations

    acts = fd.ActivationSet.load(OUT / "acts")
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cmp = compare_activations(
            acts, d_sae=d_sae, k=k, seed=seed, n_replicas=2, widen=0, metrics=[], progress=False, method=route,
            train_kwargs={"n_samples": n_samples}, finetune={"n_steps": finetune_steps},
        )  # fmt: skip
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    s = cmp.summary
    for name in s.index:
        row = {c: float(s.loc[name, c]) for c in ("reuse", "reuse_lo", "reuse_hi", "reuse_raw", "reuse_floor",
               "recombination", "novelty", "novelty_lo", "novelty_hi", "n_live") if c in s}  # fmt: skip
        row.update(route=route, seed=seed, checkpoint=name, wall_s=round(wall, 1), peak_rss_gb=round(peak, 2),
                   reuse_width=row["reuse_hi"] - row["reuse_lo"], n_tokens=acts.n_tokens, d_sae=d_sae, k=k,
                   n_samples=n_samples, finetune_steps=finetune_steps if route == "finetune" else None,
                   index_agreement=float(s.loc[name, "index_agreement"]) if "index_agreement" in s else None)  # fmt: skip
        print("ROW " + json.dumps(row), flush=True)
    for m in sorted({str(x.message) for x in w if x.category.__name__ == "FeatdiffWarning"}):
        print("WARN " + m[:300])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=["collect", "run"])
    ap.add_argument("route", nargs="?", default="finetune", choices=["saes", "finetune"])
    ap.add_argument("seed", nargs="?", type=int, default=0)
    ap.add_argument("--n-seq", type=int, default=192)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=1_000_000)
    ap.add_argument("--finetune-steps", type=int, default=500)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.stage == "collect":
        collect(args.n_seq)
    else:
        run(args.route, args.seed, args.d_sae, args.k, args.n_samples, args.finetune_steps)


if __name__ == "__main__":
    main()
