"""Readers and writers of the ecosystem's SAE formats, returning sae-lens SAEs.

In: dictionary_learning checkpoints (``ae.pt`` + ``config.json``: AutoEncoder, BatchTopK), EleutherAI
sparsify folders (``cfg.json`` + ``sae.safetensors``, read with sae-lens's own converter) and sae-lens
pretrained releases (``SAE.from_pretrained``). Out: ``save_saes`` (sae-lens folders, one per checkpoint and
replica); the per-feature JSON for dashboard-style viewers is ``featdiff.report.export``. See docs/formats.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from featdiff import constants
from featdiff.core.io import atomic_dir
from featdiff.errors import FeatdiffError

if TYPE_CHECKING:
    from sae_lens import SAE

DICTIONARY_LEARNING_WEIGHTS = "ae.pt"
SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"


def detect_format(path: str | os.PathLike) -> str:
    """The format of an SAE folder: "sae_lens", "dictionary_learning" or "sparsify"."""
    path = Path(path)
    if (path / DICTIONARY_LEARNING_WEIGHTS).is_file():
        return "dictionary_learning"
    if (path / constants.SAE_WEIGHTS).is_file():
        return "sae_lens"
    if (path / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    raise FeatdiffError(
        f"{path} holds no SAE featdiff can read: expected a sae-lens folder ({constants.SAE_CFG}), a "
        f"dictionary_learning checkpoint ({DICTIONARY_LEARNING_WEIGHTS}) or a sparsify folder "
        f"({SPARSIFY_CFG} + {SPARSIFY_WEIGHTS})."
    )


def _set_bias(sae: SAE, b_enc: torch.Tensor) -> SAE:
    with torch.no_grad():
        sae.b_enc.copy_(b_enc.detach().float())
    return sae


def load_dictionary_learning(path: str | os.PathLike) -> SAE:
    """Read a dictionary_learning ``AutoEncoder`` or ``BatchTopKSAE`` checkpoint folder (``ae.pt``).

    AutoEncoder: ``relu(encoder(x - bias))``, ``decoder(f) + bias`` -> a sae-lens "standard" SAE.
    BatchTopKSAE with a learned ``threshold`` >= 0: its inference encoding ``relu(pre) * (relu(pre) >
    threshold)`` -> a "jumprelu" SAE; without one (threshold < 0), top-``k`` per token -> a "topk" SAE. featdiff writes this converter itself: sae-lens's dictionary_learning loader reads only its hub layout.
    """
    from featdiff.dictionaries.sae import sae_from_dictionary

    path = Path(path)
    try:
        sd = torch.load(path / DICTIONARY_LEARNING_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FeatdiffError(f"Cannot read {path / DICTIONARY_LEARNING_WEIGHTS}: {type(e).__name__}: {e}.") from None
    keys = set(sd)
    try:
        W_enc, b_enc = sd["encoder.weight"].T, sd["encoder.bias"]
        W_dec = sd["decoder.weight"].T
        if "bias" in keys:  # AutoEncoder
            sae = sae_from_dictionary(W_dec, W_enc=W_enc, b_dec=sd["bias"], architecture="standard")
        elif "k" in keys and float(sd.get("threshold", torch.tensor(-1.0))) >= 0:
            # BatchTopKSAE.encode (use_threshold=True): relu(pre) * (relu(pre) > threshold) -> a JumpReLU SAE
            sae = sae_from_dictionary(W_dec, W_enc=W_enc, b_dec=sd["b_dec"], architecture="jumprelu")
            with torch.no_grad():
                sae.threshold.fill_(float(sd["threshold"]))
        elif "k" in keys:  # no learned threshold yet: top-k per token (batch top-k has no per-token equivalent)
            sae = sae_from_dictionary(W_dec, W_enc=W_enc, b_dec=sd["b_dec"], k=int(sd["k"]), architecture="topk")
        else:
            raise KeyError("neither 'bias' (AutoEncoder) nor 'k' (BatchTopK)")
    except KeyError as e:
        raise FeatdiffError(
            f"{path / DICTIONARY_LEARNING_WEIGHTS} is not an AutoEncoder or BatchTopK state dict (missing {e}); "
            f"keys: {sorted(keys)}."
        ) from None
    return _set_bias(sae, b_enc)


def load_sparsify(path: str | os.PathLike) -> SAE:
    """Read an EleutherAI sparsify SAE folder (``cfg.json`` + ``sae.safetensors``) into a sae-lens "topk" SAE.

    Same layout as sae-lens's ``sparsify_disk_loader`` (``encoder.weight``/``encoder.bias``, ``W_dec``
    (num_latents, d_in), ``b_dec``), but read in float32: that loader casts to bfloat16, which would not
    reconstruct exactly. Encoding ``topk(relu(encoder(x - b_dec)))``, decoding ``f @ W_dec + b_dec``.
    """
    from safetensors.torch import load_file

    from featdiff.dictionaries.sae import sae_from_dictionary

    path = Path(path)
    try:
        cfg = json.loads((path / SPARSIFY_CFG).read_text())
        sd = load_file(str(path / SPARSIFY_WEIGHTS), device="cpu")
        k = int(cfg["k"])
        W_enc, W_dec, b_dec = sd["encoder.weight"].T, sd["W_dec"], sd["b_dec"]
    except Exception as e:
        raise FeatdiffError(
            f"Cannot read the sparsify SAE in {path}: {type(e).__name__}: {e}. Expected {SPARSIFY_CFG} with 'k' "
            f"and {SPARSIFY_WEIGHTS} with encoder.weight, W_dec, b_dec."
        ) from None
    if cfg.get("activation", "topk") != "topk" or cfg.get("transcode", False):
        raise FeatdiffError(
            f"{path}: only top-k sparsify SAEs are read (cfg.json has activation={cfg.get('activation')!r}, "
            f"transcode={cfg.get('transcode', False)!r})."
        )
    if cfg.get("signed", False):
        raise FeatdiffError(f"{path}: signed sparsify SAEs are not supported (cfg.json has 'signed': true).")
    b_enc = sd.get("encoder.bias", torch.zeros(W_enc.shape[1]))
    sae = sae_from_dictionary(W_dec.float(), W_enc=W_enc.float(), b_dec=b_dec.float(), k=k)
    return _set_bias(sae, b_enc)


def load_pretrained(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A sae-lens pretrained release through sae-lens's registry (``SAE.from_pretrained``); works wherever
    the hub or its local cache (``HF_HUB_OFFLINE=1``) is reachable."""
    from sae_lens import SAE  # deferred: sae-lens ~10 s to import

    try:
        return SAE.from_pretrained(release, sae_id, device=device).eval()
    except Exception as e:
        raise FeatdiffError(
            f"Cannot load the sae-lens release {release!r} / sae_id {sae_id!r}: {type(e).__name__}: {e}. "
            "Check the names in sae-lens's pretrained_saes.yaml and that the hub or its cache is reachable; "
            f"if you meant a folder, {release}/{sae_id} does not exist."
        ) from None


