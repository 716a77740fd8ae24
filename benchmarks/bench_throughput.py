"""featdiff's stages against the reference implementations, on the same data in the same process (run by hand).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_throughput.py            # SmolLM2-135M
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_throughput.py --small    # tiny random model

Activations come from SmolLM2-135M-Instruct (benchmarks/_real_model.py; `--small`: a tiny random
HookedTransformer, seconds, checks the script only) on local text. Three comparisons, each printing the
ratio featdiff time / reference time (< 1: featdiff is faster):

1. collection: ``fd.collect_activations`` against a bare transformer-lens loop of
   ``model.run_with_cache(batch, names_filter=hook, stop_at_layer=L + 1)`` over the same batches (and the
   rows are checked to be equal);
2. SAE training: ``fd.train_saes`` training 1 and 4 topk SAEs (one checkpoint, seeds 0-3) against
   sae-lens's ``SAETrainer.fit`` run once per SAE, with the same config, initialisation, activation scaling
   and batches (so the weights must agree: the largest difference is printed), with each of its engines:
   "sae-lens" (sae-lens's trainer per SAE) and "batched" (all SAEs as one module, sparse decode);
3. alignment: ``fd.align`` on two trained SAEs' decoders (and on synthetic dictionaries of ``--align-d-sae``
   features) against scipy's dense ``linear_sum_assignment`` on the same float64 cosine matrix (the total
   similarity of both matchings is printed).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
import torch

import featdiff as fd
from featdiff.dictionaries.sae import SAETrainConfig


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def load(small: bool):
    if small:
        from transformer_lens import HookedTransformer  # deferred: heavy

        cfg = dict(
            n_layers=4, d_model=64, n_ctx=128, d_head=16, n_heads=4, d_mlp=256, d_vocab=500, act_fn="gelu"
        )
        model = HookedTransformer({**cfg, "seed": 0, "tokenizer_name": None})
        tokens = torch.randint(1, 500, (32, 64), generator=torch.Generator().manual_seed(0))
        return model, tokens
    from _real_model import corpora, get_hf_dir, token_chunks

    model = fd.load_model(str(get_hf_dir()))
    text = corpora()
    tok, bos = model.tokenizer, model.tokenizer.bos_token_id
    tokens = torch.cat([token_chunks(tok, text[c], 128, 16, bos) for c in ("code", "prose")])
    return model, tokens


def bare_collection(model, tokens, hook: str, layer: int, batch_size: int) -> torch.Tensor:
    rows = []
    with torch.no_grad():
        for i in range(0, tokens.shape[0], batch_size):
            _, cache = model.run_with_cache(
                tokens[i : i + batch_size], names_filter=hook, stop_at_layer=layer + 1
            )
            rows.append(cache[hook][:, 1:].reshape(-1, model.cfg.d_model).clone())
    return torch.cat(rows)


def featdiff_batches(acts, name: str, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """The batches ``train_saes`` draws: full batches, reshuffled each epoch with seed + 1_000_003 * epoch."""
    epoch = 0
    while True:
        for b in acts.batches(batch_size, shuffle=True, seed=seed + 1_000_003 * epoch, names=[name]):
            if b[name].shape[0] == batch_size:
                yield b[name]
        epoch += 1


def sae_lens_fit(acts, name: str, sae_seed: int, cfg: SAETrainConfig, data_seed: int):
    """One SAE trained by sae-lens's own ``SAETrainer.fit`` with train_saes's settings; an inference SAE."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig  # deferred: heavy
    from sae_lens.config import SAETrainerConfig  # deferred: heavy
    from sae_lens.training.sae_trainer import SAETrainer  # deferred: heavy

    from featdiff.dictionaries.sae import _init_seed, _to_inference

    d_in = acts.d_model
    steps, bs = cfg.n_steps_for(acts.n_tokens), cfg.batch_size
    decay = int(cfg.lr_decay_fraction * steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_init_seed(name, sae_seed))
        sae = TopKTrainingSAE(
            TopKTrainingSAEConfig(
                d_in=d_in,
                d_sae=cfg.d_sae,
                k=int(cfg.k),
                aux_loss_coefficient=cfg.aux_loss_coefficient,
                decoder_init_norm=cfg.decoder_init_norm,
            )
        )
    tcfg = SAETrainerConfig(
        total_training_samples=steps * bs,
        train_batch_size_samples=bs,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        lr_decay_steps=decay,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=steps + 1,
        device="cpu",
        checkpoint_path=None,
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=featdiff_batches(acts, name, bs, data_seed))
    sae.cfg.normalize_activations = "expected_average_only_in"
    trainer.activation_scaler.scaling_factor = d_in**0.5 / float(acts[name].norm(dim=1).mean())
    return _to_inference(trainer.fit())


