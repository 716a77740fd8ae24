"""Do featdiff's ``device=`` paths work on an accelerator, and how fast are they there? (run by hand)

    .venv/bin/python benchmarks/gpu_check.py                 # on a machine with a CUDA GPU (~1-2 min)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --small   # checks the script itself on a CPU

Without CUDA (and without ``--device cpu``) it says so and exits 0. On the device it builds three tiny
Llama-free TransformerLens models (base and two perturbed copies), then runs every stage there and the same
stage on the CPU in the same run: collection (tokens/s through the models), ``train_saes`` (samples/s
through four SAEs), ``train_crosscoder`` (samples/s), feature edits of an SAE and of a crosscoder
(``edit_features``, the dictionaries left on the CPU: the edit places a copy on the model's device),
``sample_codes``, and ``compare_checkpoints(device=...)`` end to end. Each check compares the device's
numbers with the CPU's (TF32 off) and prints PASS or FAIL; the exit status is the number of failures.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import featdiff as fd
from featdiff.analyses.generalization import sample_codes


def models(d_model: int, n_layers: int, device: str) -> dict:
    from transformer_lens import HookedTransformer, HookedTransformerConfig  # heavy: only when run

    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_ctx=128, d_head=32, n_heads=d_model // 32, d_vocab=512,
        act_fn="gelu", d_mlp=4 * d_model, seed=0, device="cpu",
    )  # fmt: skip
    base = HookedTransformer(cfg)
    out = {"base": base}
    for i, name in enumerate(["rl", "sft"]):
        m = HookedTransformer(cfg)
        m.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.02 * (i + 1) * torch.randn(p.shape, generator=g))
        out[name] = m
    return {n: m.to(device, print_details=False) for n, m in out.items()}


def fve_of(sae, x: torch.Tensor) -> float:
    """Fraction of the variance of ``x`` that ``sae`` reconstructs."""
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="the accelerator to check (default: cuda)")
    ap.add_argument("--small", action="store_true", help="tiny sizes: checks the script, not the speed")
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here; skipped (pass --device cpu to exercise the script on the CPU)."
        )
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    warnings.simplefilter("ignore")
    small = args.small
    d_model, n_layers = (64, 2) if small else (256, 4)
    n_seq, seq = (32, 32) if small else (512, 128)
    d_sae = 4 * d_model
    sae_steps, cc_steps, batch = (20, 20, 256) if small else (300, 300, 4096)
    hook = "blocks.1.hook_resid_post"
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    print(
        f"gpu_check on {dev} ({name}); CPU threads {torch.get_num_threads()}; d_model {d_model}, d_sae {d_sae}"
    )

    failures = 0

    def check(what: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {detail}")

    rows = []
    tokens = torch.randint(0, 512, (n_seq, seq), generator=torch.Generator().manual_seed(0))
    ms = {d: models(d_model, n_layers, d) for d in (dev, "cpu")}
    acts = {}
    for d in (dev, "cpu"):
        acts[d], s = timed(
            lambda d=d: fd.collect_activations(ms[d], tokens, hook, progress=False, device=d), d
        )
        rows.append(("collect (3 models)", d, s, f"{3 * tokens.numel() / s:,.0f} tokens/s"))
    diff = max(float((acts[dev][n] - acts["cpu"][n]).abs().max()) for n in acts["cpu"].names)
    check("collection", acts[dev].n_tokens == acts["cpu"].n_tokens and diff < 1e-3, f"max |diff| {diff:.2e}")
    data = acts["cpu"]

    kw = dict(d_sae=d_sae, k=16, n_steps=sae_steps, batch_size=batch, progress=False)
    saes = {}
    for d in (dev, "cpu"):
        extra = {"base replica 1": ("base", 1)}
        saes[d], s = timed(lambda d=d, extra=extra: fd.train_saes(data, extra=extra, device=d, **kw), d)
        rows.append(("train_saes (4 SAEs)", d, s, f"{4 * sae_steps * batch / s:,.0f} samples/s"))
    fve = {d: fve_of(saes[d]["base"], data["base"]) for d in saes}
    on_cpu = all(s.W_dec.device.type == "cpu" for s in saes[dev].values())
    check(
        "train_saes",
        on_cpu and abs(fve[dev] - fve["cpu"]) < 0.05,
        f"base FVE {fve[dev]:.3f} vs {fve['cpu']:.3f}",
    )

    ccs = {}
    for d in (dev, "cpu"):
        ccs[d], s = timed(
            lambda d=d: fd.train_crosscoder(data, d_sae=d_sae, k=16, n_steps=cc_steps, batch_size=batch, progress=False, device=d),
            d,
        )  # fmt: skip
        rows.append(("train_crosscoder", d, s, f"{cc_steps * batch / s:,.0f} samples/s"))
    fv = {d: float(ccs[d].evaluate(data)["fve"].mean()) for d in ccs}
    check("train_crosscoder", abs(fv[dev] - fv["cpu"]) < 0.05, f"mean FVE {fv[dev]:.3f} vs {fv['cpu']:.3f}")

    # edits: dictionaries stay on the CPU, the models on the device
    sae, cc = saes["cpu"]["rl"], ccs["cpu"]
    probe = tokens[:8]
    for what, edit_for in [
        ("SAE edit", lambda d: fd.FeatureEdit(sae, list(range(8)), mode="scale", alpha=3.0, hook=hook)),
        (
            "crosscoder edit (joint codes)",
            lambda d: fd.FeatureEdit(
                cc, list(range(8)), mode="ablate", model_name="rl", others=ms[d], hook=hook
            ),
        ),
    ]:
        out = {}
        for d in (dev, "cpu"):
            with fd.edit_features(ms[d]["rl"], edit_for(d)) as edited:
                out[d], s = timed(lambda: edited(probe), d)
            rows.append((what, d, s, f"{probe.numel() / s:,.0f} tokens/s"))
        with torch.no_grad():
            plain = ms["cpu"]["rl"](probe)
        diff = float((out[dev].cpu() - out["cpu"]).abs().max())
        moved = float((out["cpu"] - plain).abs().max())
        check(
            what,
            diff < 1e-2 and moved > 1e-3,
            f"device vs CPU max |diff| {diff:.2e}; the edit moved logits {moved:.2e}",
        )
    assert sae.W_dec.device.type == "cpu" and cc.W_dec.device.type == "cpu"

    prompts, answers = tokens[:16, :8], tokens[:16, 8:12]
    codes = {d: sample_codes(sae, ms[d]["rl"], prompts, answers, hook=hook) for d in (dev, "cpu")}
    diff = float((codes[dev] - codes["cpu"]).abs().max())
    check("sample_codes", codes[dev].device.type == "cpu" and diff < 1e-2, f"max |diff| {diff:.2e}")

    cmp, s = timed(
        lambda: fd.compare_checkpoints(
            ms[dev], tokens=tokens, hook=hook, d_sae=d_sae, k=16, progress=False, device=dev,
            train_kwargs={"n_steps": sae_steps, "batch_size": batch},
        ),
        dev,
    )  # fmt: skip
    rows.append(("compare_checkpoints", dev, s, ""))
    check(
        "compare_checkpoints",
        bool(cmp.summary["reuse"].between(0, 1).all()),
        f"{len(cmp.features)} feature rows",
    )

    print(f"\n{'stage':32s} {'device':8s} {'seconds':>8s}  throughput   (device / CPU)")
    base = {what: s for what, d, s, _ in rows if d == "cpu"}
    for what, d, s, tp in rows:
        ratio = f"  {base[what] / s:5.1f}x faster" if d != "cpu" and what in base else ""
        print(f"{what:32s} {d:8s} {s:8.2f}  {tp}{ratio}")
    print(f"\n{failures} check(s) failed" if failures else "\nall checks passed")
    return failures


if __name__ == "__main__":
    raise SystemExit(main())