def save_saes(saes: Mapping[str, Any], folder: str | os.PathLike, overwrite: bool | None = None) -> dict[str, Path]:
    """Write every SAE in sae-lens's format: ``folder/<checkpoint>`` for one SAE, ``folder/<checkpoint>/
    replica_<i>`` for a sequence of replicas. Returns {relative name: folder}."""
    if not isinstance(saes, Mapping) or not saes:
        raise FeatdiffError("save_saes takes a non-empty mapping {checkpoint: SAE or [SAE replicas]}.")
    folder, out = Path(folder), {}
    for name, value in saes.items():
        items = list(enumerate(value)) if isinstance(value, Sequence) else [(None, value)]
        for i, sae in items:
            rel = str(name) if i is None else f"{name}/replica_{i}"
            out[rel] = save_sae(sae, folder / rel, overwrite=overwrite)
    return out


def save_sae(sae: SAE, path: str | os.PathLike, overwrite: bool | None = None) -> Path:
    """Write ``sae`` in sae-lens's format (``cfg.json`` + ``sae_weights.safetensors``), atomically.

    Uses sae-lens's own ``save_model`` (``save_inference_model`` for a training SAE) into a temporary
    folder that then replaces ``path``: only when ``path`` is empty or featdiff's own output
    (``overwrite=True``
    replaces any folder, ``False`` none). Read it back with ``load_sae`` or ``sae_lens.SAE.load_from_disk``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> sae = sae_from_dictionary(torch.eye(4), k=1)
    >>> folder = save_sae(sae, tempfile.mkdtemp() + "/sae")
    >>> sorted(p.name for p in folder.iterdir())
    ['.featdiff', 'cfg.json', 'sae_weights.safetensors']
    """
    from sae_lens import SAE  # deferred: sae-lens ~10 s to import
    from sae_lens.saes.sae import TrainingSAE  # deferred: sae-lens ~10 s to import

    if not isinstance(sae, SAE):
        raise FeatdiffError(f"save_sae needs a sae_lens SAE; got {type(sae).__name__}.")
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        if isinstance(sae, TrainingSAE):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)
    return path


def _load_sae_lens_folder(path: str | os.PathLike, device: str = "cpu") -> SAE:
    """Read an SAE folder in sae-lens's format (written by ``save_sae`` or by sae-lens) in eval mode; the
    reader ``featdiff.dictionaries.formats.load_sae`` (``fd.load_sae``, every format) uses for such folders.

    Examples
    --------
    >>> import tempfile, torch
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> sae = sae_from_dictionary(torch.eye(4), k=1)
    >>> loaded = _load_sae_lens_folder(save_sae(sae, tempfile.mkdtemp() + "/sae"))
    >>> torch.equal(loaded.W_dec, sae.W_dec), loaded.cfg.k
    (True, 1)
    """
    from sae_lens import SAE  # deferred: sae-lens ~10 s to import

    path = Path(path)
    if not path.is_dir():
        raise FeatdiffError(
            f"No SAE folder at {path}; pass a folder written by save_sae (or sae-lens's save_model)."
        )
    cfg_file, weights_file = path / constants.SAE_CFG, path / constants.SAE_WEIGHTS
    if not cfg_file.is_file():
        raise FeatdiffError(
            f"{cfg_file} is missing; the SAE folder {path} is incomplete. Re-save it with save_sae."
        )
    try:
        cfg = json.loads(cfg_file.read_text())
        if not isinstance(cfg, dict) or "architecture" not in cfg:
            raise ValueError("no 'architecture' entry")
    except (ValueError, UnicodeDecodeError) as e:
        raise FeatdiffError(
            f"{cfg_file} is not a valid sae-lens config ({e}); re-save the SAE with save_sae."
        ) from None
    if not weights_file.is_file():
        raise FeatdiffError(
            f"{weights_file} is missing; the SAE folder {path} is incomplete. Re-save it with save_sae."
        )
    try:
        sae = SAE.load_from_disk(path, device=device)
    except Exception as e:  # safetensors / state-dict errors from a corrupted or mismatched file
        raise FeatdiffError(
            f"Cannot load the SAE in {path}: {type(e).__name__}: {e}. {weights_file.name} is corrupted or does "
            f"not match {cfg_file.name}; re-save the SAE with save_sae or retrain it."
        ) from None
    return sae.eval()


