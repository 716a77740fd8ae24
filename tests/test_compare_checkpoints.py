"""compare_checkpoints end to end on tiny HookedTransformers built from configs."""

import copy

import numpy as np
import pytest
import torch

import featdiff as fd
from featdiff import FeatdiffError
from featdiff.errors import FeatdiffWarning

FAST = {"n_samples": 60_000, "batch_size": 512}


def tiny_model(seed=0, d_model=32, d_vocab=50):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=d_model,
        n_ctx=16,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=d_vocab,
        act_fn="gelu",
        tokenizer_name=None,
        seed=seed,
    )
    return HookedTransformer(cfg).eval()


def perturbed(model, scale, seed):
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith("blocks.") and p.ndim >= 2:
                p.add_(scale * p.std() * torch.randn(p.shape, generator=g))
    return out


@pytest.fixture(scope="module")
def trio():
    torch.manual_seed(0)
    base = tiny_model()
    return base, perturbed(base, 0.05, 1), perturbed(base, 1.0, 2)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50, (192, 16), generator=torch.Generator().manual_seed(0))


def test_saes_method_end_to_end(trio, tokens, tmp_path):
    base, rl, sft = trio
    cmp = fd.compare_checkpoints(
        base, rl, sft, tokens=tokens, d_sae=64, k=4, train_kwargs=FAST, progress=False
    )
    s = cmp.summary
    assert list(s.index) == ["rl", "sft"]
    np.testing.assert_allclose(s[["reuse", "recombination", "novelty"]].sum(1), 1.0)
    assert s["noise_floor_reuse"].between(0, 1).all()
    # a barely perturbed copy keeps more of the base's features, and the base SAE transfers better to it
    assert s.loc["rl", "reuse_raw"] > s.loc["sft", "reuse_raw"]
    assert s.loc["rl", "transfer_fve"] > s.loc["sft", "transfer_fve"]
    assert cmp.meta["hook"] == "blocks.1.hook_resid_post"
    assert cmp.meta["n_tokens"] == 192 * 15  # BOS position dropped
    back = fd.Comparison.load(cmp.to_dir(tmp_path / "cmp"))
    assert back.summary.equals(cmp.summary)


def test_given_saes_are_used_as_is(trio, tokens):
    base, rl, _ = trio
    acts = fd.collect_activations(
        {"base": base, "rl": rl}, tokens, hook="blocks.0.hook_resid_post", progress=False
    )
    saes = fd.train_saes(acts, d_sae=64, k=4, progress=False, **FAST)
    cmp = fd.compare_checkpoints(
        base, rl, tokens=tokens, hook="blocks.0.hook_resid_post", saes=saes, progress=False
    )
    assert np.isnan(cmp.summary.loc["rl", "noise_floor_reuse"])
    assert np.isnan(cmp.summary.loc["rl", "reuse"]) and cmp.summary.loc["rl", "uncorrected"]  # no floor
    assert 0 < cmp.summary.loc["rl", "reuse_raw"] <= 1
    assert cmp.dictionaries["rl"] is saes["rl"]


def test_crosscoder_method_end_to_end(trio, tokens):
    base, rl, sft = trio
    cmp = fd.compare_checkpoints(
        base,
        rl,
        sft,
        tokens=tokens,
        method="crosscoder",
        d_sae=96,
        k=4,
        train_kwargs={"n_steps": 300, "batch_size": 256},
        progress=False,
    )
    s, f = cmp.summary, cmp.features
    assert list(s.index) == ["rl", "sft"]
    assert {"nrn", "category", "mas_base", "mas_rl", "mas_sft"} <= set(f.columns)
    np.testing.assert_allclose(f.groupby("checkpoint")[["mas_base", "mas_rl", "mas_sft"]].first().sum(1), 1.0)
    assert (f["nrn"].dropna().between(0, 1)).all()
    # the heavily perturbed checkpoint owns more specific features than the barely perturbed one
    assert s.loc["sft", "specific_fraction"] > s.loc["rl", "specific_fraction"]
    # (mean NRN is not compared: on random tiny models it differs by ~0.01 either way with the optimiser's
    # settings; the planted known-answer tests in test_crosscoder.py pin the categories instead)
    assert s["mean_nrn"].between(0.4, 0.6).all()


def test_bad_inputs_raise(trio, tokens):
    base, rl, _ = trio
    with pytest.raises(FeatdiffError, match="at least one post-trained"):
        fd.compare_checkpoints(base, tokens=tokens)
    with pytest.raises(FeatdiffError, match="tokens="):
        fd.compare_checkpoints(base, rl)
    with pytest.raises(FeatdiffError, match="hook"):
        fd.compare_checkpoints(base, rl, tokens=tokens, hook="blocks.9.hook_resid_post", progress=False)
    with pytest.raises(FeatdiffError, match="d_model"):
        fd.compare_checkpoints(base, tiny_model(d_model=48), tokens=tokens, progress=False)
    with pytest.raises(FeatdiffError, match="method"):
        fd.compare_checkpoints(base, rl, tokens=tokens, method="pca")
    with pytest.raises(FeatdiffError, match="empty|no token|0 tokens"):
        fd.compare_checkpoints(base, rl, tokens=torch.zeros(0, 16, dtype=torch.long), progress=False)
    with pytest.raises(FeatdiffError, match="takes no saes="):
        fd.compare_checkpoints(base, rl, tokens=tokens, method="crosscoder", saes={}, progress=False)