def max_diff(a, b) -> float:
    return max(
        float((getattr(a, p) - getattr(b, p)).detach().abs().max())
        for p in ("W_enc", "W_dec", "b_enc", "b_dec")
    )


def fve(sae, x: torch.Tensor) -> float:
    """Fraction of the variance of ``x`` the SAE reconstructs."""
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def matching_total(cos: np.ndarray, rows, cols) -> float:
    return float(cos[np.asarray(rows), np.asarray(cols)].sum())


def align_vs_scipy(label: str, W_ref: torch.Tensor, W_tgt: torch.Tensor, repeats: int = 1) -> float:
    """Prints featdiff's ``align`` against scipy's dense solve (the best of ``repeats`` each, in alternating
    order) and returns the ratio of their times."""
    from scipy.optimize import linear_sum_assignment  # deferred: scipy.optimize is slow to import

    def dense():
        a = torch.nn.functional.normalize(W_ref.double(), dim=1).numpy()
        b = torch.nn.functional.normalize(W_tgt.double(), dim=1).numpy()
        cos = a @ b.T
        return cos, linear_sum_assignment(cos, maximize=True)

    t_ref = t_fd = float("inf")
    for rep in range(repeats):
        runs = [("ref", dense), ("fd", lambda: fd.align(W_ref, W_tgt))]
        got = {name: timed(fn) for name, fn in (runs if rep % 2 == 0 else runs[::-1])}
        (cos, (r, c)), t1 = got["ref"]
        al, t0 = got["fd"]
        t_ref, t_fd = min(t_ref, t1), min(t_fd, t0)
    j = np.flatnonzero(al.match >= 0)
    fd_total = matching_total(cos, al.match[j], j)  # cos rows: reference features; al.match[j]: j's reference
    opt = matching_total(cos, r, c)
    print(
        f"align {label:<28} featdiff {t_fd:7.2f} s   scipy dense {t_ref:7.2f} s   ratio {t_fd / t_ref:5.2f}   "
        f"total {fd_total / opt:.6f} of the dense optimum (certified exact: {al.exact}; best of {repeats})"
    )
    return t_fd / t_ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a tiny random model: checks the script, in seconds")
    ap.add_argument("--d-sae", type=int, default=None, help="default 4 * d_model")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--n-steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each SAE comparison (best is kept)")
    ap.add_argument("--align-d-sae", type=int, default=8192, help="synthetic dictionaries; 0 skips")
    args = ap.parse_args()
    model, tokens = load(args.small)
    import sae_lens.training.sae_trainer  # noqa: F401  (imported before any timing: ~10 s the first time)
    import scipy.optimize  # noqa: F401

    L = model.cfg.n_layers // 2
    hook = f"blocks.{L}.hook_resid_post"
    print(f"torch threads {torch.get_num_threads()}; tokens {tuple(tokens.shape)}; hook {hook}")

    ref, t_tl = timed(lambda: bare_collection(model, tokens, hook, L, 16))  # also the warm-up
    acts, t_fd = timed(
        lambda: fd.collect_activations(
            {"base": model}, tokens, hook=hook, batch_size=16, outlier_factor=None, progress=False
        )
    )
    ref, t1 = timed(lambda: bare_collection(model, tokens, hook, L, 16))
    t_tl = min(t_tl, t1)
    diff = float((acts["base"] - ref).abs().max())
    print(
        f"collection      featdiff {t_fd:7.2f} s   run_with_cache {t_tl:7.2f} s   ratio {t_fd / t_tl:5.2f}   "
        f"({tokens.numel() / t_fd:,.0f} vs {tokens.numel() / t_tl:,.0f} tokens/s; rows differ by {diff:.1e})"
    )

    d_sae = args.d_sae or 4 * model.cfg.d_model
    k = min(args.k, d_sae)
    cfg = SAETrainConfig(
        architecture="topk", d_sae=d_sae, k=k, n_steps=args.n_steps, batch_size=args.batch_size
    )
    bs = min(args.batch_size, acts.n_tokens)
    cfg = cfg.replace(batch_size=bs)
    print(f"SAEs: topk d_in {acts.d_model} d_sae {d_sae} k {k}, {args.n_steps} steps of {bs} rows each")
    fd.train_saes(acts, config=cfg.replace(n_steps=2), progress=False)  # warm-up: first-call costs
    sae_lens_fit(acts, "base", 0, cfg.replace(n_steps=2), data_seed=0)
    results = {}
    for n_saes in (1, 4):
        extra = {f"base_seed{s}": ("base", s) for s in range(1, n_saes)}
        plan = {"base": ("base", 0), **extra}
        t_fd = t_ref = t_b = float("inf")
        for rep in range(args.repeats):  # rotating order; the best of each (the CPU is shared)

            def run_fd(extra=extra):
                return fd.train_saes(acts, config=cfg, seed=0, extra=extra, progress=False)

            def run_batched(extra=extra):
                return fd.train_saes(acts, config=cfg.replace(engine="batched"), seed=0, extra=extra, progress=False)

            def run_ref(plan=plan):
                return {key: sae_lens_fit(acts, "base", s, cfg, data_seed=0) for key, (_, s) in plan.items()}

            runs = [("fd", run_fd), ("batched", run_batched), ("ref", run_ref)]
            runs = runs[rep % 3 :] + runs[: rep % 3]
            got = {name: timed(fn) for name, fn in runs}
            (fd_saes, t0), (b_saes, tb), (ref_saes, t1) = got["fd"], got["batched"], got["ref"]
            t_fd, t_ref, t_b = min(t_fd, t0), min(t_ref, t1), min(t_b, tb)
        worst = max(max_diff(fd_saes[key], ref_saes[key]) for key in fd_saes)
        worst_b = max(max_diff(b_saes[key], ref_saes[key]) for key in b_saes)
        x = acts["base"]
        fve_b = max(abs(fve(b_saes[key], x) - fve(ref_saes[key], x)) for key in b_saes)
        samples = n_saes * args.n_steps * bs
        print(
            f"train {n_saes} SAE{'s' if n_saes > 1 else ' '}    featdiff {t_fd:7.2f} s   sae-lens x{n_saes}  {t_ref:7.2f} s   "
            f"ratio {t_fd / t_ref:5.2f}   ({samples / t_fd:,.0f} vs {samples / t_ref:,.0f} samples/s; "
            f"weights differ by at most {worst:.1e}; best of {args.repeats})"
        )
        print(
            f"  engine=batched    featdiff {t_b:7.2f} s   sae-lens x{n_saes}  {t_ref:7.2f} s   "
            f"ratio {t_b / t_ref:5.2f}   ({samples / t_b:,.0f} vs {samples / t_ref:,.0f} samples/s, "
            f"{t_ref / t_b:.2f}x faster; weights differ by at most {worst_b:.1e}, FVE by {fve_b:.1e})"
        )
        results[n_saes] = fd_saes

    saes = results[4]
    align_vs_scipy(f"trained SAEs ({d_sae})", saes["base"].W_dec.detach(), saes["base_seed1"].W_dec.detach())
    if args.align_d_sae:
        g = torch.Generator().manual_seed(0)
        n, d = args.align_d_sae, acts.d_model
        W = torch.randn(n, d, generator=g)
        W2 = W[torch.randperm(n, generator=g)] + 0.5 * torch.randn(n, d, generator=g)
        align_vs_scipy(f"synthetic ({n} x {n}, d_in {d})", W, W2)


if __name__ == "__main__":
    main()