def load_sae(
    path: str | os.PathLike | None = None,
    device: str = "cpu",
    *,
    release: str | None = None,
    sae_id: str | None = None,
) -> SAE:
    """Read an SAE in any format featdiff knows, as a sae-lens SAE in eval mode (``fd.load_sae``).

    ``path``: a sae-lens folder (``_load_sae_lens_folder``), a dictionary_learning
    checkpoint folder, a sparsify folder, or a ``"release/sae_id"`` string that is not an existing path (a
    sae-lens pretrained SAE, as does ``release=..., sae_id=...``).
    """

    if release is not None or sae_id is not None:
        if path is not None or not (release and sae_id):
            raise FeatdiffError("Pass either a folder, or both release= and sae_id= (a sae-lens pretrained SAE).")
        return load_pretrained(release, sae_id, device=device)
    if path is None:
        raise FeatdiffError("load_sae needs a folder, or release= and sae_id=.")
    if isinstance(path, str) and "/" in path and not path.startswith((".", "/", "~")) and not Path(path).exists():
        release_name, _, sae_name = path.partition("/")
        return load_pretrained(release_name, sae_name, device=device)
    p = Path(path)
    if p.is_dir():
        try:
            fmt = detect_format(p)
        except FeatdiffError:
            fmt = "sae_lens"  # let sae-lens's reader name what is missing
        if fmt == "dictionary_learning":
            return load_dictionary_learning(p).to(device)
        if fmt == "sparsify":
            return load_sparsify(p).to(device)
    return _load_sae_lens_folder(path, device=device)


def load_crosscoder(path: str | os.PathLike, names: Sequence[str] | None = None):
    """Read a crosscoder: a featdiff crosscoder folder (``Crosscoder.load``) or a dictionary_learning
    ``CrossCoder`` checkpoint (``ae.pt`` with ``encoder.weight`` (n_models, d_in, d_sae), ``encoder.bias``,
    ``decoder.weight`` (n_models, d_sae, d_in), ``decoder.bias`` (n_models, d_in)), whose ReLU encoding
    becomes a featdiff l1 Crosscoder with unit ``norm_scale``. ``names``: the checkpoints in the order of
    the checkpoint's models (default "model_0", "model_1", ...). featdiff writes this converter itself.
    """
    from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
    from featdiff.dictionaries.crosscoder.model import Crosscoder

    path = Path(path)
    if not (path / DICTIONARY_LEARNING_WEIGHTS).is_file():
        return Crosscoder.load(path)
    try:
        sd = torch.load(path / DICTIONARY_LEARNING_WEIGHTS, map_location="cpu", weights_only=True)
        W_enc, b_enc = sd["encoder.weight"].float(), sd["encoder.bias"].float()
        W_dec, b_dec = sd["decoder.weight"].float(), sd["decoder.bias"].float()
    except Exception as e:
        raise FeatdiffError(
            f"{path / DICTIONARY_LEARNING_WEIGHTS} is not a dictionary_learning CrossCoder state dict "
            f"({type(e).__name__}: {e})."
        ) from None
    if W_enc.ndim != 3 or W_dec.ndim != 3:
        raise FeatdiffError(
            f"{path / DICTIONARY_LEARNING_WEIGHTS}: encoder.weight must be (n_models, d_in, d_sae); got "
            f"{tuple(W_enc.shape)} (an SAE checkpoint? read it with fd.load_sae)."
        )
    m, d_in, d_sae = W_enc.shape
    names = [f"model_{i}" for i in range(m)] if names is None else list(names)
    if len(names) != m:
        raise FeatdiffError(f"The checkpoint holds {m} models; got {len(names)} names {names}.")
    cc = Crosscoder(CrosscoderConfig(names=names, d_in=d_in, d_sae=d_sae, sparsity="l1", n_steps=1))
    with torch.no_grad():
        cc.W_enc.copy_(W_enc)
        cc.b_enc.copy_(b_enc)
        cc.W_dec.copy_(W_dec)
        cc.b_dec.copy_(b_dec)
    return cc.eval()
