"""Loading checkpoints as HookedTransformers, saving featdiff checkpoint folders, checking compatibility.

``load_model`` takes a checkpoint in any of the forms featdiff accepts (a HookedTransformer, a featdiff
checkpoint folder, a local Hugging Face folder, a Hugging Face model object or a hub name) and returns a
HookedTransformer in eval mode whose hook activations and logits are those of the checkpoint.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from featdiff import constants
from featdiff._version import __version__
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import dependency_warnings_once
from featdiff.errors import FeatdiffError, check_choice

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# Sub-folder of a featdiff checkpoint that holds the tokenizer, when the model has one.
# (Belongs in constants.py; kept here until that module's owner adds it.)
TOKENIZER_DIR = "tokenizer"

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

# Files a hub checkpoint needs (weights, config, tokenizer); nothing else is downloaded.
_HUB_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.model",
]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")

# Hook sites hook_name builds, as TransformerLens names them.
_SITES = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
    "z": "blocks.{layer}.attn.hook_z",
}


# ---------------------------------------------------------------------------------------------- hook names


def hook_name(layer: int, site: str = "resid_post") -> str:
    """The TransformerLens hook name of ``site`` in block ``layer``.

    Examples
    --------
    >>> hook_name(2)
    'blocks.2.hook_resid_post'
    >>> hook_name(0, "mlp_post")
    'blocks.0.mlp.hook_post'
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise FeatdiffError(f"The 'layer' parameter of hook_name must be an int >= 0; got {layer!r}.")
    check_choice("site", site, _SITES, where="hook_name")
    return _SITES[site].format(layer=layer)


def default_hook(model: HookedTransformer) -> str:
    """The hook featdiff uses when none is given: the middle layer's residual stream.

    Examples
    --------
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=4, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu"))
    >>> default_hook(model)
    'blocks.2.hook_resid_post'
    """
    return hook_name(model.cfg.n_layers // 2)


def hook_layer(hook: str) -> int | None:
    """The block a hook lives in (``blocks.{L}.…`` -> L), -1 for the embedding hooks, else None."""
    m = re.match(r"^blocks\.(\d+)\.", hook)
    if m:
        return int(m.group(1))
    if hook in ("hook_embed", "hook_pos_embed", "hook_tokens"):
        return -1
    return None


def stop_layer(hook: str) -> int | None:
    """The ``stop_at_layer`` that runs a model just far enough to compute ``hook`` (None: the whole model).

    Examples
    --------
    >>> stop_layer("blocks.1.hook_resid_post"), stop_layer("hook_embed"), stop_layer("ln_final.hook_normalized")
    (2, 0, None)
    """
    layer = hook_layer(hook)
    return None if layer is None else layer + 1


def _suggest_hooks(hook: str, valid: list[str], n: int = 6) -> list[str]:
    kind = hook.rsplit(".", 1)[-1]
    same_kind = [h for h in valid if h.rsplit(".", 1)[-1] == kind]
    if same_kind:
        return same_kind[:n]
    close = difflib.get_close_matches(hook, valid, n=n, cutoff=0.5)
    return close or [h for h in valid if h.endswith("hook_resid_post")][:n]


def _check_hook(model: HookedTransformer, hook: str, name: str = "the model") -> None:
    if not isinstance(hook, str):
        raise FeatdiffError(f"A hook must be a TransformerLens hook name (str); got {type(hook).__name__}.")
    if hook not in model.hook_dict:
        valid = list(model.hook_dict)
        raise FeatdiffError(
            f"Hook {hook!r} does not exist in {name} ({model.cfg.n_layers} layers). "
            f"Valid hooks of this kind: {_suggest_hooks(hook, valid)}; build one with "
            "featdiff.hook_name(layer, site)."
        )


def check_compatible(models: dict[str, HookedTransformer], hook: str) -> None:
    """Raise FeatdiffError unless all checkpoints share d_model and d_vocab and all have ``hook``.

    Examples
    --------
    >>> from transformer_lens import HookedTransformer
    >>> cfg = dict(n_layers=2, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu")
    >>> models = {"base": HookedTransformer(cfg), "rl": HookedTransformer(cfg)}
    >>> check_compatible(models, "blocks.1.hook_resid_post")  # silent when compatible
    >>> check_compatible(models, "blocks.5.hook_resid_post")
    Traceback (most recent call last):
    ...
    featdiff.errors.FeatdiffError: Hook 'blocks.5.hook_resid_post' does not exist in checkpoint 'base' ...
    """
    from transformer_lens import HookedTransformer  # deferred: transformer-lens ~12 s to import

    if not isinstance(models, dict) or not models:
        raise FeatdiffError("check_compatible needs a non-empty dict {checkpoint name: HookedTransformer}.")
    for name, model in models.items():
        if not isinstance(model, HookedTransformer):
            raise FeatdiffError(
                f"Checkpoint {name!r} is a {type(model).__name__}, not a HookedTransformer; "
                "load it first with featdiff.load_model."
            )
    for field in ("d_model", "d_vocab"):
        values = {name: getattr(m.cfg, field) for name, m in models.items()}
        if len(set(values.values())) > 1:
            raise FeatdiffError(
                f"The checkpoints disagree on {field}: {values}. Every checkpoint compared must be a "
                "version of the same model (same architecture and tokenizer)."
            )
    for name, model in models.items():
        _check_hook(model, hook, f"checkpoint {name!r}")


# ------------------------------------------------------------------------------------------ saving/loading


def _cfg_to_json(cfg) -> dict:
    out = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        elif isinstance(v, torch.device):
            v = str(v)
        try:
            json.dumps(v)
        except TypeError:
            continue  # drop values that are not JSON (e.g. callables); they are derived on load
        out[k] = v
    return out


def save_model(
    model,
    path: str | os.PathLike,
    prompts: Int[Tensor, "n_prompts seq"] | None = None,
    meta: dict | None = None,
) -> Path:
    """Write ``model`` (a HookedTransformer) as a featdiff checkpoint folder that ``load_model`` reads.

    The folder holds ``featdiff_model.json`` (the HookedTransformerConfig and ``meta``),
    ``model.safetensors`` and the model's tokenizer, if it has one; ``prompts`` (token ids) travel with
    it, as lab checkpoints carry their prompts.

    Examples
    --------
    >>> import tempfile, torch
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=11, act_fn="relu"))
    >>> path = save_model(model, tempfile.mkdtemp() + "/ckpt")
    >>> tokens = torch.tensor([[1, 2, 3]])
    >>> torch.equal(load_model(path)(tokens), model(tokens))
    True
    """

    path = Path(path)
    with atomic_dir(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / constants.MODEL_WEIGHTS))
        if prompts is not None:
            save_file({"prompts": prompts.detach().cpu().contiguous()}, str(tmp / constants.PROMPTS))
        if getattr(model, "tokenizer", None) is not None:
            model.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))

        write_json(
            tmp / constants.MODEL_CONFIG,
            {
                "featdiff_version": __version__,
                "format_version": constants.FORMAT_VERSION,
                "config": _cfg_to_json(model.cfg),
                "meta": meta or {},
            },
        )
    return path


