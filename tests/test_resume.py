"""Resumable runs: a run SIGKILLed part-way and resumed with the same call ends with the weights and tables
of an uninterrupted run; the same seed gives the same tables in two fresh interpreters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import featdiff as fd
from featdiff.core.runstate import KILL_ENV
from featdiff.errors import FeatdiffError

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Tiny, seeded data shared by the subprocesses and this one (the same tensors in every interpreter).
ACTS = """
import torch, featdiff as fd
g = torch.Generator().manual_seed(0)
mix = torch.randn(24, 8, generator=g)
codes = torch.relu(torch.randn(600, 24, generator=g) - 1.0)
base = codes @ mix
acts = fd.ActivationSet.from_tensors({"base": base, "rl": base + 0.1 * torch.randn(600, 8, generator=g)})
"""

SAE_RUN = dict(k=3, d_sae=32, n_steps=120, batch_size=64, extra={"base_seed1": ("base", 1)}, progress=False)


def _python(code: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ACTS) + textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def _acts():
    scope: dict = {}
    exec(textwrap.dedent(ACTS), scope)
    return scope["acts"]


def _killed(res: subprocess.CompletedProcess) -> bool:
    return res.returncode == -signal.SIGKILL


def _manifest_step(folder: Path, run: str) -> int:
    return json.loads((folder / f"featdiff-{run}.json").read_text())["step"]


@pytest.mark.slow  # two fresh interpreters (about 15 s of CPU)
@pytest.mark.parametrize("engine", ["sae-lens", "batched"])
def test_train_saes_resumes_after_sigkill_to_the_uninterrupted_weights(tmp_path, engine):
    SAE_RUN = {**globals()["SAE_RUN"], "engine": engine}  # noqa: N806
    ck, out = tmp_path / "ck", tmp_path / "saes"
    (tmp_path / "ck").mkdir()
    (ck / "my_notes.txt").write_text("mine")  # the user's file in the checkpoint folder
    run = f"""
    import torch
    from safetensors.torch import save_file
    saes = fd.train_saes(acts, checkpoint_dir={str(ck)!r}, checkpoint_every=25, **{SAE_RUN!r})
    fd.save_saes(saes, {str(out)!r})
    save_file({{key: torch.tensor(s.featdiff_train["losses"]) for key, s in saes.items()}}, {str(out)!r} + ".losses")
    """
    first = _python(run, kill_at="train_saes:60")
    assert _killed(first), first.stderr[-2000:]
    assert not out.exists()
    assert _manifest_step(ck, "train_saes") == 50  # killed after step 60: the last save was at 50
    second = _python(run)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _manifest_step(ck, "train_saes") == 120
    assert (ck / "my_notes.txt").read_text() == "mine"

    acts = _acts()
    ref = fd.train_saes(acts, **SAE_RUN)
    got = {key: fd.load_sae(out / key) for key in ref}
    losses = load_file(str(out) + ".losses")
    for key, sae in ref.items():
        for n, t in sae.state_dict().items():
            assert torch.equal(got[key].state_dict()[n], t), (key, n)  # bitwise on the CPU
        assert torch.equal(losses[key], torch.tensor(sae.featdiff_train["losses"]))
    # a finished run called again reloads its last save instead of training
    again = fd.train_saes(acts, checkpoint_dir=ck, checkpoint_every=25, **SAE_RUN)
    assert torch.equal(again["rl"].W_dec, ref["rl"].W_dec)

    # the tables follow: the resumed SAEs give the uninterrupted run's comparison
    a = fd.compare_dictionaries({k: ref[k] for k in ("base", "rl")}, acts, progress=False)
    b = fd.compare_dictionaries({k: got[k] for k in ("base", "rl")}, acts, progress=False)
    pd.testing.assert_frame_equal(a.features, b.features)
    pd.testing.assert_frame_equal(a.summary, b.summary)


def test_train_saes_refuses_a_checkpoint_of_another_run_and_clears_only_its_files(tmp_path):
    acts = _acts()
    small = {**SAE_RUN, "n_steps": 30, "extra": None}
    fd.train_saes(acts, checkpoint_dir=tmp_path, checkpoint_every=10, **small)
    (tmp_path / "notes.md").write_text("keep me")
    with pytest.raises(FeatdiffError, match=r"another run: .*steps \(checkpoint 30, this run 40\)"):
        fd.train_saes(acts, checkpoint_dir=tmp_path, checkpoint_every=10, **{**small, "n_steps": 40})
    fd.train_saes(acts, checkpoint_dir=tmp_path, checkpoint_every=10, keep_checkpoint=False, **small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


CC_RUN = dict(d_sae=32, k=3, n_steps=100, batch_size=64, progress=False)


@pytest.mark.slow  # two fresh interpreters (about 15 s of CPU)
def test_train_crosscoder_resumes_after_sigkill_to_the_uninterrupted_weights(tmp_path):
    ck, out = tmp_path / "ck", tmp_path / "cc"
    run = f"""
    import json
    cc = fd.train_crosscoder(acts, checkpoint_dir={str(ck)!r}, checkpoint_every=30, **{CC_RUN!r})
    cc.save({str(out)!r})
    open({str(out)!r} + ".json", "w").write(json.dumps(cc.diagnostics))
    """
    first = _python(run, kill_at="train_crosscoder:75")
    assert _killed(first), first.stderr[-2000:]
    assert _manifest_step(ck, "train_crosscoder") == 60
    second = _python(run)
    assert second.returncode == 0, second.stderr[-2000:]

    acts = _acts()
    ref = fd.train_crosscoder(acts, **CC_RUN)
    got = fd.Crosscoder.load(out)
    for n, t in ref.state_dict().items():
        assert torch.equal(got.state_dict()[n], t), n  # bitwise on the CPU
    assert json.loads((tmp_path / "cc.json").read_text()) == pytest.approx(ref.diagnostics, nan_ok=True)
    pd.testing.assert_frame_equal(got.evaluate(acts), ref.evaluate(acts))


@pytest.mark.slow  # two fresh interpreters (about 15 s of CPU)
def test_collect_activations_resumes_after_sigkill_from_the_last_saved_chunk(tmp_path):
    from transformer_lens import HookedTransformer

    cfg = dict(n_layers=2, d_model=8, n_ctx=12, d_head=4, d_vocab=20, act_fn="relu")
    for i, name in enumerate(["base", "rl"]):
        fd.save_model(HookedTransformer({**cfg, "seed": i}), tmp_path / name)
    tokens = torch.randint(0, 20, (10, 12), generator=torch.Generator().manual_seed(0))
    torch.save(tokens, tmp_path / "tokens.pt")
    ck, out = tmp_path / "ck", tmp_path / "acts"
    run = f"""
    import torch, featdiff.activations.collect as A
    computed = []
    rows = A.model_rows
    A.model_rows = lambda *a, **k: (computed.append(1) or x for x in rows(*a, **k))
    models = {{n: {str(tmp_path)!r} + "/" + n for n in ["base", "rl"]}}
    fd.collect_activations(models, torch.load({str(tmp_path / "tokens.pt")!r}), "blocks.0.hook_resid_post",
                           batch_size=2, out_dir={str(out)!r}, shard_tokens=40, progress=False,
                           checkpoint_dir={str(ck)!r}, checkpoint_every=2)
    print(len(computed))
    """
    # 2 checkpoints x 5 batches of sequences = 10 steps; saves after batches 2, 4, 5 of each checkpoint
    first = _python(run, kill_at="collect_activations:8")
    assert _killed(first), first.stderr[-2000:]
    assert _manifest_step(ck, "collect_activations") == 7 and not out.exists()
    second = _python(run)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.split()[-1] == "3"  # only the 3 unsaved batches ran again

    models = {n: fd.load_model(tmp_path / n) for n in ["base", "rl"]}
    ref = fd.collect_activations(models, tokens, "blocks.0.hook_resid_post", batch_size=2, progress=False)
    got = fd.ActivationSet.load(out)
    assert got.names == ref.names and got.n_tokens == ref.n_tokens == 110
    for n in ref.names:
        assert torch.equal(got[n], ref[n]), n
    assert torch.equal(got.token_ids, ref.token_ids) and torch.equal(got.sequence_ids, ref.sequence_ids)


@pytest.mark.slow  # two fresh interpreters (about 15 s of CPU)
def test_same_seed_same_tables_in_two_fresh_interpreters(tmp_path):
    run = """
    import sys
    from transformer_lens import HookedTransformer
    cfg = dict(n_layers=2, d_model=16, n_ctx=12, d_head=4, d_vocab=30, act_fn="gelu", seed=0)
    base = HookedTransformer(cfg)
    rl = HookedTransformer({**cfg, "seed": 1})
    with torch.no_grad():
        for (_, p), (_, q) in zip(base.named_parameters(), rl.named_parameters()):
            q.copy_(p + 0.05 * q)
    tokens = torch.randint(0, 30, (64, 12), generator=torch.Generator().manual_seed(0))
    cmp = fd.compare_checkpoints(base, rl, tokens=tokens, d_sae=32, k=3, seed=0, n_replicas=1,
                                 train_kwargs={"n_steps": 60, "batch_size": 128}, progress=False)
    cmp.features.to_pickle(sys.argv[-1] + ".features.pkl")
    cmp.summary.to_pickle(sys.argv[-1] + ".summary.pkl")
    """
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    tables = []
    for i in range(2):
        # another hash seed in each interpreter: no result may depend on set or dict-of-str order
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(ACTS) + textwrap.dedent(run), str(tmp_path / f"run{i}")],
            capture_output=True, text=True, env={**env, "PYTHONHASHSEED": str(i + 1)}, timeout=300,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        tables.append([pd.read_pickle(tmp_path / f"run{i}.{t}.pkl") for t in ("features", "summary")])
    (f0, s0), (f1, s1) = tables
    assert len(f0) == 32 and list(s0.index) == ["rl"] and f0["similarity"].notna().any()
    pd.testing.assert_frame_equal(f0, f1, check_exact=True)
    pd.testing.assert_frame_equal(s0, s1, check_exact=True)


@pytest.mark.slow  # two fresh interpreters (about 20 s of CPU)
def test_compare_checkpoints_resumes_after_sigkill_to_the_uninterrupted_tables(tmp_path):
    from transformer_lens import HookedTransformer

    cfg = dict(n_layers=2, d_model=16, n_ctx=12, d_head=4, d_vocab=30, act_fn="gelu")
    for i, name in enumerate(["base", "rl"]):
        fd.save_model(HookedTransformer({**cfg, "seed": i}), tmp_path / name)
    tokens = torch.randint(0, 30, (48, 12), generator=torch.Generator().manual_seed(0))
    torch.save(tokens, tmp_path / "tokens.pt")
    ck = tmp_path / "ck"
    kw = dict(d_sae=32, k=3, seed=0, n_replicas=1, progress=False)
    train = {"n_steps": 60, "batch_size": 64, "checkpoint_every": 20}
    run = f"""
    import torch
    models = {{n: {str(tmp_path)!r} + "/" + n for n in ["base", "rl"]}}
    cmp = fd.compare_checkpoints(models, tokens=torch.load({str(tmp_path / "tokens.pt")!r}), batch_size=8,
                                 checkpoint_dir={str(ck)!r}, train_kwargs={train!r}, **{kw!r})
    cmp.summary.to_pickle({str(tmp_path / "summary.pkl")!r})
    cmp.features.to_pickle({str(tmp_path / "features.pkl")!r})
    """
    first = _python(run, kill_at="train_saes:50")
    assert _killed(first), first.stderr[-2000:]
    assert _manifest_step(ck / "saes", "train_saes") == 40 and (ck / "collect").is_dir()
    second = _python(run)
    assert second.returncode == 0, second.stderr[-2000:]

    models = {n: fd.load_model(tmp_path / n) for n in ["base", "rl"]}
    train.pop("checkpoint_every")
    ref = fd.compare_checkpoints(models, tokens=tokens, batch_size=8, train_kwargs=train, **kw)
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "summary.pkl"), ref.summary)
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "features.pkl"), ref.features)
    with pytest.raises(FeatdiffError, match="distributed"):
        fd.compare_checkpoints(models, tokens=tokens, checkpoint_dir=ck, distributed=True, **kw)
