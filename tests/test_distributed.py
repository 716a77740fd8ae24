"""featdiff.distributed: two CPU processes under torchrun (gloo) give the tables of one process."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist

import featdiff as fd
from featdiff import distributed as fdd

SRC = Path(__file__).resolve().parents[1] / "src"

# One script, run by the test in this process (one rank, no process group) and by torchrun in two.
WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import featdiff as fd
    from featdiff import distributed as fdd
    from transformer_lens import HookedTransformer, HookedTransformerConfig


    def models():
        cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=12, d_head=4, n_heads=4, d_vocab=40,
                                      act_fn="relu", d_mlp=32, seed=0)
        base = HookedTransformer(cfg)
        out = {"base": base}
        for i, name in enumerate(["rl", "sft"]):
            m = HookedTransformer(cfg)
            m.load_state_dict(base.state_dict())
            g = torch.Generator().manual_seed(i + 1)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.05 * (i + 1) * torch.randn(p.shape, generator=g))
            out[name] = m
        return out


    def run(out):
        torch.set_num_threads(1)
        ms = models()
        tokens = torch.randint(0, 40, (45, 12), generator=torch.Generator().manual_seed(0))  # 45 = 22 + 23
        on = fdd.launched()
        kw = dict(tokens=tokens, d_sae=32, k=3, progress=False, distributed=on,
                  train_kwargs={"n_steps": 100, "batch_size": 128})
        saes = fd.compare_checkpoints(ms, **kw)  # 3 SAEs + 2 base replicas, round-robin on the ranks
        cc = fd.compare_checkpoints(ms, method="crosscoder", **kw)  # data-parallel
        # a low outlier factor drops tokens by the median norm of the whole set, not of a rank's slice
        acts = fdd.collect_activations(ms, tokens, "blocks.0.hook_resid_post", outlier_factor=1.3, progress=False)
        if not fdd.is_main():
            assert saes is None and cc is None
            return
        os.makedirs(out, exist_ok=True)
        saes.summary.to_pickle(f"{out}/saes_summary.pkl")
        saes.features.to_pickle(f"{out}/saes_features.pkl")
        cc.summary.to_pickle(f"{out}/cc_summary.pkl")
        cc.features.to_pickle(f"{out}/cc_features.pkl")
        torch.save({"acts": dict(acts.acts), "token_ids": acts.token_ids, "sequence_ids": acts.sequence_ids,
                    "meta": acts.meta, "world": fdd.world_size()}, f"{out}/acts.pt")


    if __name__ == "__main__":
        run(sys.argv[1])
    """
)


def _assert_tables_equal(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> None:
    assert list(a.columns) == list(b.columns) and list(a.index) == list(b.index)
    num = a.select_dtypes("number").columns
    assert len(num) > 5
    np.testing.assert_allclose(b[num].to_numpy(float), a[num].to_numpy(float), rtol=1e-4, atol=atol)
    for col in a.columns.difference(num):
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


def test_two_gloo_processes_give_the_single_process_tables(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launch = subprocess.Popen(
        [*cmd, str(script), str(tmp_path / "multi")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        runpy.run_path(str(script))["run"](str(tmp_path / "single"))  # meanwhile, one process here
        out, _ = launch.communicate(timeout=240)
    finally:
        launch.kill()
    assert launch.returncode == 0, out.decode()[-3000:]

    single, multi = tmp_path / "single", tmp_path / "multi"
    a, b = (torch.load(p / "acts.pt", weights_only=False) for p in (single, multi))
    assert (a["world"], b["world"]) == (1, 2)
    assert a["meta"]["n_dropped_outlier"] > 0  # the rule dropped tokens, by the whole set's median
    assert b["meta"] == a["meta"]
    assert torch.equal(b["token_ids"], a["token_ids"]) and torch.equal(b["sequence_ids"], a["sequence_ids"])
    for name, x in a["acts"].items():
        torch.testing.assert_close(b["acts"][name], x, rtol=0, atol=1e-6)
    # SAEs train on one rank each, exactly as in one process; the crosscoder's gradients are summed over
    # the two halves of each batch, so its tables agree up to float32 summation order
    for table, atol in [
        ("saes_summary", 1e-6),
        ("saes_features", 1e-6),
        ("cc_summary", 1e-5),
        ("cc_features", 1e-5),
    ]:
        _assert_tables_equal(
            pd.read_pickle(single / f"{table}.pkl"), pd.read_pickle(multi / f"{table}.pkl"), atol
        )


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of one rank in this process, destroyed afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::featdiff.errors.FeatdiffWarning")
def test_data_parallel_hook_on_one_rank_is_the_plain_step(one_rank_group):
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(24, 8, generator=g)
    codes = torch.relu(torch.randn(512, 24, generator=g) - 1.0)
    acts = fd.ActivationSet.from_tensors({"base": codes @ basis, "rl": codes @ (basis + 0.1)})
    kw = dict(d_sae=32, k=3, n_steps=40, batch_size=100, progress=False)
    plain = fd.train_crosscoder(acts, **kw)
    dp = fdd.DataParallel()
    hooked = fd.train_crosscoder(acts, data_parallel=dp, **kw)
    assert (dp.batch_rows, dp.local_rows) == (100, 100)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(hooked.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert hooked.diagnostics["final_loss"] == pytest.approx(plain.diagnostics["final_loss"], rel=1e-5)


def test_placement_and_shards_cover_everything_once():
    assert fdd.plan_placement(["base", "rl", "sft", "base replica 1", "base replica 2"], world=2) == {
        "base": 0, "rl": 1, "sft": 0, "base replica 1": 1, "base replica 2": 0,
    }  # fmt: skip
    for n, w in [(45, 2), (7, 3), (2, 4)]:
        parts = [fdd.shard(n, r, w) for r in range(w)]
        assert [i for s in parts for i in range(n)[s]] == list(range(n))
        assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1


def test_without_torchrun_everything_runs_in_this_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert not fdd.launched() and fdd.init() is False
    assert (fdd.rank(), fdd.world_size(), fdd.is_main()) == (0, 1, True)
    assert fdd.all_gather_objects({"a": 1}) == [{"a": 1}] and fdd.broadcast_object(3) == 3
    assert fdd.rank_device("cpu") == "cpu"
    acts = fd.ActivationSet.from_tensors({"base": torch.randn(200, 8), "rl": torch.randn(200, 8)})
    kw = dict(k=2, n_steps=10, batch_size=50, progress=False)
    a, b = fdd.train_saes(acts, **kw), fd.train_saes(acts, **kw)
    assert sorted(a) == ["base", "rl"] and torch.equal(a["rl"].W_dec, b["rl"].W_dec)


def test_bad_backend_is_a_featdiff_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(fd.FeatdiffError, match="'backend' parameter of init must be one of"):
        fdd.init(backend="mpi")
