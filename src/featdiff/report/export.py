"""The per-feature JSON of a comparison for dashboard-style viewers (``export_features``; schema in
docs/formats.md): every row of ``Comparison.features``, with its feature card's Neuronpedia-like fields, and
one record per feature of the reference (and per replica feature a recombination uses), so both sides of
every match carry their contexts and logits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from featdiff.constants import LOGIT_METHOD
from featdiff.errors import FeatdiffError
from featdiff.report.cards import REPLICA, _clean, _dictionary_for, feature_cards

# 2: top contexts, logits and top components per feature; 3: records of the reference's own features (and of
# the replica features recombinations use), `kind`, `matched_by`, `repeats` (docs/formats.md)
FEATURE_JSON_VERSION = 3


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
                "repeats": getattr(c, "repeats", 1),
            }
            for c in card.contexts
        ],
        **logits,
        "top_components": [
            {"checkpoint": r.checkpoint, "feature": r.feature, "role": r.role, "weight": _clean(r.weight)}
            for r in card.related
        ],
    }


def _width(dictionaries, reference: str) -> int:
    """The number of features of ``reference``'s dictionary (its SAE, or a crosscoder that holds it)."""
    d, is_cc = _dictionary_for(dictionaries, reference)
    return int((d.decoder(reference) if is_cc else d.W_dec).shape[0])


def _resolvable(keys, options) -> list:
    """``keys`` less the replica features whose dictionary is not at hand (a loaded Comparison keeps none)."""
    reps = options.get("replicas") or {}
    out = []
    for c, f in keys:
        m = REPLICA.match(c)
        if m is None or 1 <= int(m["number"]) <= len(reps.get(m["name"], [])):
            out.append((c, f))
    return out


def export_features(
    cmp,
    path: str | os.PathLike,
    *,
    acts=None,
    dictionaries=None,
    models=None,
    replicas=None,
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
    suppresses (``Comparison.feature_card`` gives the same data for one feature). Every feature of the
    reference, and every feature of a reference replica (``replicas=``, kept by ``compare_checkpoints``) that
    a recombination uses, gets a record of its own (``kind``: ``target``, ``reference`` or ``replica``),
    with the same card fields and ``matched_by``: the target features that name it.
    """
    features = getattr(cmp, "features", None)
    if features is None:
        raise FeatdiffError(f"export_features takes a Comparison; got {type(cmp).__name__}.")
    records = [{"kind": "target", **r} for r in feature_records(features)]
    doc: dict[str, Any] = {"featdiff_feature_json": FEATURE_JSON_VERSION, "cards": False}
    extras = getattr(cmp, "extras", None) or {}
    acts = acts if acts is not None else extras.get("activations")
    dictionaries = dictionaries if dictionaries is not None else getattr(cmp, "dictionaries", None)
    if acts is not None and dictionaries is not None and len(features):
        # absorbed recombinations have no row in the dictionary: their records keep the table's columns
        has_row = ~features["absorbed"].fillna(False).astype(bool).to_numpy() if "absorbed" in features else None
        carded = features if has_row is None else features[has_row]
        keys = list(zip(carded["checkpoint"].astype(str), carded["feature"].astype(int), strict=True))
        meta = getattr(cmp, "meta", None) or {}
        reference = meta.get("reference", "base")
        options = dict(
            features=features, reference=reference, n_contexts=n_contexts, n_logits=n_logits, before=before,
            after=after, models=models if models is not None else extras.get("unembeddings"),
            replicas=replicas if replicas is not None else extras.get("replica_saes"),
            replica_components=meta.get("replica_components"),
        )  # fmt: skip
        cards = feature_cards(dictionaries, acts, keys, related="list", **options)
        card_of = iter(cards)
        rows_have = [True] * len(records) if has_row is None else has_row.tolist()
        records = [{**r, **card_record(next(card_of))} if h else r for r, h in zip(records, rows_have, strict=True)]
        # the other side of every match: each reference feature (and each replica feature a recombination
        # uses) gets a record of its own, with the target features that name it
        matched_by: dict[tuple[str, int], list] = {}
        for card in cards:
            for r in card.related:
                by = {"checkpoint": card.checkpoint, "feature": card.feature, "role": r.role, "weight": _clean(r.weight)}
                matched_by.setdefault((r.checkpoint, r.feature), []).append(by)
        ref_keys = [(reference, f) for f in range(_width(dictionaries, reference))]
        ref_keys += [k for k in matched_by if k[0] != reference and k not in set(keys)]
        ref_cards = feature_cards(dictionaries, acts, _resolvable(ref_keys, options), related=False, **options)
        for card in ref_cards:
            kind = "reference" if card.checkpoint == reference else "replica"
            rec = {"kind": kind, "checkpoint": card.checkpoint, "feature": card.feature, "status": None}
            rec.update(card_record(card), matched_by=matched_by.get((card.checkpoint, card.feature), []))
            records.append(rec)
        doc.update(
            cards=True,
            reference=reference,
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

