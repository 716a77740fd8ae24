"""Why the SAE view and the crosscoder view of the lab disagree about SFT (run by hand; docs/lab.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lab_crosscoder_views.py [--lab PATH] [--seed 0]

On the cached default lab it collects the base / rl / sft activations the crosscoder view uses, then
prints, for the crosscoder view's settings (d_sae 256, k 8, 600 steps) and for ``train_crosscoder``'s
defaults at the same width: fit and dead latents, the run's diagnostics, MAS categories, the NRN
distribution of rl and sft against the base (how many features pass 0.6 / 0.7 / 0.9), and, among the
features the crosscoder calls shared, how many have base and tuned decoder rows that point different
ways (cosine < 0.7: what the SAE view, which matches directions, would call not reused). It also prints
how far each checkpoint's activations moved from the base's (relative squared distance, token by token).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from featdiff import lab
from featdiff.activations.collect import collect_activations
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.stats import firing_frequency
from featdiff.metrics.crosscoder import decoder_cosine, mas, nrn
from featdiff.models.folder import load_prompts
from featdiff.models.hooks import default_hook


def describe(label: str, cc, acts) -> None:
    ev = cc.evaluate(acts)
    freq = firing_frequency(cc, acts).numpy()
    live = freq > 0
    cat = mas(cc)["category"][live]
    print(f"\n== {label}: k={cc.cfg.k}, steps={cc.diagnostics['n_steps']}, lr={cc.cfg.lr}")
    print("fve", dict(zip(ev.checkpoint, ev.fve.round(3), strict=True)), "l0", round(float(ev.l0[0]), 1))
    dg = cc.diagnostics
    print(
        f"dead {int((~live).sum())}/{cc.d_sae}; loss_settling {dg['loss_settling']:.3f} "
        f"settled {dg['loss_settled']}"
    )
    print("MAS categories (live):", cat.value_counts().to_dict())
    for tuned in [n for n in cc.names if n != "base"]:
        r = nrn(cc, tuned=tuned, base="base")[live]
        cos = decoder_cosine(cc, "base", tuned)[live]
        shared = (r >= 0.3) & (r <= 0.7)
        q = np.quantile(r, [0.1, 0.5, 0.9, 0.99]).round(3).tolist()
        print(
            f"{tuned}: NRN quantiles 10/50/90/99% {q}; NRN>0.6: {int((r > 0.6).sum())}, >0.7: "
            f"{int((r > 0.7).sum())}, >0.9: {int((r > 0.9).sum())}; shared (0.3-0.7) with "
            f"cos(base,{tuned}) < 0.7: {int((shared & (cos < 0.7)).sum())}/{int(shared.sum())}, "
            f"< 0.9: {int((shared & (cos < 0.9)).sum())}; median cos {float(cos[shared].median()):.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", default=None, help="lab folder (default: build or reuse the default lab)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-view", action="store_true", help="skip the crosscoder view's settings")
    ap.add_argument("--skip-defaults", action="store_true")
    ap.add_argument("--d-sae", type=int, default=256, help="width of the defaults run (default 256)")
    ap.add_argument("--lr", type=float, default=None, help="lr of the defaults run (default: the lr rule)")
    ap.add_argument("--pair", action="store_true", help="also a 2-model (base, sft) crosscoder, defaults")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = args.lab or lab.build(progress=False)
    base, rl, sft = lab.load(path)
    tokens = load_prompts(base)
    pad = int((base.featdiff_meta or {}).get("pad_token_id", 13))
    hook = default_hook(base)
    models = {"base": base, "rl": rl, "sft": sft}
    acts = collect_activations(models, tokens, hook, pad_token_id=pad, progress=False)
    print(f"lab {path}; hook {hook}; {acts.n_tokens} tokens, d_in {acts.d_model}")
    xb = acts["base"]
    for name in ("rl", "sft"):
        rel = float(((acts[name] - xb).pow(2).sum(1) / xb.pow(2).sum(1).clamp(min=1e-12)).median())
        print(f"{name}: median over tokens of ||x_{name} - x_base||^2 / ||x_base||^2 = {rel:.3f}")
    if not args.skip_view:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            view = train_crosscoder(
                acts, d_sae=256, k=8, n_steps=600, batch_size=256, lr=3e-3, seed=args.seed, progress=False
            )
        describe("crosscoder view settings (d_sae 256, k 8, 600 steps, lr 3e-3)", view, acts)
    runs = [] if args.skip_defaults else [("base", "rl", "sft")]
    runs += [("base", "sft")] if args.pair else []
    for names in runs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cc = train_crosscoder(
                acts.select(list(names)), d_sae=args.d_sae, lr=args.lr, seed=args.seed, progress=False
            )
        describe(f"train_crosscoder defaults on {names} at d_sae {args.d_sae}", cc, acts.select(list(names)))
        for w in caught:
            print("warning:", w.message)


if __name__ == "__main__":
    main()
