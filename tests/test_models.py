"""load_model (featdiff folders, local Hugging Face folders, hub names), check_compatible, hook names."""

from __future__ import annotations

import time

import pytest
import torch
from transformer_lens import HookedTransformer

from featdiff.errors import FeatdiffError
from featdiff.models.folder import load_prompts, save_model
from featdiff.models.hf import SUPPORTED_ARCHITECTURES
from featdiff.models.hooks import check_compatible, default_hook, hook_name
from featdiff.models.load import load_model

VOCAB = 37


def tiny_tl(d_model: int = 16, d_vocab: int = VOCAB, n_layers: int = 2, seed: int = 0) -> HookedTransformer:
    cfg = dict(
        n_layers=n_layers, d_model=d_model, n_ctx=16, d_head=4, d_vocab=d_vocab, act_fn="gelu", seed=seed
    )
    return HookedTransformer(cfg).eval()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<unk>", "hello", "world", "the", "cat", "sat"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>", pad_token="<pad>", unk_token="<unk>"
    )


def _hf_model(kind: str):
    import transformers as tf

    small = dict(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64)
        )
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **small))
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=2, **small))
    if kind == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(num_key_value_heads=2, head_dim=8, **small))
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(num_key_value_heads=2, sliding_window=None, **small))
    if kind == "gpt_neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**small))
    raise AssertionError(kind)


def make_hf_checkpoint(kind: str, path, seed: int = 0):
    """A tiny Hugging Face checkpoint saved with save_pretrained; norms and biases perturbed so they matter."""
    torch.manual_seed(seed)
    model = _hf_model(kind).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "qwen3", "mistral", "gpt_neox"])
def test_hf_folder_logits_and_hidden_states_match(kind, tmp_path):
    hf = make_hf_checkpoint(kind, tmp_path / kind)
    model = load_model(tmp_path / kind)
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens, output_hidden_states=True)
        logits, cache = model.run_with_cache(tokens)
    assert isinstance(model, HookedTransformer) and not model.training
    assert model.cfg.original_architecture in SUPPORTED_ARCHITECTURES
    assert model.tokenizer is None  # the tiny folder has no tokenizer
    torch.testing.assert_close(logits, ref.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], ref.hidden_states[1], atol=1e-5, rtol=1e-5)


def test_hf_model_object_and_dtype(tmp_path):
    hf = make_hf_checkpoint("llama", tmp_path / "llama")
    tokens = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(2))
    from_object = load_model(hf)
    torch.testing.assert_close(from_object(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    half = load_model(tmp_path / "llama", dtype="bfloat16")
    assert half.cfg.dtype == torch.bfloat16 and half.W_E.dtype == torch.bfloat16
    with pytest.raises(FeatdiffError, match="'dtype'.*float32"):
        load_model(tmp_path / "llama", dtype="float8")


def test_llama3_rope_scaling_matches(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    rope = dict(rope_type="llama3", rope_theta=5e5, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8)  # fmt: skip
    cfg = LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                      vocab_size=VOCAB, max_position_embeddings=64, rope_parameters=rope)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "l3")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "l3").eval()
    model = load_model(tmp_path / "l3")
    tokens = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(3))
    assert model.cfg.use_NTK_by_parts_rope
    torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


def test_folder_tokenizer_is_attached_and_saved(tmp_path):
    make_hf_checkpoint("gpt2", tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert model.tokenizer is not None
    assert model.to_tokens("hello world the cat", prepend_bos=False).tolist() == [[3, 4, 5, 6]]
    again = load_model(save_model(model, tmp_path / "fd"))
    assert again.to_tokens("the cat sat", prepend_bos=False).tolist() == [[5, 6, 7]]


def test_featdiff_folder_round_trip(tmp_path):
    model = tiny_tl()
    prompts = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(0))
    path = save_model(model, tmp_path / "ckpt", prompts=prompts, meta={"role": "rl", "step": 7})
    back = load_model(str(path))
    tokens = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    assert torch.equal(back(tokens), model(tokens))
    assert back.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert torch.equal(load_prompts(back), prompts)
    assert back.featdiff_meta == {"role": "rl", "step": 7} and not back.training
    assert load_prompts(load_model(save_model(model, tmp_path / "no_prompts"))) is None


