"""ActivationSet validation and storage; collect_activations pairing, dropping, streaming."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from featdiff import constants
from featdiff.activations.activations import ActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.activations.corpus import TextCorpus
from featdiff.core.io import MARKER
from featdiff.errors import FeatdiffError, FeatdiffWarning
from featdiff.models.folder import save_model

VOCAB = 29
HOOK = "blocks.0.hook_resid_post"


def tiny_tl(seed: int = 0, d_model: int = 16, n_layers: int = 2) -> HookedTransformer:
    cfg = dict(
        n_layers=n_layers, d_model=d_model, n_ctx=16, d_head=4, d_vocab=VOCAB, act_fn="gelu", seed=seed
    )
    return HookedTransformer(cfg).eval()


def make_tokens(batch: int = 5, seq: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def full_run(model: HookedTransformer, tokens: torch.Tensor, hook: str = HOOK) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache[hook]


# ------------------------------------------------------------------------------------------- ActivationSet


def test_activation_set_rejects_bad_input():
    good = torch.randn(4, 3)
    with pytest.raises(FeatdiffError, match="NaN or infinite values in 1 of 4 rows"):
        ActivationSet.from_tensors({"base": good, "rl": torch.tensor([[float("nan")] * 3] + [[0.0] * 3] * 3)})
    with pytest.raises(FeatdiffError, match="NaN or infinite"):
        ActivationSet.from_tensors({"base": torch.full((2, 3), float("inf"))})
    with pytest.raises(FeatdiffError, match="empty"):
        ActivationSet.from_tensors({"base": torch.zeros(0, 3)})
    with pytest.raises(FeatdiffError, match="same shape"):
        ActivationSet.from_tensors({"base": good, "rl": torch.randn(5, 3)})
    with pytest.raises(FeatdiffError, match=r"\(n_tokens, d_model\); got \(4,\)"):
        ActivationSet.from_tensors({"base": torch.randn(4)})
    with pytest.raises(FeatdiffError, match="non-empty dict"):
        ActivationSet.from_tensors({})
    with pytest.raises(FeatdiffError, match="token_ids has 3 entries"):
        ActivationSet.from_tensors({"base": good}, token_ids=torch.arange(3))
    with pytest.raises(FeatdiffError, match="No checkpoint named 'sft'"):
        ActivationSet.from_tensors({"base": good})["sft"]


def test_activation_set_save_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    acts = ActivationSet.from_tensors(
        {"base": torch.randn(11, 4, generator=g), "rl": torch.randn(11, 4, generator=g)},
        hook=HOOK,
        token_ids=torch.arange(11),
        sequence_ids=torch.arange(11) // 3,
    )
    acts.meta["note"] = "x"
    path = acts.save(tmp_path / "acts", shard_tokens=4)
    assert sorted(p.name for p in path.iterdir()) == [MARKER, constants.ACTS_META] + [
        constants.ACTS_SHARD.format(index=i) for i in range(3)
    ]
    back = ActivationSet.load(path)
    assert back.names == ["base", "rl"] and back.hook == HOOK and back.meta == {"note": "x"}
    assert torch.equal(back["rl"], acts["rl"]) and torch.equal(back.token_ids, acts.token_ids)
    assert torch.equal(back.sequence_ids, acts.sequence_ids)
    with pytest.raises(FeatdiffError, match="not an ActivationSet folder"):
        ActivationSet.load(tmp_path)


def test_split_never_puts_one_sequence_on_both_sides():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (40,), generator=g)  # 40 sequences of 1-8 tokens
    seq = torch.repeat_interleave(torch.arange(40) * 7 + 3, lengths)  # ids need not be 0..n-1
    acts = ActivationSet.from_tensors({"base": torch.randn(len(seq), 3, generator=g)}, sequence_ids=seq)
    for seed in range(5):
        train, held = acts.split(0.25, seed=seed)
        assert train.n_tokens + held.n_tokens == acts.n_tokens
        tr, he = set(train.sequence_ids.tolist()), set(held.sequence_ids.tolist())
        assert not tr & he and len(he) == 10 and len(tr) == 30
        # whole sequences: every held-out sequence has all of its tokens there
        assert held.n_tokens == int(torch.isin(seq, torch.tensor(sorted(he))).sum())
    a, b = acts.split(0.25, seed=1), acts.split(0.25, seed=1)
    assert torch.equal(a[1]["base"], b[1]["base"])  # the same seed gives the same split
    assert not torch.equal(acts.split(0.25, seed=2)[1].sequence_ids, a[1].sequence_ids)


def test_split_without_sequence_ids_splits_tokens_with_a_warning():
    acts = ActivationSet.from_tensors({"base": torch.randn(20, 3)})
    with pytest.warns(FeatdiffWarning, match="no sequence ids.*sequence_ids="):
        train, held = acts.split(0.25, seed=0)
    assert (train.n_tokens, held.n_tokens) == (15, 5)
    one = ActivationSet.from_tensors({"base": torch.randn(6, 3)}, sequence_ids=torch.zeros(6, dtype=torch.long))
    with pytest.warns(FeatdiffWarning, match="single sequence"):
        assert one.split(0.5)[1].n_tokens == 3
    with pytest.raises(FeatdiffError, match="one entry per token"):
        ActivationSet.from_tensors({"base": torch.randn(6, 3)}, sequence_ids=torch.arange(5))


def test_collected_sets_split_by_sequence():
    tokens = make_tokens(10, 6, seed=5)
    acts = collect_activations({"base": tiny_tl(0)}, tokens, HOOK, outlier_factor=None, progress=False)
    assert acts.sequence_ids.tolist() == torch.arange(10).repeat_interleave(5).tolist()
    train, held = acts.split(0.2, seed=0)
    assert held.n_tokens == 2 * 5 and not set(train.sequence_ids.tolist()) & set(held.sequence_ids.tolist())
    # each held-out row is the activation of its own sequence's token
    s = int(held.sequence_ids[0])
    torch.testing.assert_close(held["base"][:5], full_run(tiny_tl(0), tokens[s : s + 1])[0, 1:])


def test_dropped_first_positions_are_not_called_bos_without_a_bos_token(capsys):
    tokens = make_tokens(4, 6, seed=6)
    collect_activations({"base": tiny_tl(0)}, tokens, HOOK, outlier_factor=None, progress=True)
    err = "".join(capsys.readouterr())  # tqdm.write prints to stdout
    assert "the first position of each of 4 sequences" in err and "whether they hold a BOS token is unknown" in err
    assert "4 BOS" not in err
    model = tiny_tl(0)
    model.featdiff_meta = {"bos_token_id": int(tokens[0, 0])}  # only row 0 starts with "BOS"
    acts = collect_activations({"base": model}, tokens, HOOK, outlier_factor=None, progress=True)
    err = "".join(capsys.readouterr())  # tqdm.write prints to stdout
    n_bos = int((tokens[:, 0] == tokens[0, 0]).sum())
    assert acts.meta["n_dropped_bos"] == n_bos < 4 and acts.meta["n_dropped_first"] == 4
    assert f"({n_bos} of them the BOS token {int(tokens[0, 0])}, {4 - n_bos} a real token" in err


# ------------------------------------------------------------------------------------- collect_activations


def test_rows_are_paired_by_token_and_equal_a_full_run():
    base, rl = tiny_tl(0), tiny_tl(1)
    tokens = make_tokens()
    acts = collect_activations({"base": base, "twin": base, "rl": rl}, tokens, HOOK, batch_size=2,
                               outlier_factor=None, progress=False)  # fmt: skip
    assert acts.names == ["base", "twin", "rl"] and acts.hook == HOOK
    assert acts.n_tokens == 5 * 6 and acts.d_model == 16
    assert torch.equal(acts["base"], acts["twin"])
    assert not torch.allclose(acts["base"], acts["rl"])
    assert torch.equal(acts.token_ids, tokens[:, 1:].reshape(-1))
    # stop_at_layer gives the values of a full forward pass, row i = (sequence i // 6, position 1 + i % 6)
    torch.testing.assert_close(acts["base"], full_run(base, tokens)[:, 1:].reshape(-1, 16))
    torch.testing.assert_close(acts["rl"], full_run(rl, tokens)[:, 1:].reshape(-1, 16))


def test_forward_pass_stops_at_the_hook_layer():
    model = tiny_tl(n_layers=3)
    calls = []
    handle = model.blocks[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        collect_activations({"base": model}, make_tokens(), HOOK, progress=False)
        assert calls == []
        collect_activations({"base": model}, make_tokens(), "blocks.1.hook_mlp_out", progress=False)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_default_hook_and_batch_size_do_not_change_values():
    model = tiny_tl()
    tokens = make_tokens()
    a = collect_activations({"base": model}, tokens, batch_size=1, progress=False)
    b = collect_activations({"base": model}, tokens, batch_size=64, progress=False)
    assert a.hook == "blocks.1.hook_resid_post"
    torch.testing.assert_close(a["base"], b["base"])


def test_bos_and_outlier_dropping_counts():
    base, rl = tiny_tl(0), tiny_tl(1)
    with torch.no_grad():
        rl.embed.W_E[7] *= 1000.0  # token 7 has a huge norm in rl only
    tokens = make_tokens(6, 8, seed=3)
    tokens[0, 0] = 7  # at a BOS position: dropped as BOS, not as an outlier
    tokens[1, 3] = tokens[4, 5] = 7
    n_sevens = int((tokens[:, 1:] == 7).sum())
    acts = collect_activations({"base": base, "rl": rl}, tokens, HOOK, progress=False)
    assert acts.meta["n_dropped_first"] == 6 and acts.meta["n_dropped_bos"] == 0  # no tokenizer: no BOS id
    assert acts.meta["n_dropped_outlier"] == n_sevens >= 2
    assert acts.meta["n_outlier_by_checkpoint"] == {"base": 0, "rl": n_sevens}
    assert acts.n_tokens == 6 * 7 - n_sevens
    assert 7 not in acts.token_ids.tolist()
    expected = full_run(base, tokens)[:, 1:].reshape(-1, 16)[tokens[:, 1:].reshape(-1) != 7]
    torch.testing.assert_close(acts["base"], expected)

    kept_all = collect_activations({"base": base, "rl": rl}, tokens, HOOK, drop_bos=False, outlier_factor=None,
                                   progress=False)  # fmt: skip
    assert kept_all.n_tokens == 6 * 8 and kept_all.meta["n_dropped_first"] == 0
    assert kept_all.meta["n_dropped_outlier"] == 0


def test_padding_is_dropped_and_does_not_change_real_tokens():
    model = tiny_tl()
    a, b = make_tokens(1, 7, seed=1)[0], make_tokens(1, 4, seed=2)[0]
    pad = 0
    right = torch.stack([a, torch.cat([b, torch.full((3,), pad)])])
    left = torch.stack([a, torch.cat([torch.full((3,), pad), b])])
    mask_left = (left != pad).long()
    ref = torch.cat([full_run(model, a[None])[0, 1:], full_run(model, b[None])[0, 1:]])

    by_id = collect_activations(
        {"m": model}, right, HOOK, pad_token_id=pad, outlier_factor=None, progress=False
    )
    by_mask = collect_activations({"m": model}, left, HOOK, attention_mask=mask_left, outlier_factor=None,
                                  progress=False)  # fmt: skip
    for acts in (by_id, by_mask):
        assert acts.meta["n_dropped_pad"] == 3 and acts.meta["n_dropped_first"] == 2
        assert torch.equal(acts.token_ids, torch.cat([a[1:], b[1:]]))
        torch.testing.assert_close(acts["m"], ref, atol=1e-5, rtol=1e-5)


def test_streaming_to_disk_equals_in_memory(tmp_path):
    base, rl = tiny_tl(0), tiny_tl(1)
    with torch.no_grad():
        rl.embed.W_E[5] *= 1000.0
    tokens = make_tokens(6, 8, seed=4)
    tokens[2, 2] = 5
    in_memory = collect_activations({"base": base, "rl": rl}, tokens, HOOK, batch_size=4, progress=False)
    streamed = collect_activations({"base": base, "rl": rl}, tokens, HOOK, batch_size=4, progress=False,
                                   out_dir=tmp_path / "acts", shard_tokens=10)  # fmt: skip
    assert in_memory.meta["n_dropped_outlier"] >= 1
    assert streamed.n_tokens == in_memory.n_tokens and streamed.meta == in_memory.meta
    for name in ("base", "rl"):
        assert torch.equal(streamed[name], in_memory[name])
    assert torch.equal(streamed.token_ids, in_memory.token_ids)
    assert torch.equal(streamed.sequence_ids, in_memory.sequence_ids)
    n_shards = -(-in_memory.n_tokens // 10)
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [MARKER, constants.ACTS_META] + [
        constants.ACTS_SHARD.format(index=i) for i in range(n_shards)
    ]
    assert torch.equal(ActivationSet.load(tmp_path / "acts")["rl"], in_memory["rl"])


def test_models_given_as_checkpoint_folders(tmp_path):
    base, rl = tiny_tl(0), tiny_tl(1)
    tokens = make_tokens()
    specs = {"base": save_model(base, tmp_path / "base"), "rl": str(save_model(rl, tmp_path / "rl"))}
    from_specs = collect_activations(specs, tokens, HOOK, progress=False)
    from_objects = collect_activations({"base": base, "rl": rl}, tokens, HOOK, progress=False)
    assert torch.equal(from_specs["rl"], from_objects["rl"])
    assert torch.equal(from_specs["base"], from_objects["base"])


def test_texts_are_tokenized_once_for_all_models(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<unk>", "hello", "world", "the", "cat", "sat"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>", pad_token="<pad>", unk_token="<unk>"
    )
    for seed, name in [(0, "base"), (1, "rl")]:
        torch.manual_seed(seed)
        GPT2LMHeadModel(
            GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=8, n_positions=16)
        ).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    specs = {"base": tmp_path / "base", "rl": tmp_path / "rl"}
    docs = ["hello world the cat", "the cat sat"]
    # packed (the default): <bos> hello world the cat <sep> the cat sat, one window (EOS is <bos> here)
    acts = collect_activations(specs, docs, "blocks.0.hook_resid_post", outlier_factor=None, progress=False)
    assert acts.token_ids.tolist() == [3, 4, 5, 6, 1, 5, 6, 7]  # the window's BOS dropped
    assert acts.meta["n_dropped_pad"] == 0 and acts.meta["n_dropped_first"] == acts.meta["n_dropped_bos"] == 1
    assert acts.meta["text"]["n_documents"] == 2 and acts.meta["text"]["n_windows"] == 1
    # truncated: one window per document, padded
    acts = collect_activations(specs, texts=TextCorpus(docs, packing="truncate"), hook="blocks.0.hook_resid_post",
                               outlier_factor=None, progress=False)  # fmt: skip
    assert acts.token_ids.tolist() == [3, 4, 5, 6, 5, 6, 7]  # BOS and padding dropped
    assert acts.meta["n_dropped_pad"] == 1 and acts.meta["n_dropped_first"] == acts.meta["n_dropped_bos"] == 2
    assert acts.meta["bos_token_id"] == 1 and acts.sequence_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(FeatdiffError, match=r"needs each checkpoint's tokenizer, and checkpoint 'bare' has none"):
        bare = HookedTransformer(dict(n_layers=1, d_model=16, n_ctx=16, d_head=8, d_vocab=8, act_fn="gelu"))
        collect_activations({"base": specs["base"], "bare": bare}, ["hello"], "blocks.0.hook_resid_post",
                            progress=False)  # fmt: skip


def test_collect_activations_rejects_bad_input():
    model = tiny_tl()
    tokens = make_tokens()
    with pytest.raises(FeatdiffError, match="tokens is empty"):
        collect_activations({"m": model}, torch.zeros(0, 5, dtype=torch.long), HOOK, progress=False)
    with pytest.raises(FeatdiffError, match="integer token ids; got dtype torch.float32"):
        collect_activations({"m": model}, tokens.float(), HOOK, progress=False)
    with pytest.raises(FeatdiffError, match=r"ids in \[1, 99\] but the vocabulary has d_vocab=29"):
        collect_activations({"m": model}, torch.tensor([[1, 99]]), HOOK, progress=False)
    with pytest.raises(FeatdiffError, match="n_ctx=16"):
        collect_activations({"m": model}, make_tokens(2, 20), HOOK, progress=False)
    with pytest.raises(FeatdiffError, match="disagree on d_model"):
        collect_activations({"m": model, "small": tiny_tl(d_model=8)}, tokens, HOOK, progress=False)
    with pytest.raises(FeatdiffError, match="Valid hooks of this kind"):
        collect_activations({"m": model}, tokens, "blocks.9.hook_resid_post", progress=False)
    with pytest.raises(FeatdiffError, match="not \\(batch, pos, ...\\)"):
        collect_activations({"m": model}, tokens, "blocks.0.attn.hook_pattern", progress=False)
    with pytest.raises(FeatdiffError, match="'batch_size' parameter of collect_activations must be a positive integer"):
        collect_activations({"m": model}, tokens, HOOK, batch_size=0, progress=False)
    with pytest.raises(FeatdiffError, match="outlier_factor must be > 1"):
        collect_activations({"m": model}, tokens, HOOK, outlier_factor=0.5, progress=False)
    with pytest.raises(FeatdiffError, match="No token is left"):
        collect_activations({"m": model}, tokens[:, :1], HOOK, progress=False)
    with pytest.raises(FeatdiffError, match="non-empty dict"):
        collect_activations({}, tokens, HOOK, progress=False)
    broken = tiny_tl(1)
    with torch.no_grad():
        broken.embed.W_E[tokens[3, 2]] = float("nan")
    with pytest.raises(FeatdiffError, match="'broken' gives NaN or infinite activations .* starting at 2"):
        collect_activations({"m": model, "broken": broken}, tokens, HOOK, batch_size=2, progress=False)


def test_load_of_a_corrupted_folder_names_the_problem(tmp_path):
    import json

    import torch

    from featdiff import ActivationSet, FeatdiffError

    acts = ActivationSet.from_tensors({"base": torch.randn(10, 4), "rl": torch.randn(10, 4)})
    out = acts.save(tmp_path / "acts")
    meta = json.loads((out / "activations.json").read_text())
    (out / "activations.json").write_text("{not json")
    with pytest.raises(FeatdiffError, match="corrupted"):
        ActivationSet.load(out)
    meta["names"] = ["base", "sft"]
    (out / "activations.json").write_text(json.dumps(meta))
    with pytest.raises(FeatdiffError, match=r"lacks checkpoints \['sft'\]"):
        ActivationSet.load(out)
