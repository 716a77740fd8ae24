"""The featdiff checkpoint folder: a TransformerLens config, safetensors weights, the tokenizer and the
prompts (save_model; read back by load_model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from featdiff import constants
from featdiff._version import __version__
from featdiff.core.io import atomic_dir, write_json
from featdiff.core.output import dependency_warnings_once
from featdiff.errors import FeatdiffError, check_choice

# Sub-folder of a featdiff checkpoint that holds the tokenizer, when the model has one.
# (Belongs in constants.py; kept here until that module's owner adds it.)
TOKENIZER_DIR = "tokenizer"


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


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
    >>> from featdiff.models.load import load_model
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


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    allowed = ["float32", "float16", "bfloat16", "float64"]
    check_choice("dtype", dtype, allowed, where="load_model")
    return getattr(torch, dtype)


def load_featdiff_dir(path: Path, device: str | None = None, dtype: torch.dtype | None = None):
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
    tokenizer = local_tokenizer(path / TOKENIZER_DIR)
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


def local_tokenizer(path: Path):
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