def test_hf_checkpoint_resaved_as_featdiff_folder(tmp_path):
    hf = make_hf_checkpoint("qwen2", tmp_path / "qwen")
    path = save_model(load_model(tmp_path / "qwen"), tmp_path / "fd")
    tokens = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(load_model(path)(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


def test_hooked_transformer_is_returned_as_is_in_eval_mode():
    model = tiny_tl().train()
    out = load_model(model)
    assert out is model and not out.training


def test_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FeatdiffError, match="neither a local folder nor a model reachable") as info:
        load_model("featdiff-test-org/no-such-model")
    assert time.perf_counter() - start < 10
    assert "huggingface-cli download featdiff-test-org/no-such-model" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # raised from None


def test_bad_paths_and_types(tmp_path):
    with pytest.raises(FeatdiffError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(FeatdiffError, match="does not exist"):
        load_model("./no/such/checkpoint")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatdiffError, match="neither featdiff_model.json .* nor config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FeatdiffError, match="is a file"):
        load_model(tmp_path / "file.txt")
    with pytest.raises(FeatdiffError, match="got int"):
        load_model(3)


def test_unsupported_architecture_names_it_and_the_supported_ones(tmp_path):
    from transformers import GPTNeoConfig

    cfg = GPTNeoConfig(num_layers=2, hidden_size=16, num_heads=2, attention_types=[[["global"], 2]])
    cfg.architectures = ["GPTNeoForCausalLM"]
    cfg.save_pretrained(tmp_path / "neo")
    with pytest.raises(FeatdiffError, match="'GPTNeoForCausalLM' is not supported") as info:
        load_model(tmp_path / "neo")
    assert "LlamaForCausalLM" in str(info.value) and "Qwen2ForCausalLM" in str(info.value)


def test_check_compatible_names_the_differences():
    base, rl = tiny_tl(), tiny_tl(seed=1)
    check_compatible({"base": base, "rl": rl}, "blocks.1.hook_resid_post")
    with pytest.raises(FeatdiffError, match=r"d_model: \{'base': 16, 'rl': 16, 'sft': 8\}"):
        check_compatible({"base": base, "rl": rl, "sft": tiny_tl(d_model=8)}, "blocks.0.hook_resid_post")
    with pytest.raises(FeatdiffError, match=r"d_vocab: \{'base': 37, 'sft': 50\}"):
        check_compatible({"base": base, "sft": tiny_tl(d_vocab=50)}, "blocks.0.hook_resid_post")
    with pytest.raises(
        FeatdiffError, match="'blocks.5.hook_resid_post' does not exist in checkpoint 'base'"
    ) as info:
        check_compatible({"base": base}, "blocks.5.hook_resid_post")
    assert "blocks.0.hook_resid_post" in str(info.value) and "blocks.1.hook_resid_post" in str(info.value)
    with pytest.raises(FeatdiffError, match="blocks.1.hook_mlp_out"):
        check_compatible({"base": base}, "blocks.1.hook_mlp_ot")
    with pytest.raises(FeatdiffError, match="'rl' is a str"):
        check_compatible({"base": base, "rl": "path"}, "blocks.0.hook_resid_post")
    with pytest.raises(FeatdiffError, match="non-empty dict"):
        check_compatible({}, "blocks.0.hook_resid_post")


def test_hook_name_and_default_hook():
    assert hook_name(3) == "blocks.3.hook_resid_post"
    assert hook_name(1, "resid_pre") == "blocks.1.hook_resid_pre"
    assert hook_name(0, "mlp_out") == "blocks.0.hook_mlp_out"
    assert default_hook(tiny_tl(n_layers=4)) == "blocks.2.hook_resid_post"
    assert default_hook(tiny_tl(n_layers=1)) == "blocks.0.hook_resid_post"
    model = tiny_tl()
    assert all(
        hook_name(1, s) in model.hook_dict for s in ["resid_pre", "resid_mid", "attn_out", "mlp_post", "z"]
    )
    with pytest.raises(FeatdiffError, match="'site' parameter of hook_name must be one of .*resid_post"):
        hook_name(0, "residual")
    with pytest.raises(FeatdiffError, match="integer >= 0"):
        hook_name(-1)