def _resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    allowed = ["float32", "float16", "bfloat16", "float64"]
    check_choice("dtype", dtype, allowed, where="load_model")
    return getattr(torch, dtype)


def _load_featdiff_dir(path: Path, device: str | None = None, dtype: torch.dtype | None = None):
    from transformer_lens import (  # deferred: transformer-lens ~12 s to import
        HookedTransformer,
        HookedTransformerConfig,
    )

    try:
        info = json.loads((path / constants.MODEL_CONFIG).read_text())
        cfg_dict = dict(info["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FeatdiffError(
            f"Cannot read {path / constants.MODEL_CONFIG} ({e}); re-save the checkpoint with featdiff.save_model."
        ) from None
    if isinstance(cfg_dict.get("dtype"), str):
        cfg_dict["dtype"] = getattr(torch, cfg_dict["dtype"])
    if dtype is not None:
        cfg_dict["dtype"] = dtype
    # The device it was saved on may not exist here: let TransformerLens pick unless one is asked for.
    cfg_dict["device"] = device
    # The tokenizer travels in the folder; never look its name up on the hub.
    cfg_dict["tokenizer_name"] = None
    allowed = set(HookedTransformerConfig.__dataclass_fields__)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items() if k in allowed})
    tokenizer = _local_tokenizer(path / TOKENIZER_DIR)
    with dependency_warnings_once():  # TransformerLens 3.9 warns on every model built
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    weights = path / constants.MODEL_WEIGHTS
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise FeatdiffError(f"Cannot read the weights of checkpoint {path} ({weights.name}): {e}.") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_derived_buffer(k)]
    if missing or unexpected:
        raise FeatdiffError(
            f"The weights in {weights} do not fit the config in {constants.MODEL_CONFIG}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}. Re-save the checkpoint with featdiff.save_model."
        )
    model.eval()
    model.featdiff_meta = info.get("meta", {})
    model.featdiff_path = str(path)
    prompts = path / constants.PROMPTS
    model.featdiff_prompts = load_file(str(prompts))["prompts"] if prompts.is_file() else None
    return model


def _is_derived_buffer(key: str) -> bool:
    # Buffers a HookedTransformer rebuilds from its config (masks, rotary tables).
    return key.rsplit(".", 1)[-1] in {"mask", "IGNORE", "rotary_sin", "rotary_cos"}


def load_prompts(model) -> Tensor | None:
    """The token prompts a checkpoint carries (lab checkpoints do), or None.

    Examples
    --------
    >>> load_prompts(object()) is None
    True
    """
    return getattr(model, "featdiff_prompts", None)


