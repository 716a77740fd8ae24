"""Throughput at 7B shapes on one GPU, and the GPU hours of a 7B triple from it (run by hand on a GPU).

    python benchmarks/gpu_scale.py                  # on a CUDA machine: a model of 4 blocks (well under 5 min)
    python benchmarks/gpu_scale.py --n-blocks 15    # collection through all 15 blocks a 7B hook needs
    python benchmarks/gpu_scale.py --no-model       # the dictionaries only, on random activations
    python benchmarks/gpu_scale.py --device cpu --small [--no-model]   # checks the script on a CPU (seconds)

Throughput does not depend on the weights' values, so the model here is a randomly initialised
TransformerLens model of a 7B model's shape (Qwen2-7B: d_model 3,584, 28 heads of 128 with 4 key/value
heads, gated SiLU MLP of 18,944, RMSNorm, rotary, vocabulary 152,064, bf16) holding ``--n-blocks`` blocks;
``collect_activations`` (which stops at the hook's block) runs through all of them. A real 7B comparison
hooks the middle layer (14 of 28), so it runs 15 blocks: the collection rate of the full depth is the
measured one times n_blocks / 15 (every block costs the same; the embedding is a lookup), and the table
says which it is. Three "checkpoints" are the same module (the work per token is the same as three
distinct ones). Then ``train_saes`` (one and four SAEs of ``--d-sae`` latents, TopK, float32, TF32 off as
featdiff leaves it) and ``train_crosscoder`` over the three, on those activations, with samples/s and
TFLOP/s against a float32 matmul of the same shape in the same run. Last, the hours a 50M-token
base/RL/SFT comparison needs on this device, from these measured rates (the same calculation as
docs/scale.md's, which uses the CPU's rates); with ``--no-model`` its collection hours are not measured
and the total counts the dictionaries only. tests/test_benchmarks.py runs it at tiny sizes on the CPU.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

import featdiff as fd


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def roofline(m: int, k: int, n: int, device: str, dtype=torch.float32, reps: int = 10) -> float:
    """Best-of-``reps`` TFLOP/s of an (m x k) @ (k x n) matmul."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        _, dt = timed(lambda: a @ b, device)
        best = min(best, dt)
    return 2 * m * k * n / best / 1e12