def test_local_hugging_face_checkpoints_end_to_end(tmp_path):
    """A post-trained Qwen2-style checkpoint on disk next to its base, compared by path."""
    import transformers as tf

    cfg = tf.Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=60,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    base = tf.Qwen2ForCausalLM(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        for p in base.model.layers[1].mlp.parameters():
            p.add_(0.5 * p.std() * torch.randn_like(p))
    base.save_pretrained(tmp_path / "sft")
    tokens = torch.randint(0, 60, (96, 12), generator=torch.Generator().manual_seed(1))
    cmp = fd.compare_checkpoints(
        str(tmp_path / "base"),
        sft=str(tmp_path / "sft"),
        tokens=tokens,
        d_sae=64,
        k=4,
        train_kwargs=FAST,
        progress=False,
    )
    assert list(cmp.summary.index) == ["sft"]
    assert cmp.meta["checkpoints"]["sft"] == str(tmp_path / "sft")
    assert cmp.meta["hook"] == "blocks.1.hook_resid_post"
    # layer 1's MLP changed, so the base SAE explains the sft activations worse than the base's own
    s = cmp.summary.loc["sft"]
    assert s["transfer_fve"] < s["reference_fve"]


def test_crosscoder_comparison_flags_planted_specific_features():
    from featdiff.synthetic import plant_shared_specific

    acts, truth = plant_shared_specific(d_in=16, n_shared=12, n_specific={"rl": 4, "sft": 4}, n_tokens=6000)
    cc = fd.train_crosscoder(acts, d_sae=48, k=3, n_steps=400, seed=0, progress=False)
    cmp = fd.compare_crosscoder(cc, acts, progress=False)
    f = cmp.features
    for name in ("rl", "sft"):
        mine = f[(f.checkpoint == name) & (f.category == name)]
        # the planted specific atoms come out specific to their checkpoint, and latent scaling finds them genuine
        assert len(mine) >= 2 and mine["status"].isin(["novel", "recombined"]).all()
        assert mine["nu_error"].notna().all() and not mine["sparsity_artefact"].any()
        # the other checkpoint's specific features are not this one's
        theirs = f[(f.checkpoint == name) & (f.category == ({"rl", "sft"} - {name}).pop())]
        assert (theirs["status"] == "other").all()
    shared = f[(f.checkpoint == "rl") & (f.status == "reused")]
    assert len(shared) >= 10 and shared["drift"].median() < 0.01  # identical shared directions (rotation 0)


def test_checkpoints_as_one_mapping_cannot_collide_with_options(trio, tokens):
    base, rl, _ = trio
    acts = fd.collect_activations(
        {"base": base, "seed": rl}, tokens, hook="blocks.0.hook_resid_post", progress=False
    )
    saes = fd.train_saes(acts, d_sae=32, k=4, progress=False, **FAST)
    # a checkpoint named like an option ("seed") is just a key of the mapping
    cmp = fd.compare_checkpoints(
        {"base": base, "seed": rl},
        tokens=tokens,
        hook="blocks.0.hook_resid_post",
        saes=saes,
        seed=3,
        progress=False,
    )
    assert list(cmp.summary.index) == ["seed"] and cmp.meta["seed"] == 3
    with pytest.raises(fd.FeatdiffError, match="either as one mapping"):
        fd.compare_checkpoints({"base": base}, rl, tokens=tokens, progress=False)


def test_distributed_run_warns_that_it_skips_the_width_check(trio, tokens, monkeypatch):
    import warnings

    monkeypatch.delenv("WORLD_SIZE", raising=False)  # no torchrun: distributed=True runs in this process
    base, rl, _ = trio
    kw = dict(tokens=tokens[:32], d_sae=32, k=2, n_replicas=0, metrics=[], progress=False, distributed=True)
    kw["train_kwargs"] = {"n_steps": 20}
    with pytest.warns(FeatdiffWarning, match="runs no width check") as caught:
        cmp = fd.compare_checkpoints(base, rl, **kw)
    assert sum("runs no width check" in str(w.message) for w in caught) == 1
    assert cmp.meta["sae"]["d_sae"] == 32 and any("runs no width check" in w for w in cmp.meta["warnings"])
    assert cmp.meta["width_check"] == [{"round": 0, "d_sae": 32, "decision": "skipped: distributed=True"}]
    with warnings.catch_warnings(record=True) as quiet:  # widen=0: the user asked for no check
        warnings.simplefilter("always")
        kept = fd.compare_checkpoints(base, rl, widen=0, **kw)
    assert not [w for w in quiet if "width check" in str(w.message)] and "width_check" not in kept.meta