# ------------------------------------------------------------------------------- Hugging Face conversion


def _local_tokenizer(path: Path):
    """The tokenizer saved in ``path``, or None when the folder has none."""
    if not path.is_dir() or not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer  # deferred: transformers ~2 s to import

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise FeatdiffError(
            f"The tokenizer files in {path} cannot be read ({type(e).__name__}: {e}); fix or remove them."
        ) from None


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


def _from_hf_model(
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


def _load_hf_dir(path: Path, device=None, dtype=None, n_ctx=None, source: str | None = None):
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
    model = _from_hf_model(hf_model.eval(), _local_tokenizer(path), device, dtype, n_ctx, source or str(path))
    del hf_model
    return model


def _hub_offline() -> bool:
    from huggingface_hub import constants as hub_constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(hub_constants.HF_HUB_OFFLINE)


def _load_hub(name: str, device=None, dtype=None, n_ctx=None):
    from huggingface_hub import snapshot_download

    offline = _hub_offline()
    try:
        local = snapshot_download(name, allow_patterns=_HUB_FILES, local_files_only=offline)
    except Exception as e:
        why = (
            "offline mode is on (HF_HUB_OFFLINE) and it is not in the local cache"
            if offline
            else (f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        )
        raise FeatdiffError(
            f"{name!r} is neither a local folder nor a model reachable on the Hugging Face Hub ({why}). "
            "Pass the path of a local checkpoint folder (one with config.json or featdiff_model.json), or "
            f"download it first, e.g. `huggingface-cli download {name} --local-dir DIR`, and pass DIR."
        ) from None
    return _load_hf_dir(Path(local), device, dtype, n_ctx, source=name)


def _looks_like_hub_name(spec: str) -> bool:
    return bool(_HUB_NAME.match(spec)) and not spec.startswith((".", "~"))


def load_model(
    spec,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    n_ctx: int | None = None,
) -> HookedTransformer:
    """Load a checkpoint as a HookedTransformer in eval mode.

    ``spec`` is a HookedTransformer (returned as is, moved to ``device``/``dtype`` if given), a featdiff
    checkpoint folder (``featdiff_model.json``, written by ``save_model``), a local Hugging Face folder
    (``config.json``, from ``save_pretrained``; architectures in ``SUPPORTED_ARCHITECTURES``), a
    transformers causal-LM object, or a hub name such as ``"Qwen/Qwen2.5-0.5B"``. Hugging Face weights are
    converted without LayerNorm folding or centering, so hook activations equal the model's hidden states
    and logits match. A folder's tokenizer is attached when it has one. ``n_ctx`` caps the context of
    rotary models (default: the model's, at most 2048).

    Examples
    --------
    >>> import tempfile
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> path = tempfile.mkdtemp()
    >>> GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=13, n_positions=16)).save_pretrained(path)
    >>> model = load_model(path)
    >>> model.cfg.d_model, model.cfg.d_vocab, model.tokenizer is None
    (8, 13, True)
    """
    from transformer_lens import HookedTransformer  # deferred: transformer-lens ~12 s to import

    dtype = _resolve_dtype(dtype)
    if isinstance(spec, HookedTransformer):
        if device is not None:
            spec.to(str(device), print_details=False)
        if dtype is not None:
            spec.to(dtype, print_details=False)
        return spec.eval()
    try:
        from transformers import PreTrainedModel  # deferred: transformers ~2 s to import
    except ImportError:  # pragma: no cover - transformers comes with transformer-lens
        PreTrainedModel = ()  # noqa: N806
    if isinstance(spec, PreTrainedModel):
        return _from_hf_model(spec.eval(), None, device, dtype, n_ctx, source=type(spec).__name__)
    if not isinstance(spec, (str, os.PathLike)):
        raise FeatdiffError(
            "load_model takes a HookedTransformer, a transformers model, a checkpoint folder or a hub name; "
            f"got {type(spec).__name__}."
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / constants.MODEL_CONFIG).is_file():
            return _load_featdiff_dir(path, device=device, dtype=dtype)
        if (path / "config.json").is_file():
            return _load_hf_dir(path, device=device, dtype=dtype, n_ctx=n_ctx)
        raise FeatdiffError(
            f"Folder {str(path)!r} is not a checkpoint: it has neither {constants.MODEL_CONFIG} (featdiff) "
            "nor config.json (Hugging Face). Pass the folder that holds one of them."
        )
    if path.exists():
        raise FeatdiffError(f"{str(path)!r} is a file; load_model takes the checkpoint's folder.")
    if isinstance(spec, str) and _looks_like_hub_name(spec):
        return _load_hub(spec, device=device, dtype=dtype, n_ctx=n_ctx)
    raise FeatdiffError(
        f"Checkpoint {str(spec)!r} does not exist (and is not a hub name like 'org/model'); "
        "pass an existing checkpoint folder."
    )
