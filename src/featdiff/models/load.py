"""load_model: a checkpoint in any form featdiff accepts (a HookedTransformer, a featdiff checkpoint folder, a
local Hugging Face folder, a Hugging Face model object or a hub name) as a HookedTransformer in eval mode whose
hook activations and logits are those of the checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from featdiff import constants
from featdiff.errors import FeatdiffError
from featdiff.models.folder import (
    load_featdiff_dir,
    resolve_dtype,
)
from featdiff.models.hf import from_hf_model, load_hf_dir

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


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


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


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
    return load_hf_dir(Path(local), device, dtype, n_ctx, source=name)


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
    >>> gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=13, n_positions=16))
    >>> gpt2.save_pretrained(path)
    >>> model = load_model(path)
    >>> model.cfg.d_model, model.cfg.d_vocab, model.tokenizer is None
    (8, 13, True)
    """
    from transformer_lens import HookedTransformer  # deferred: transformer-lens ~12 s to import

    dtype = resolve_dtype(dtype)
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
        return from_hf_model(spec.eval(), None, device, dtype, n_ctx, source=type(spec).__name__)
    if not isinstance(spec, (str, os.PathLike)):
        raise FeatdiffError(
            "load_model takes a HookedTransformer, a transformers model, a checkpoint folder or a hub name; "
            f"got {type(spec).__name__}."
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / constants.MODEL_CONFIG).is_file():
            return load_featdiff_dir(path, device=device, dtype=dtype)
        if (path / "config.json").is_file():
            return load_hf_dir(path, device=device, dtype=dtype, n_ctx=n_ctx)
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
