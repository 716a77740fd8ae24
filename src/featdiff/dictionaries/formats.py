"""Readers and writers of the ecosystem's SAE formats, returning sae-lens SAEs.

In: dictionary_learning checkpoints (``ae.pt`` + ``config.json``: AutoEncoder, BatchTopK), EleutherAI
sparsify folders (``cfg.json`` + ``sae.safetensors``, read with sae-lens's own converter) and sae-lens
pretrained releases (``SAE.from_pretrained``). Out: ``save_saes`` (sae-lens folders, one per checkpoint and
replica) and ``export_features`` (a per-feature JSON for dashboard-style viewers). See docs/formats.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from featdiff.errors import FeatdiffError

if TYPE_CHECKING:
    from sae_lens import SAE

DICTIONARY_LEARNING_WEIGHTS = "ae.pt"
SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
FEATURE_JSON_VERSION = 2  # 2: top contexts, logits and top components per feature (docs/formats.md)


def detect_format(path: str | os.PathLike) -> str:
    """The format of an SAE folder: "sae_lens", "dictionary_learning" or "sparsify"."""
    from featdiff import constants

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
    from featdiff.dictionaries.sae import save_sae

    if not isinstance(saes, Mapping) or not saes:
        raise FeatdiffError("save_saes takes a non-empty mapping {checkpoint: SAE or [SAE replicas]}.")
    folder, out = Path(folder), {}
    for name, value in saes.items():
        items = list(enumerate(value)) if isinstance(value, Sequence) else [(None, value)]
        for i, sae in items:
            rel = str(name) if i is None else f"{name}/replica_{i}"
            out[rel] = save_sae(sae, folder / rel, overwrite=overwrite)
    return out


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def feature_records(features) -> list[dict[str, Any]]:
    """One JSON-ready dict per row of a ``Comparison.features`` table (NaN -> null)."""
    return [{str(k): _clean(v) for k, v in row.items()} for row in features.to_dict(orient="records")]


def card_record(card) -> dict[str, Any]:
    """The Neuronpedia-like fields of one feature's card (``featdiff.report.cards.FeatureCard``; docs/formats.md)."""
    logits = {}
    for side, items in (("pos", card.promoted), ("neg", card.suppressed)):
        logits[f"{side}_str"] = None if items is None else [x.token for x in items]
        logits[f"{side}_token_ids"] = None if items is None else [x.token_id for x in items]
        logits[f"{side}_values"] = None if items is None else [_clean(x.value) for x in items]
    return {
        "frac_nonzero": _clean(card.frequency),
        "max_activation": _clean(card.max_activation),
        "activations": [
            {
                "tokens": c.tokens,
                "token_ids": c.token_ids,
                "values": [_clean(v) for v in c.values],
                "max_value": _clean(c.value),
                "max_value_token_index": c.center,
                "row": c.row,
                "sequence": c.sequence,
            }
            for c in card.contexts
        ],
        **logits,
        "top_components": [
            {"checkpoint": r.checkpoint, "feature": r.feature, "role": r.role, "weight": _clean(r.weight)}
            for r in card.related
        ],
    }


def export_features(
    cmp,
    path: str | os.PathLike,
    *,
    acts=None,
    dictionaries=None,
    models=None,
    n_contexts: int = 10,
    n_logits: int = 10,
    before: int = 8,
    after: int = 3,
) -> Path:
    """Write a per-feature JSON of a ``Comparison`` for dashboard-style viewers (schema: docs/formats.md).

    Every row of ``cmp.features`` becomes one object with its columns; where the comparison keeps its
    activations and dictionaries (``compare_checkpoints`` / ``compare_dictionaries`` do; a loaded one does
    not: pass ``acts=`` and ``dictionaries=``), each also gets its top ``n_contexts`` contexts, firing
    frequency, top components (the base features it matches, is built from or lies nearest to) and, with
    models (kept by ``compare_checkpoints``, or ``models=``), the ``n_logits`` logits it promotes and
    suppresses (``Comparison.feature_card`` gives the same data for one feature).
    """
    features = getattr(cmp, "features", None)
    if features is None:
        raise FeatdiffError(f"export_features takes a Comparison; got {type(cmp).__name__}.")
    records = feature_records(features)
    doc: dict[str, Any] = {"featdiff_feature_json": FEATURE_JSON_VERSION, "cards": False}
    extras = getattr(cmp, "extras", None) or {}
    acts = acts if acts is not None else extras.get("activations")
    dictionaries = dictionaries if dictionaries is not None else getattr(cmp, "dictionaries", None)
    if acts is not None and dictionaries is not None and len(features):
        from featdiff.report.cards import LOGIT_METHOD, feature_cards

        # absorbed recombinations have no row in the dictionary: their records keep the table's columns
        has_row = ~features["absorbed"].fillna(False).astype(bool).to_numpy() if "absorbed" in features else None
        carded = features if has_row is None else features[has_row]
        keys = list(zip(carded["checkpoint"].astype(str), carded["feature"].astype(int), strict=True))
        meta = getattr(cmp, "meta", None) or {}
        cards = feature_cards(
            dictionaries, acts, keys, features=features, reference=meta.get("reference", "base"),
            models=models if models is not None else extras.get("unembeddings"), n_contexts=n_contexts,
            n_logits=n_logits, before=before, after=after, related="list",
        )  # fmt: skip
        card_of = iter(cards)
        rows_have = [True] * len(records) if has_row is None else has_row.tolist()
        records = [{**r, **card_record(next(card_of))} if h else r for r, h in zip(records, rows_have, strict=True)]
        doc.update(
            cards=True,
            reference=meta.get("reference", "base"),
            hook=meta.get("hook"),
            n_tokens=acts.n_tokens,
            text_source=cards[0].text_source,
            logit_method=LOGIT_METHOD,
        )
    doc["features"] = records
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def load_sae(
    path: str | os.PathLike | None = None,
    device: str = "cpu",
    *,
    release: str | None = None,
    sae_id: str | None = None,
) -> SAE:
    """Read an SAE in any format featdiff knows, as a sae-lens SAE in eval mode (``fd.load_sae``).

    ``path``: a sae-lens folder (``featdiff.dictionaries.sae.load_sae``, unchanged), a dictionary_learning
    checkpoint folder, a sparsify folder, or a ``"release/sae_id"`` string that is not an existing path (a
    sae-lens pretrained SAE, as does ``release=..., sae_id=...``).
    """
    from featdiff.dictionaries import sae as sae_module

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
    return sae_module.load_sae(path, device=device)


def load_crosscoder(path: str | os.PathLike, names: Sequence[str] | None = None):
    """Read a crosscoder: a featdiff crosscoder folder (``Crosscoder.load``) or a dictionary_learning
    ``CrossCoder`` checkpoint (``ae.pt`` with ``encoder.weight`` (n_models, d_in, d_sae), ``encoder.bias``,
    ``decoder.weight`` (n_models, d_sae, d_in), ``decoder.bias`` (n_models, d_in)), whose ReLU encoding
    becomes a featdiff l1 Crosscoder with unit ``norm_scale``. ``names``: the checkpoints in the order of
    the checkpoint's models (default "model_0", "model_1", ...). featdiff writes this converter itself.
    """
    from featdiff.dictionaries.crosscoder.model import Crosscoder, CrosscoderConfig

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
