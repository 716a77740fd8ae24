"""compare_checkpoints with its defaults on a real pretrained checkpoint: which warnings fire, and what
min_contribution does there (run by hand; ~25 min per route on 1 CPU thread).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_defaults.py saes crosscoder
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/real_model_defaults.py finetune finetune@1

A route may carry a seed (``finetune@1``: compare_checkpoints(seed=1)); each prints its wall time, the
process's peak RSS so far and, for the SAE routes, the reuse floor and interval width per checkpoint.

SmolLM2-135M-Instruct and two fine-tunes of it (benchmarks/bench_real_model.py's: 10 AdamW steps on Python
source, 10 on English READMEs), 24,576 evaluation tokens (the issue's data size), the hook at the middle
layer. For each route named (default "saes") it prints every featdiff warning the default call raised and
the summary; for the SAE route it re-scores the same SAEs with min_contribution 0 (every latent that fires
is live, docs/design.md's "fired at least once") and 0.01 (the default). Fine-tunes are cached in
~/.cache/featdiff-bench/finetunes (or $FEATDIFF_BENCH_OUT).
"""

import os
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from _real_model import corpora, get_hf_dir, token_chunks
from bench_real_model import fine_tune

import featdiff as fd
from featdiff.comparison.config import CompareConfig

out = Path(os.environ.get("FEATDIFF_BENCH_OUT", Path.home() / ".cache" / "featdiff-bench" / "finetunes"))
hf_dir = get_hf_dir(None)
base = fd.load_model(str(hf_dir))
L = base.cfg.n_layers // 2
hook = f"blocks.{L}.hook_resid_post"
tok, bos = base.tokenizer, base.tokenizer.bos_token_id
text = corpora()
ft = {}
for i, (name, corpus) in enumerate((("sft_code", "code"), ("sft_prose", "prose"))):
    if not (out / name / "config.json").exists():
        rows = token_chunks(tok, text[corpus], 64, 256, bos)
        fine_tune(hf_dir, rows, 10, 4, 3e-4, out / name, seed=i, device="cpu")
    ft[name] = fd.load_model(str(out / name))
models = {"base": base, **ft}
skip = 256 * 63
tokens = torch.cat([token_chunks(tok, text[c], 128, 96, bos, start=skip) for c in ("code", "prose")])
print("eval tokens", tokens.numel(), flush=True)
for spec in sys.argv[1:] or ["saes"]:  # noqa: C901
    method, _, seed = spec.partition("@")
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cmp = fd.compare_checkpoints(models, tokens=tokens, hook=hook, method=method, seed=int(seed or 0), progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n=== {spec}: {time.perf_counter() - t:.0f} s, peak RSS so far {peak:.2f} GB", flush=True)
    if method != "crosscoder":
        s = cmp.summary
        for name in s.index:
            print(f"ROUTE {spec} {name}: reuse_raw {s.loc[name, 'reuse_raw']:.3f} floor {s.loc[name, 'reuse_floor']:.3f} "
                  f"reuse {s.loc[name, 'reuse']:.3f} [{s.loc[name, 'reuse_lo']:.3f}, {s.loc[name, 'reuse_hi']:.3f}] "
                  f"width {s.loc[name, 'reuse_hi'] - s.loc[name, 'reuse_lo']:.3f} novelty {s.loc[name, 'novelty']:.3f} "
                  f"[{s.loc[name, 'novelty_lo']:.3f}, {s.loc[name, 'novelty_hi']:.3f}] n_live {s.loc[name, 'n_live']} "
                  f"agreement {s.loc[name, 'index_agreement'] if 'index_agreement' in s else float('nan'):.3f}", flush=True)
    seen = set()
    for x in w:
        m = str(x.message)
        if m not in seen and x.category.__name__ == "FeatdiffWarning":
            seen.add(m)
            print("WARN", x.category.__name__, m[:600])
    print(cmp.summary.T.to_string())
    if method == "saes":
        for mc in (0.0, 0.01):
            c2 = fd.compare_dictionaries(
                cmp.dictionaries,
                cmp.extras["activations"],
                reference="base",
                replicas=cmp.extras["replica_saes"],
                config=CompareConfig(min_contribution=mc),
                progress=False,
            )
            cols = [
                c
                for c in [
                    "n_scored",
                    "reuse_raw",
                    "reuse_floor",
                    "reuse",
                    "reuse_lo",
                    "reuse_hi",
                    "recombination_raw",
                    "recombination",
                    "novelty_raw",
                    "novelty",
                    "novelty_lo",
                    "novelty_hi",
                    "indistinguishable_from_reference",
                ]
                if c in c2.summary
            ]
            print(f"\nmin_contribution={mc}")
            print(c2.summary[cols].to_string())