def model_7b(device: str, small: bool, n_blocks: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig  # heavy: only when run

    if small:
        shape = dict(d_model=64, d_head=16, n_heads=4, n_key_value_heads=2, d_mlp=256, d_vocab=500, n_ctx=64)
    else:
        shape = dict(
            d_model=3584, d_head=128, n_heads=28, n_key_value_heads=4, d_mlp=18944, d_vocab=152064, n_ctx=1024
        )
    cfg = HookedTransformerConfig(
        n_layers=n_blocks, act_fn="silu", gated_mlp=True, normalization_type="RMS",
        positional_embedding_type="rotary", rotary_dim=shape["d_head"], seed=0, tokenizer_name=None,
        dtype=torch.float32 if small else torch.bfloat16, device=device, **shape,
    )  # fmt: skip
    with torch.device(device):  # allocate and initialise the weights on the device, not on the host first
        return HookedTransformer(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes: checks the script, not the speed")
    ap.add_argument("--n-seq", type=int, default=48, help="sequences of the model's n_ctx tokens")
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--n-steps", type=int, default=40)
    ap.add_argument("--n-blocks", type=int, default=4, help="blocks of the 7B-shaped model (15: the full depth)")
    ap.add_argument(
        "--no-model", action="store_true", help="skip collection: random activations of d_model 3584"
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_scale: no CUDA device here; skipped (--device cpu --small checks the script).")
        return
    warnings.simplefilter("ignore")
    torch.backends.cuda.matmul.allow_tf32 = False
    small = args.small
    n_layers_full, hook_layer = (4, 2) if small else (28, 14)
    n_blocks = min(args.n_blocks, hook_layer + 1)
    d_sae = 256 if small else args.d_sae
    n_seq = 8 if small else args.n_seq
    n_steps = 5 if small else args.n_steps
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    print(f"gpu_scale on {dev} ({name}), torch {torch.__version__}")
    rows = []

    if args.no_model:
        d = 64 if small else 3584
        g = torch.Generator().manual_seed(0)
        acts = fd.ActivationSet.from_tensors(
            {n: torch.randn(n_seq * 1024, d, generator=g) for n in ("base", "rl", "sft")}
        )
        collect_tps, d_model = float("nan"), d
        rows.append(("collect (3 checkpoints)", float("nan"), "not measured (--no-model)"))
    model, t_build = (None, 0.0) if args.no_model else timed(lambda: model_7b(dev, small, n_blocks), dev)
    if not args.no_model:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"model: {n_blocks} of the {hook_layer + 1} blocks (of {n_layers_full}) that a middle-layer hook "
            f"runs, 7B shape, {n_params / 1e9:.2f}B parameters (built in {t_build:.0f} s)"
        )
        seq = model.cfg.n_ctx
        tokens = torch.randint(1, model.cfg.d_vocab, (n_seq, seq), generator=torch.Generator().manual_seed(0))
        hook = f"blocks.{n_blocks - 1}.hook_resid_post"
        models = {"base": model, "rl": model, "sft": model}
        fd.collect_activations(
            models, tokens[:2], hook=hook, batch_size=2, progress=False, device=dev
        )  # warm-up
        n_tok = tokens.numel() * len(models)
        acts, dt = timed(
            lambda m=models: fd.collect_activations(
                m, tokens, hook=hook, batch_size=8, progress=False, device=dev
            ),
            dev,
        )
        d_model = model.cfg.d_model
        n_w = sum(p.numel() for n, p in model.blocks.named_parameters() if "W_" in n)
        flop_tok = 2 * n_w + n_blocks * 2 * seq * d_model
        bf16 = roofline(8 * seq, d_model, model.cfg.d_mlp, dev, torch.float32 if small else torch.bfloat16)
        collect_tps = n_tok / dt * n_blocks / (hook_layer + 1)  # at the full depth: every block costs the same
        tf = n_tok * flop_tok / dt / 1e12
        rows.append(("collect (3 checkpoints)", dt, f"{collect_tps:,.0f} tokens/s through {hook_layer + 1} blocks "
                     f"({n_tok / dt:,.0f} measured through {n_blocks}), {tf:.3g} TFLOP/s = {tf / bf16:.0%} of "
                     f"a {bf16:.3g} TFLOP/s matmul"))  # fmt: skip
        del model, models
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()

    bs = min(args.batch_size, acts.n_tokens)
    fp32 = roofline(bs, d_model, d_sae, dev)
    sae_rate = {}
    for n_sae in (1, 4):
        extra = {f"base_{i}": ("base", i) for i in range(1, n_sae)}
        kw = dict(d_sae=d_sae, k=args.k, n_steps=n_steps, batch_size=bs, names=["base"], extra=extra or None,
                  progress=False, device=dev)  # fmt: skip
        fd.train_saes(acts, **{**kw, "n_steps": 2})  # warm-up
        _, dt = timed(lambda kw=kw: fd.train_saes(acts, **kw), dev)
        sps = n_steps * bs * n_sae / dt
        sae_rate[n_sae] = sps
        tf = 12 * d_model * d_sae * sps / 1e12  # dense count: 2 matmuls forward, backward twice forward
        rows.append((f"train_saes ({n_sae} SAE{'s' * (n_sae > 1)})", dt,
                     f"{sps:,.0f} samples/s, {tf:.3g} TFLOP/s = {tf / fp32:.0%} of a {fp32:.3g} TFLOP/s fp32 matmul"))  # fmt: skip
    kw = dict(d_sae=d_sae, n_steps=n_steps, batch_size=bs, progress=False, device=dev)
    fd.train_crosscoder(acts, **{**kw, "n_steps": 2})  # warm-up
    _, dt = timed(lambda: fd.train_crosscoder(acts, **kw), dev)
    cc_sps = n_steps * bs / dt
    tf = 12 * 3 * d_model * d_sae * cc_sps / 1e12
    rows.append(("train_crosscoder (3 models)", dt,
                 f"{cc_sps:,.0f} samples/s, {tf:.3g} TFLOP/s = {tf / fp32:.0%} of the fp32 matmul"))  # fmt: skip

    print("\n| stage | seconds | throughput |\n|---|---|---|")
    for stage, dt, note in rows:
        print(f"| {stage} | {'-' if math.isnan(dt) else f'{dt:.2f}'} | {note} |")

    # a 50M-token base/RL/SFT triple at this shape: collection, 5 SAEs (one per checkpoint + 2 base
    # replicas, trained in one pass: the 4-SAE rate), one crosscoder pass; from the rates measured above
    tokens_7b = 50e6
    hours = {
        "collection": tokens_7b * 3 / collect_tps,
        "5 SAEs": tokens_7b * 5 / sae_rate[4],
        "crosscoder": tokens_7b / cc_sps,
    }
    print(f"\nA 50M-token triple at this shape (d_sae {d_sae}) on this device, from these rates:")
    for k_, s in hours.items():
        print(f"  {k_:<11} {'not measured' if math.isnan(s) else f'{s / 3600:6.3g} h'}")
    total = sum(s for s in hours.values() if not math.isnan(s))
    print(f"  {'total':<11} {total / 3600:6.3g} h" + (" (the dictionaries only)" if args.no_model else ""))
    print(f"\ngpu_scale finished in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
