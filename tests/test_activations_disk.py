"""On-disk ActivationSets (issue 8, item 1): the same batches, statistics, SAEs and comparisons as in memory,
views instead of copies, a bounded shuffle buffer, and no library pass that loads the whole set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_sae, planted_saes
from featdiff.activations.activations import ActivationSet, OnDiskActivationSet
from featdiff.activations.shards import ActivationColumn, ShardStore
from featdiff.dictionaries.stats import code_stats, encode, explained_variance
from featdiff.errors import FeatdiffError


def paired(n: int = 600, d: int = 8, seed: int = 0) -> ActivationSet:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    return ActivationSet.from_tensors(
        {"base": base, "rl": base + 0.3 * torch.randn(n, d, generator=g)},
        token_ids=torch.randint(0, 50, (n,), generator=g),
        sequence_ids=torch.arange(n) // 10,
    )


def on_disk(acts: ActivationSet, tmp_path, shard_tokens: int = 64, **kw) -> OnDiskActivationSet:
    return ActivationSet.open(acts.save(tmp_path / "acts", shard_tokens=shard_tokens), **kw)


@pytest.fixture
def no_loading(monkeypatch):
    """Make loading a whole checkpoint of an on-disk set (acts[name]) an error."""

    def refuse(self, name):
        raise AssertionError(f"acts[{name!r}] loaded a whole checkpoint from disk")

    monkeypatch.setattr(OnDiskActivationSet, "__getitem__", refuse)


def test_open_reads_only_ids_and_matches_the_in_memory_set(tmp_path):
    mem = paired()
    disk = on_disk(mem, tmp_path)
    assert isinstance(disk, ActivationSet) and isinstance(disk, OnDiskActivationSet)
    assert (disk.names, disk.n_tokens, disk.d_model, disk.d_in) == (mem.names, 600, 8, 8)
    assert torch.equal(disk.token_ids, mem.token_ids) and torch.equal(disk.sequence_ids, mem.sequence_ids)
    assert isinstance(disk.column("rl"), ActivationColumn) and disk.column("rl").shape == (600, 8)
    assert torch.equal(disk["rl"], mem["rl"])  # documented: acts[name] loads that checkpoint
    assert torch.equal(disk.rows("base", 59, 203), mem["base"][59:203])  # across three shards
    assert torch.equal(ActivationSet.load(disk.path, in_memory=False)["base"], mem["base"])
    assert not isinstance(ActivationSet.load(disk.path), OnDiskActivationSet)
    assert disk.row_norm_mean("rl") == mem.row_norm_mean("rl")
    assert disk.row_norm_mean("rl", chunk=100) == pytest.approx(mem.row_norm_mean("rl"), rel=1e-6)
    with pytest.raises(FeatdiffError, match="No checkpoint named 'sft'"):
        disk.column("sft")


def test_batches_equal_in_memory_where_the_buffer_holds_the_set(tmp_path):
    mem = paired()
    disk = on_disk(mem, tmp_path, buffer_tokens=10_000)
    for shuffle in (False, True):
        a = list(mem.batches(64, shuffle=shuffle, seed=3))
        b = list(disk.batches(64, shuffle=shuffle, seed=3))
        assert len(a) == len(b) == 10
        assert all(torch.equal(x[n], y[n]) for x, y in zip(a, b, strict=True) for n in ("base", "rl"))
    # unshuffled batches do not depend on the buffer
    small = list(disk.batches(64, shuffle=False, buffer_tokens=100))
    assert all(
        torch.equal(x["rl"], y["rl"]) for x, y in zip(mem.batches(64, shuffle=False), small, strict=True)
    )


def test_bounded_shuffle_buffer_is_a_seeded_permutation_and_reads_little(tmp_path, monkeypatch):
    mem = paired()
    disk = on_disk(mem, tmp_path)
    biggest = []
    read = ShardStore.read

    def spy(self, names, rows):
        out = read(self, names, rows)
        biggest.append(len(next(iter(out.values()))))
        return out

    monkeypatch.setattr(ShardStore, "read", spy)
    batches = list(disk.batches(32, seed=5, buffer_tokens=160))
    assert max(biggest) <= 160 // 8 * 1 + 32  # one piece of the buffer per read
    sizes = [len(b["base"]) for b in batches]
    assert sizes[:-1] == [32] * (len(sizes) - 1) and sum(sizes) == 600  # full batches, one short last
    rows = torch.cat([b["base"] for b in batches])
    key = lambda x: x[:, 0] * 1e3 + x[:, 1]  # noqa: E731 (rows are distinct)
    assert torch.equal(rows[key(rows).argsort()], mem["base"][key(mem["base"]).argsort()])  # every row once
    rl = torch.cat([b["rl"] for b in batches])
    assert torch.equal(rl[key(rows).argsort()], mem["rl"][key(mem["base"]).argsort()])  # still paired
    again = torch.cat([b["base"] for b in disk.batches(32, seed=5, buffer_tokens=160)])
    other = torch.cat([b["base"] for b in disk.batches(32, seed=6, buffer_tokens=160)])
    assert torch.equal(again, rows) and not torch.equal(other, rows)
    # a pass is mixed: the first buffer's batches hold rows from more than one stretch of the set
    first = torch.cat([b["base"] for b in batches[:4]])
    where = [int((mem["base"][:, 0] == v).nonzero()[0]) for v in first[:, 0]]
    assert len({w // 32 for w in where}) >= 4  # pieces are 32 rows here


def test_split_and_subset_are_views_that_keep_sequences_whole(tmp_path):
    mem = paired()
    disk = on_disk(mem, tmp_path)
    files = sorted(p.name for p in disk.path.iterdir())
    train, held = disk.split(0.25, seed=2)
    mem_train, mem_held = mem.split(0.25, seed=2)
    assert (
        isinstance(train, OnDiskActivationSet) and train._store is disk._store and held._store is disk._store
    )
    assert sorted(p.name for p in disk.path.iterdir()) == files  # nothing written
    assert not set(train.sequence_ids.tolist()) & set(held.sequence_ids.tolist())
    assert train.n_tokens + held.n_tokens == 600 and held.n_tokens == 150
    assert torch.equal(held["rl"], mem_held["rl"]) and torch.equal(train.token_ids, mem_train.token_ids)
    view = train.select(["rl"]).subset(torch.tensor([7, 0, 300]))
    assert view.names == ["rl"] and torch.equal(view["rl"], mem_train["rl"][[7, 0, 300]])
    # a view saves to a new folder that reads back equal
    back = ActivationSet.load(held.save(tmp_path / "held", shard_tokens=40))
    assert torch.equal(back["base"], mem_held["base"]) and torch.equal(
        back.sequence_ids, mem_held.sequence_ids
    )


def test_dictionary_statistics_stream_over_a_column(tmp_path):
    mem = paired()
    disk = on_disk(mem, tmp_path)
    sae = make_sae(d_in=8, d_sae=24, k=3)
    f_mem, fve_mem = code_stats(sae, mem["rl"], batch_size=50)
    f_disk, fve_disk = code_stats(sae, disk.column("rl"), batch_size=50)
    assert torch.equal(f_mem, f_disk) and fve_disk == pytest.approx(fve_mem, abs=1e-12)
    assert torch.equal(encode(sae, disk.column("base")[100:230]), encode(sae, mem["base"][100:230]))
    assert explained_variance(sae, disk.column("base")) == pytest.approx(explained_variance(sae, mem["base"]))


def test_train_saes_on_disk_equals_in_memory(tmp_path, no_loading):
    from featdiff.dictionaries.sae import train_saes

    mem = paired(512)
    disk = on_disk(mem, tmp_path, buffer_tokens=10_000)  # the whole set in the buffer: the same order
    kw = dict(d_sae=16, k=2, n_steps=30, batch_size=64, seed=1, progress=False)
    a, b = train_saes(mem, **kw), train_saes(disk, **kw)
    for name in ("base", "rl"):
        for key, value in a[name].state_dict().items():
            assert torch.allclose(value, b[name].state_dict()[key], atol=1e-6), (name, key)
    # with a small buffer the order differs (a bounded shuffle), and training still works
    small = train_saes(ActivationSet.open(disk.path, buffer_tokens=128), **kw)
    assert not torch.allclose(small["rl"].W_dec, a["rl"].W_dec, atol=1e-4)
    fve_small = explained_variance(small["rl"], mem["rl"])
    assert fve_small > 0.5 and fve_small == pytest.approx(explained_variance(a["rl"], mem["rl"]), abs=0.1)


@pytest.mark.filterwarnings("ignore:train_crosscoder had not settled")
def test_train_crosscoder_on_disk_equals_in_memory(tmp_path, no_loading):
    from featdiff.dictionaries.crosscoder.train import train_crosscoder

    mem = paired(512)
    disk = on_disk(mem, tmp_path, buffer_tokens=10_000)
    kw = dict(d_sae=16, k=2, n_steps=20, batch_size=64, seed=0, progress=False)
    a, b = train_crosscoder(mem, **kw), train_crosscoder(disk, **kw)
    assert torch.allclose(a.W_dec, b.W_dec, atol=1e-6) and torch.allclose(a.W_enc, b.W_enc, atol=1e-6)
    ev_a, ev_b = a.evaluate(mem), b.evaluate(disk)
    assert np.allclose(ev_a["fve"], ev_b["fve"], atol=1e-6)


@pytest.mark.parametrize("on", ["decoder", "activations"])
def test_compare_dictionaries_on_disk_equals_in_memory(planted, tmp_path, on, no_loading):
    from featdiff.comparison.scoring import compare_dictionaries

    mem = planted.sample(1500, seed=1)
    disk = on_disk(mem, tmp_path, shard_tokens=400)
    saes = planted_saes(planted)
    D = planted.dictionaries["base"]
    rep = [make_sae(D + 0.05 * torch.randn(D.shape, generator=torch.Generator().manual_seed(9)), k=4)]
    kw = dict(progress=False, on=on, replicas=rep)
    a, b = compare_dictionaries(saes, mem, **kw), compare_dictionaries(saes, disk, **kw)
    num = a.summary.select_dtypes("number").columns
    pd.testing.assert_frame_equal(a.summary[num], b.summary[num], atol=1e-6, rtol=0)
    assert a.features["status"].tolist() == b.features["status"].tolist()
    fnum = a.features.select_dtypes("number").columns
    pd.testing.assert_frame_equal(a.features[fnum], b.features[fnum], atol=1e-6, rtol=0)
    assert b.meta["n_eval_tokens"] == 1500


def test_align_on_activations_streams_codes(planted, tmp_path, no_loading):
    from featdiff.alignment.matching import align

    mem = planted.sample(800, seed=2)
    disk = on_disk(mem, tmp_path, shard_tokens=300)
    saes = planted_saes(planted)
    a = align(
        saes["base"], saes["rl"], on="activations", activations=mem, reference_name="base", target_name="rl"
    )
    b = align(
        saes["base"], saes["rl"], on="activations", activations=disk, reference_name="base", target_name="rl"
    )
    assert np.array_equal(a.match, b.match) and np.array_equal(a.tgt_live, b.tgt_live)
    assert np.allclose(a.similarity, b.similarity, atol=1e-6, equal_nan=True)
    assert (a.match >= 0).sum() > 50


def test_collect_to_disk_returns_an_on_disk_set(tmp_path):
    from featdiff.activations.collect import collect_activations
    from test_activations import HOOK, make_tokens, tiny_tl

    models = {"base": tiny_tl(0), "rl": tiny_tl(1)}
    tokens = make_tokens(6, 8, seed=4)
    mem = collect_activations(models, tokens, HOOK, batch_size=4, progress=False)
    disk = collect_activations(
        models, tokens, HOOK, batch_size=4, progress=False, out_dir=tmp_path / "a", shard_tokens=10
    )
    assert isinstance(disk, OnDiskActivationSet) and disk.path == tmp_path / "a"
    assert torch.equal(disk.column("rl").load(), mem["rl"]) and disk.meta == mem.meta


# ------------------------------------------------------------------------------------------- the stream


def test_stream_batches_are_the_collected_rows(tmp_path):
    from featdiff.activations.collect import collect_activations
    from featdiff.activations.stream import ActivationStream
    from test_activations import HOOK, make_tokens, tiny_tl

    models = {"base": tiny_tl(0), "rl": tiny_tl(1)}
    tokens = make_tokens(9, 8, seed=3)
    mem = collect_activations(models, tokens, HOOK, batch_size=4, outlier_factor=None, progress=False)
    stream = ActivationStream(models, tokens, HOOK, batch_size=4, buffer_tokens=20)
    assert (stream.n_tokens, stream.d_model, stream.names) == (mem.n_tokens, 16, ["base", "rl"])
    a, b = list(mem.batches(8, shuffle=False)), list(stream.batches(8, shuffle=False))
    assert len(a) == len(b) and all(
        torch.equal(x[n], y[n]) for x, y in zip(a, b, strict=True) for n in mem.names
    )
    shuffled = list(stream.batches(8, seed=1))
    rows = torch.cat([s["rl"] for s in shuffled])
    assert [len(s["rl"]) for s in shuffled][:-1] == [8] * (len(shuffled) - 1)
    assert not torch.equal(rows, mem["rl"]) and torch.allclose(rows.sort(0).values, mem["rl"].sort(0).values)
    assert torch.equal(ActivationSet.load(stream.save(tmp_path / "s", shard_tokens=16))["base"], mem["base"])
    with pytest.raises(FeatdiffError, match="holds no activations"):
        stream["rl"]


@pytest.mark.filterwarnings("ignore:train_crosscoder had not settled")
def test_saes_and_crosscoder_train_on_a_stream():
    from featdiff.activations.collect import collect_activations
    from featdiff.activations.stream import ActivationStream
    from featdiff.dictionaries.crosscoder.train import train_crosscoder
    from featdiff.dictionaries.sae import train_saes
    from test_activations import HOOK, make_tokens, tiny_tl

    models = {"base": tiny_tl(0), "rl": tiny_tl(1)}
    tokens = make_tokens(40, 12, seed=5)
    mem = collect_activations(models, tokens, HOOK, batch_size=8, outlier_factor=None, progress=False)
    stream = ActivationStream(models, tokens, HOOK, batch_size=8, buffer_tokens=128)
    assert stream.row_norm_mean("rl") == pytest.approx(mem.row_norm_mean("rl"), rel=1e-5)
    kw = dict(d_sae=32, k=4, n_steps=150, batch_size=64, seed=0, progress=False)
    streamed, stored = train_saes(stream, **kw), train_saes(mem, **kw)
    for name in ("base", "rl"):
        fve_s, fve_m = (
            explained_variance(streamed[name], mem[name]),
            explained_variance(stored[name], mem[name]),
        )
        assert fve_s > 0.6 and fve_s == pytest.approx(fve_m, abs=0.1), (name, fve_s, fve_m)
    cc = train_crosscoder(stream, d_sae=32, k=4, n_steps=60, batch_size=64, seed=0, progress=False)
    assert (cc.evaluate(mem)["fve"] > 0.3).all()


# ------------------------------------------------------------------------------- sae-lens's cached activations


def _write_sae_lens_cache(path, acts, token_ids, hook="blocks.1.hook_resid_post"):
    """A folder laid out as sae-lens's CacheActivationsRunner writes it (its _create_shard's Features)."""
    from datasets import Array2D, Dataset, Features, Sequence, Value

    n_seq, ctx, d_in = acts.shape
    features = Features(
        {
            hook: Array2D(shape=(ctx, d_in), dtype="float32"),
            "token_ids": Sequence(Value(dtype="int32"), length=ctx),
        }
    )
    Dataset.from_dict(
        {hook: acts.numpy(), "token_ids": token_ids.to(torch.int32).numpy()}, features=features
    ).save_to_disk(str(path))


def test_sae_lens_cached_activations_read_as_an_on_disk_set(tmp_path):
    from featdiff.activations.formats import from_sae_lens_cache

    g = torch.Generator().manual_seed(0)
    base, rl = torch.randn(7, 6, 5, generator=g), torch.randn(7, 6, 5, generator=g)
    tids = torch.randint(0, 100, (7, 6), generator=g)
    _write_sae_lens_cache(tmp_path / "base", base, tids)
    _write_sae_lens_cache(tmp_path / "rl", rl, tids)
    acts = from_sae_lens_cache(
        {"base": tmp_path / "base", "rl": tmp_path / "rl"},
        tmp_path / "acts",
        drop_bos=True,
        shard_tokens=8,
        progress=False,
    )
    assert isinstance(acts, OnDiskActivationSet) and acts.hook == "blocks.1.hook_resid_post"
    assert (acts.n_tokens, acts.d_model) == (35, 5)
    assert torch.equal(acts["rl"], rl[:, 1:].reshape(-1, 5)) and torch.equal(
        acts.token_ids, tids[:, 1:].reshape(-1)
    )
    assert acts.sequence_ids.tolist()[:6] == [0] * 5 + [1]
    train, held = acts.split(0.3, seed=0)
    assert not set(train.sequence_ids.tolist()) & set(held.sequence_ids.tolist())
    other = tids.clone()
    other[3, 2] += 1
    _write_sae_lens_cache(tmp_path / "sft", rl, other)
    with pytest.raises(FeatdiffError, match="different token_ids"):
        from_sae_lens_cache(
            {"base": tmp_path / "base", "sft": tmp_path / "sft"}, tmp_path / "x", progress=False
        )
    assert not (tmp_path / "x").exists()  # nothing half-written


@pytest.mark.filterwarnings("ignore::featdiff.errors.FeatdiffWarning")
def test_compare_checkpoints_with_activations_on_disk_equals_in_memory(tmp_path, no_loading):
    import featdiff as fd
    from test_activations import make_tokens, tiny_tl

    base, rl = tiny_tl(0), tiny_tl(1)
    tokens = make_tokens(40, 12, seed=6)
    kw = dict(tokens=tokens, d_sae=32, k=4, n_replicas=1, train_kwargs={"n_steps": 40, "batch_size": 64})
    a = fd.compare_checkpoints(base, rl, progress=False, **kw)
    b = fd.compare_checkpoints(base, rl, progress=False, activations_dir=tmp_path / "acts", **kw)
    assert (tmp_path / "acts" / "activations.json").is_file()  # left there for the user
    num = a.summary.select_dtypes("number").columns
    pd.testing.assert_frame_equal(a.summary[num], b.summary[num], atol=1e-6, rtol=0)
    assert a.features["status"].tolist() == b.features["status"].tolist()


def test_open_of_a_broken_folder_names_the_problem(tmp_path):
    import json

    disk = on_disk(paired(100), tmp_path, shard_tokens=40)
    meta = json.loads((disk.path / "activations.json").read_text())
    with pytest.raises(FeatdiffError, match="not an ActivationSet folder"):
        ActivationSet.open(tmp_path)
    meta["names"] = ["base", "sft"]
    (disk.path / "activations.json").write_text(json.dumps(meta))
    with pytest.raises(FeatdiffError, match=r"lacks checkpoints \['sft'\]"):
        ActivationSet.open(disk.path)
    meta["names"], meta["n_tokens"] = ["base", "rl"], 101
    (disk.path / "activations.json").write_text(json.dumps(meta))
    with pytest.raises(FeatdiffError, match="holds 100 tokens but its metadata says 101"):
        ActivationSet.open(disk.path)
    meta["n_tokens"] = 100
    (disk.path / "activations.json").write_text(json.dumps(meta))
    assert ActivationSet.open(disk.path).n_tokens == 100
    with pytest.raises(FeatdiffError, match="'buffer_tokens' parameter of OnDiskActivationSet must be a positive integer"):
        ActivationSet.open(disk.path, buffer_tokens=0)
