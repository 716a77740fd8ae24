"""The loss-settling rule (featdiff.dictionaries.health.loss_settling) at several windows, on the runs that
chose its window and tolerance (docs/diagnostics.md, "Unsettled training"): the demo's SAEs (the lab's base
activations, train_saes' defaults) at 60-2,000 steps, and the crosscoder runs of tests/test_crosscoder.py
(a short wide one, a good one, the defaults on benchmarks/bench_crosscoder_defaults.py's d_in-16 data).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/loss_settling.py [--cache-dir DIR]   # ~2 min

The window is a fraction of the steps before the lr decay; the value is the relative fall of the mean loss
from the window's first half to its second (> 0: still falling).
"""

import argparse
import warnings

import torch

import featdiff as fd
import featdiff.dictionaries.crosscoder.train as crosscoder_train
from featdiff.activations.activations import collect_activations
from featdiff.dictionaries.health import loss_settling
from featdiff.synthetic.crosscoder import plant_shared_specific

WINDOWS = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)


def row(label: str, losses, end: int) -> None:
    values = " ".join(f"{loss_settling(torch.as_tensor(losses), w, end):+.4f}" for w in WINDOWS)
    print(f"{label:<28} {values}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", default=None, help="where the lab is cached (fd.lab.build)")
    args = ap.parse_args()
    print(f"{'run':<28} " + " ".join(f"{w:>7}" for w in WINDOWS))
    base, rl, sft = fd.lab.load(fd.lab.build(cache_dir=args.cache_dir, progress=False))
    acts = collect_activations({"base": base, "rl": rl, "sft": sft}, base.featdiff_prompts, progress=False)
    train, _ = acts.split(0.2, seed=0)
    for n in (60, 150, 400, 1000, 2000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = fd.train_saes(train, names=["base"], n_steps=n, progress=False)["base"].featdiff_train
        row(f"lab SAE, {n} steps", rec["losses"], rec["lr_decay_start"])

    captured = {}
    health = crosscoder_train.training_health

    def spy(losses, dead, **kw):
        captured.update(losses=losses.clone(), decay=kw["lr_decay_fraction"])
        return health(losses, dead, **kw)

    crosscoder_train.training_health = spy
    small = dict(d_in=8, n_shared=8, n_specific={"base": 2, "rl": 2, "sft": 2}, k=2, n_tokens=4096, noise=0.02)
    defaults = dict(d_in=16, n_shared=16, n_specific={"base": 2, "rl": 2, "sft": 2}, k=3.0, n_tokens=16384,
                    rotation=0.1, noise=0.02)  # fmt: skip
    runs = {
        "crosscoder, 40 steps": (small, dict(d_sae=512, n_steps=40, batch_size=128)),
        "crosscoder, 1,500 steps": (small, dict(d_sae=24, k=2, n_steps=1500, batch_size=128)),
        "crosscoder defaults, 1,954": (defaults, {}),
    }
    for label, (plant, kw) in runs.items():
        acts, _ = plant_shared_specific(seed=0, **plant)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            crosscoder_train.train_crosscoder(acts, progress=False, seed=0, **kw)
        n = len(captured["losses"])
        decay_start = int(n * (1 - captured["decay"]))
        row(label, captured["losses"], decay_start if decay_start >= 10 else None)


if __name__ == "__main__":
    main()
