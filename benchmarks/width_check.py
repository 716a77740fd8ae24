"""The width check of compare_checkpoints / compare_activations (widen=1) on real activations: the base SAE's
scored share and how much less of the variance a base SAE twice as wide leaves unexplained (the numbers
featdiff.comparison.config.WIDEN_MIN_SCORED / WIDEN_REDUCTION are judged against; docs/metrics.md, "Widening").

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/width_check.py lab        # ~3 min
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/width_check.py smollm2    # ~15 min
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/width_check.py rounds     # ~2 min

lab: the demo's lab checkpoints and SAE run length (150 steps); smollm2: SmolLM2-135M-Instruct at its middle
layer on benchmarks/real_model_defaults.py's 24,576 tokens with train_saes' defaults. The planted cases are
in the known-answer grid's CSV (columns scored_share, probe_reduction). rounds: what compare_activations
records per round (cmp.meta["width_check"]: width, seconds, readings, decision) on the grid's width-0.5x
setting (d_in 32, 64 planted atoms, d_sae 32, 100k training and 10k held-out samples, seed 0).
"""

import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch

import featdiff as fd
from featdiff.comparison.config import CompareConfig
from featdiff.dictionaries.stats import sae_stats, scored_features


def check(acts: fd.ActivationSet, name: str, **train_kwargs) -> dict:
    train, held = acts.split(0.2, seed=0)
    x = held.column(name)
    out = {"checkpoint": name, "n_tokens": acts.n_tokens}
    for factor in (4, 8):
        t = time.perf_counter()
        w = factor * acts.d_model
        sae = fd.train_saes(train, names=[name], d_sae=w, seed=0, progress=False, **train_kwargs)[name]
        out[f"fve_{w}"] = float(sae_stats(sae, x, where="width_check")["fve"])
        if factor == 4:
            live = scored_features(sae, x, CompareConfig().min_contribution)[2]
            out["scored_share"] = float(live.float().mean())
        out[f"train_s_{w}"] = round(time.perf_counter() - t, 1)
    a, b = out[f"fve_{4 * acts.d_model}"], out[f"fve_{8 * acts.d_model}"]
    out["unexplained_reduction"] = 1 - (1 - b) / (1 - a)
    return out


def lab() -> list[dict]:
    from featdiff.cli import DEMO_SAE_STEPS
    from featdiff.models.folder import load_prompts
    from featdiff.models.hooks import default_hook

    path = fd.lab.build(fd.lab.LabConfig(), progress=False)
    models = dict(zip(("base", "rl", "sft"), (fd.load_model(p) for p in fd.lab.load(path)), strict=True))
    pad = (getattr(models["base"], "featdiff_meta", None) or {}).get("pad_token_id")
    acts = fd.collect_activations(
        models, load_prompts(models["base"]), hook=default_hook(models["base"]), pad_token_id=pad, progress=False
    )
    return [check(acts, n, n_steps=DEMO_SAE_STEPS) for n in acts.names]


def smollm2() -> list[dict]:
    from _real_model import corpora, get_hf_dir, token_chunks

    base = fd.load_model(str(get_hf_dir(None)))
    hook = f"blocks.{base.cfg.n_layers // 2}.hook_resid_post"
    tok, bos = base.tokenizer, base.tokenizer.bos_token_id
    text = corpora()
    tokens = torch.cat([token_chunks(tok, text[c], 128, 96, bos, start=256 * 63) for c in ("code", "prose")])
    acts = fd.collect_activations({"base": base}, tokens, hook=hook, progress=False)
    engine = os.environ.get("FEATDIFF_ENGINE", "auto")  # train_saes' default (batched for topk); or "sae-lens"
    return [check(acts, "base", engine=engine)]


def rounds() -> list[dict]:
    from featdiff.synthetic import plant_checkpoints

    targets = {
        "mixed": {"reused": 0.7, "recombined": 0.15, "novel": 0.15},
        "sft_like": {"reused": 0.45, "recombined": 0.2, "novel": 0.35},
    }
    p = plant_checkpoints(d_in=32, n_atoms=64, targets=targets, k=4, seed=0)
    t = time.perf_counter()
    cmp = fd.compare_activations(
        p.sample(100_000, seed=1), held_out=p.sample(10_000, seed=2), d_sae=32, k=4, metrics=[], progress=False
    )
    print(f"rounds: {time.perf_counter() - t:.1f} s in all; planted fractions:\n{p.fractions.round(3)}")
    out = []
    for r in cmp.meta["width_check"]:
        row = {k: v for k, v in r.items() if k not in ("summary", "narrow")}
        for tgt, v in r["summary"].items():
            row.update({f"{tgt}_{c}": v[c] for c in ("reuse_raw", "recombination_raw", "novelty_raw")})
        out.append(row)
    return out


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    for which in sys.argv[1:] or ["lab"]:
        for row in {"lab": lab, "smollm2": smollm2, "rounds": rounds}[which]():
            print(which, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
