"""Loading checkpoints as HookedTransformers, saving featdiff checkpoint folders, checking compatibility."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from featdiff import constants
from featdiff._io import atomic_dir, write_json
from featdiff.errors import FeatdiffError


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

    The folder holds ``featdiff_model.json`` (the HookedTransformerConfig and ``meta``) and
    ``model.safetensors``; ``prompts`` (token ids) travel with it, as lab checkpoints carry their prompts.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_dir(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / constants.MODEL_WEIGHTS))
        if prompts is not None:
            save_file({"prompts": prompts.detach().cpu().contiguous()}, str(tmp / constants.PROMPTS))
        from featdiff import __version__

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


def _load_featdiff_dir(path: Path, device: str | None = None):
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    info = json.loads((path / constants.MODEL_CONFIG).read_text())
    cfg_dict = dict(info["config"])
    if isinstance(cfg_dict.get("dtype"), str):
        cfg_dict["dtype"] = getattr(torch, cfg_dict["dtype"])
    if device is not None:
        cfg_dict["device"] = device
    allowed = set(HookedTransformerConfig.__dataclass_fields__)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items() if k in allowed})
    model = HookedTransformer(cfg)
    weights = path / constants.MODEL_WEIGHTS
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise FeatdiffError(f"Cannot read the weights of checkpoint {path} ({weights.name}): {e}.") from None
    model.load_state_dict(state, strict=False)
    model.eval()
    model.featdiff_meta = info.get("meta", {})
    model.featdiff_path = str(path)
    prompts = path / constants.PROMPTS
    model.featdiff_prompts = load_file(str(prompts))["prompts"] if prompts.is_file() else None
    return model


def load_prompts(model) -> Tensor | None:
    """The token prompts a checkpoint carries (lab checkpoints do), or None."""
    return getattr(model, "featdiff_prompts", None)
