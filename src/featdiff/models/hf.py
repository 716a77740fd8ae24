"""Hugging Face checkpoints converted to HookedTransformers (a local folder or a model object), by architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featdiff.core.output import dependency_warnings_once
from featdiff.errors import FeatdiffError
from featdiff.models.folder import (
    local_tokenizer,
)

# Hugging Face architectures load_model converts, by the config's ``model_type``.
_ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(sorted(_ARCHITECTURES.values()))

# Longest context a converted model gets by default: TransformerLens allocates an (n_ctx, n_ctx) mask per
# layer, so a 32k-context checkpoint would need gigabytes for nothing. Pass n_ctx to load_model for more.
_DEFAULT_MAX_CTX = 2048


def _architecture(hf_config) -> str:
    arch = _ARCHITECTURES.get(getattr(hf_config, "model_type", None))
    declared = list(getattr(hf_config, "architectures", None) or [])
    if arch is None or (declared and declared[0] != arch):
        got = declared[0] if declared else getattr(hf_config, "model_type", "unknown")
        raise FeatdiffError(
            f"Architecture {got!r} is not supported by featdiff.load_model; supported Hugging Face "
            f"architectures: {list(SUPPORTED_ARCHITECTURES)}. Convert the checkpoint to a HookedTransformer "
            "yourself and pass the object instead."
        )
    return arch


def _head_dim(c) -> int:
    head_dim = getattr(c, "head_dim", None)
    return head_dim if head_dim else c.hidden_size // c.num_attention_heads


def _rope(c, arch: str) -> dict[str, Any]:
    """Rotary settings (base and llama3 scaling), from the transformers 4 or 5 config layout."""
    params = dict(getattr(c, "rope_parameters", None) or {})
    params.update(getattr(c, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(c, "rope_theta", None)) or 10000.0
    out: dict[str, Any] = {"rotary_base": theta}
    rope_type = (params.get("rope_type") or params.get("type") or "default").lower()
    if rope_type == "llama3":
        out.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=params.get("original_max_position_embeddings", c.max_position_embeddings),
            NTK_by_parts_low_freq_factor=params.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=params.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=params.get("factor", 1.0),
        )
    elif rope_type != "default":
        raise FeatdiffError(
            f"{arch} checkpoints with rope scaling {rope_type!r} are not supported (only 'default' and "
            "'llama3'); their activations would not match the Hugging Face model's."
        )
    return out


def _tl_config(hf_config, arch: str, n_ctx: int | None) -> dict[str, Any]:
    """A HookedTransformerConfig dict for ``hf_config`` (the conversions TransformerLens uses for these
    architectures, read from the config object instead of from a hub name)."""
    c = hf_config
    if arch == "GPT2LMHeadModel":
        cfg = dict(
            d_model=c.n_embd,
            d_head=c.n_embd // c.n_head,
            n_heads=c.n_head,
            d_mlp=c.n_inner or 4 * c.n_embd,
            n_layers=c.n_layer,
            n_ctx=c.n_positions,
            eps=c.layer_norm_epsilon,
            d_vocab=c.vocab_size,
            act_fn=c.activation_function,
            use_attn_scale=getattr(c, "scale_attn_weights", True),
            scale_attn_by_inverse_layer_idx=getattr(c, "scale_attn_by_inverse_layer_idx", False),
            normalization_type="LN",
        )
        if n_ctx is not None and n_ctx != cfg["n_ctx"]:
            raise FeatdiffError(f"GPT-2 has learned positions for n_ctx={cfg['n_ctx']}; got n_ctx={n_ctx}.")
        return cfg
    if arch == "GPTNeoXForCausalLM":
        from transformer_lens.utilities.hf_utils import (
            get_rotary_pct_from_config,  # deferred: transformer-lens ~12 s to import
        )

        d_head = c.hidden_size // c.num_attention_heads
        cfg = dict(
            d_model=c.hidden_size,
            d_head=d_head,
            n_heads=c.num_attention_heads,
            d_mlp=c.intermediate_size,
            n_layers=c.num_hidden_layers,
            eps=c.layer_norm_eps,
            d_vocab=c.vocab_size,
            act_fn=c.hidden_act,
            parallel_attn_mlp=getattr(c, "use_parallel_residual", True),
            positional_embedding_type="rotary",
            rotary_adjacent_pairs=False,
            rotary_dim=round(get_rotary_pct_from_config(c) * d_head),
            rotary_base=_rope(c, arch)["rotary_base"],
            normalization_type="LN",
            default_prepend_bos=False,
        )
    else:  # the Llama family: Llama, Mistral, Qwen2, Qwen3
        if getattr(c, "mlp_bias", False) or (
            arch != "Qwen2ForCausalLM" and getattr(c, "attention_bias", False)
        ):
            raise FeatdiffError(f"{arch} checkpoints with attention or MLP biases are not supported.")
        d_head = _head_dim(c)
        n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        cfg = dict(
            d_model=c.hidden_size,
            d_head=d_head,
            n_heads=c.num_attention_heads,
            n_key_value_heads=n_kv if n_kv != c.num_attention_heads else None,
            d_mlp=c.intermediate_size,
            n_layers=c.num_hidden_layers,
            eps=c.rms_norm_eps,
            d_vocab=c.vocab_size,
            act_fn=c.hidden_act,
            normalization_type="RMS",
            positional_embedding_type="rotary",
            rotary_adjacent_pairs=False,
            rotary_dim=d_head,
            final_rms=True,
            gated_mlp=True,
            **_rope(c, arch),
        )
        if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
            cfg["default_prepend_bos"] = False
        if arch == "Qwen3ForCausalLM":
            cfg["use_qk_norm"] = True
        window = getattr(c, "sliding_window", None)
        uses_window = window and (arch == "MistralForCausalLM" or getattr(c, "use_sliding_window", False))
        if uses_window:
            cfg.update(use_local_attn=True, window_size=window, attn_types=["local"] * c.num_hidden_layers)
    max_ctx = c.max_position_embeddings
    cfg["n_ctx"] = n_ctx if n_ctx is not None else min(max_ctx, _DEFAULT_MAX_CTX)
    return cfg


_CONVERTERS = {
    "GPT2LMHeadModel": "convert_gpt2_weights",
    "GPTNeoXForCausalLM": "convert_neox_weights",
    "LlamaForCausalLM": "convert_llama_weights",
    "MistralForCausalLM": "convert_mistral_weights",
    "Qwen2ForCausalLM": "convert_qwen2_weights",
    "Qwen3ForCausalLM": "convert_qwen3_weights",
}


def from_hf_model(
    hf_model,
    tokenizer=None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    n_ctx: int | None = None,
    source: str = "a Hugging Face model",
):
    """Convert a transformers causal LM into an unprocessed HookedTransformer (activations and logits
    equal the Hugging Face model's: no LayerNorm folding, no centering)."""
    from transformer_lens import (  # deferred: transformer-lens ~12 s to import
        HookedTransformer,
        HookedTransformerConfig,
    )
    from transformer_lens.pretrained import weight_conversions  # deferred: transformer-lens ~12 s to import

    arch = _architecture(hf_model.config)
    cfg_dict = _tl_config(hf_model.config, arch, n_ctx)
    cfg_dict.update(
        original_architecture=arch,
        model_name=Path(source).name or arch,
        tokenizer_name=None,
        init_weights=False,
        dtype=dtype or torch.float32,
        device=device,
    )
    cfg = HookedTransformerConfig.from_dict(cfg_dict)
    hf_model = hf_model.float()
    state = getattr(weight_conversions, _CONVERTERS[arch])(hf_model, cfg)
    with dependency_warnings_once():  # TransformerLens 3.9 warns on every model built
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.move_model_modules_to_device()
    model.eval()
    model.featdiff_path = source
    return model


def load_hf_dir(path: Path, device=None, dtype=None, n_ctx=None, source: str | None = None):
    from transformers import AutoConfig, AutoModelForCausalLM  # deferred: transformers ~2 s to import

    try:
        hf_config = AutoConfig.from_pretrained(str(path))
    except Exception as e:
        raise FeatdiffError(f"Cannot read {path / 'config.json'} ({type(e).__name__}: {e}).") from None
    _architecture(hf_config)  # fail before reading any weights
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except Exception as e:
        raise FeatdiffError(
            f"Cannot load the Hugging Face weights in {path} ({type(e).__name__}: {e}); featdiff reads "
            "checkpoints saved with save_pretrained (config.json + model.safetensors)."
        ) from None
    model = from_hf_model(hf_model.eval(), local_tokenizer(path), device, dtype, n_ctx, source or str(path))
    del hf_model
    return model
