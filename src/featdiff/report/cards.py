"""Feature cards: what one feature of one checkpoint *is*. Its top-activating contexts (token text with the
activation of every token, from the tokenizer where the model has one, else the model's vocabulary, else
token ids), its firing frequency, the logits its decoder row promotes and suppresses, and the base features
it matches, is built from or lies nearest to, each with its own top contexts, side by side.

Logits use the direct path, the approximation SAE-dashboard and Neuronpedia show: the decoder row scaled
by the final layer norm's weight (where it has one) times the unembedding, ``(W_dec[f] * ln_final.w) @ W_U``;
the layers after the hook and the normalisation's per-token scale (a positive factor) are left out.

Top contexts are found in one streamed pass over the activations (a running top n per feature, as
``featdiff.dictionaries.stats`` streams its statistics), so codes are never all held in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.constants import LOGIT_METHOD
from featdiff.core.config import check_int
from featdiff.dictionaries.crosscoder.model import is_crosscoder, stack
from featdiff.dictionaries.stats import unit_decoder
from featdiff.errors import FeatdiffError

ROLES = ("match", "component", "nearest", "latent")
"""How a base feature relates to a card's feature: its match (reused / split), a component of its
recombination (weight: the coefficient), a nearest base feature by decoder cosine (novel, dead, or no
status known), or the same crosscoder latent in the reference (weight: the decoders' cosine)."""


# --------------------------------------------------------------------------- the vocabulary side
@dataclass
class Unembedding:
    """What a card needs of a model: the unembedding ``W_U`` (d_model, d_vocab), the final layer norm's
    weight (``ln_scale``; None where it has none or is folded) and the token text (``tokenizer``, else
    ``vocabulary``: one string per token id, else none: cards show ids).

    Examples
    --------
    >>> u = Unembedding(torch.eye(3), vocabulary=["a", "b", "c"])
    >>> u.token_text([2, 0]), u.logits(torch.tensor([0.0, 2.0, 1.0])).tolist()
    (['c', 'a'], [0.0, 2.0, 1.0])
    """

    W_U: Float[Tensor, "d_model d_vocab"] | None = None
    ln_scale: Float[Tensor, " d_model"] | None = None
    tokenizer: Any = field(default=None, repr=False)
    vocabulary: Sequence[str] | None = field(default=None, repr=False)

    @classmethod
    def from_model(cls, model) -> Unembedding:
        """Read a HookedTransformer (no copy of its weights): ``W_U``, ``ln_final.w``, ``tokenizer``, and
        ``featdiff_vocabulary`` where featdiff put one (the lab's checkpoints)."""
        if isinstance(model, Unembedding):
            return model
        W_U = getattr(model, "W_U", None)
        ln = getattr(model, "ln_final", None)
        w = getattr(ln, "w", None) if ln is not None else None
        return cls(
            W_U=W_U.detach() if isinstance(W_U, Tensor) else None,
            ln_scale=w.detach() if isinstance(w, Tensor) else None,
            tokenizer=getattr(model, "tokenizer", None),
            vocabulary=getattr(model, "featdiff_vocabulary", None),
        )

    @property
    def text_source(self) -> str:
        """ "tokenizer", "vocabulary" or "ids": where token text comes from."""
        return "tokenizer" if self.tokenizer is not None else "vocabulary" if self.vocabulary else "ids"

    def token_text(self, ids: Sequence[int]) -> list[str]:
        ids = [int(i) for i in ids]
        if self.tokenizer is not None:
            return [self.tokenizer.decode([i]) for i in ids]
        if self.vocabulary:
            return [str(self.vocabulary[i]) if 0 <= i < len(self.vocabulary) else str(i) for i in ids]
        return [str(i) for i in ids]

    def logits(self, direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_vocab"] | None:
        """The direct-path logit effect of a decoder row (``LOGIT_METHOD``); None without ``W_U`` or when
        the row's width is not the model's (a hook outside the residual stream)."""
        if self.W_U is None or direction.shape[-1] != self.W_U.shape[0]:
            return None
        d = direction.detach().float().cpu()
        if self.ln_scale is not None:
            d = d * self.ln_scale.detach().float().cpu()
        return d @ self.W_U.detach().float().cpu()


# --------------------------------------------------------------------------- the card
@dataclass
class Context:
    """A window of tokens around one top-activating token: ``tokens`` (text), ``token_ids`` (None where the
    activations carry none), ``values`` (the feature's activation on each), ``center`` (the index of the
    top token in the window), ``row`` (its row in the ActivationSet), ``sequence`` (its sequence id) and
    ``repeats`` (how many of the top rows read showed this same window: identical contexts are shown once)."""

    tokens: list[str]
    token_ids: list[int] | None
    values: list[float]
    center: int
    row: int
    sequence: int | None = None
    repeats: int = 1

    @property
    def value(self) -> float:
        return self.values[self.center]


@dataclass
class Logit:
    """One vocabulary entry a feature promotes (value > 0) or suppresses (value < 0)."""

    token_id: int
    token: str
    value: float


@dataclass
class FeatureCard:
    """One feature of one checkpoint: status, firing frequency, top contexts (descending activation),
    logits promoted / suppressed (``LOGIT_METHOD``; None where no model was given) and ``related`` base
    features (``RelatedFeature``, each with its own card). ``to_dict`` gives JSON-able data,
    ``_repr_html_`` renders it in a notebook."""

    checkpoint: str
    feature: int
    status: str | None
    frequency: float
    max_activation: float
    contexts: list[Context]
    promoted: list[Logit] | None = None
    suppressed: list[Logit] | None = None
    related: list[RelatedFeature] = field(default_factory=list)
    text_source: str = "ids"
    logit_method: str = LOGIT_METHOD
    n_tokens: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-able data (non-finite numbers become None)."""
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureCard:
        """The inverse of ``to_dict``."""
        d = dict(d)
        d["contexts"] = [Context(**c) for c in d.get("contexts", [])]
        for k in ("promoted", "suppressed"):
            if d.get(k) is not None:
                d[k] = [Logit(**x) for x in d[k]]
        d["related"] = [
            RelatedFeature(**{**r, "card": FeatureCard.from_dict(r["card"]) if r.get("card") else None})
            for r in d.get("related", [])
        ]
        if d.get("frequency") is None:
            d["frequency"] = float("nan")
        if d.get("max_activation") is None:
            d["max_activation"] = float("nan")
        return cls(**d)

    def _repr_html_(self) -> str:
        from featdiff.report.card_html import (
            card_html,  # the notebook display; card_html reads cards duck-typed
        )

        return card_html(self)


@dataclass
class RelatedFeature:
    """A base feature beside a card: its ``checkpoint`` and ``feature``, its ``role`` (one of ``ROLES``),
    ``weight`` (similarity, coefficient or cosine) and its ``card``."""

    checkpoint: str
    feature: int
    role: str
    weight: float
    card: FeatureCard | None = None


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --------------------------------------------------------------------------- codes
def _dictionary_for(dictionaries: Mapping, checkpoint: str):
    """(dictionary, is_crosscoder) for ``checkpoint``: its own SAE, or a crosscoder that holds it."""
    if checkpoint in dictionaries and not is_crosscoder(dictionaries[checkpoint]):
        return dictionaries[checkpoint], False
    for d in dictionaries.values():
        if is_crosscoder(d) and checkpoint in d.names:
            return d, True
    raise FeatdiffError(
        f"No dictionary for checkpoint {checkpoint!r}: the dictionaries are {list(dictionaries)}. Pass the "
        "checkpoint's SAE (dictionaries={name: sae}) or a crosscoder whose names include it."
    )


REPLICA = re.compile(r"^(?P<name>.+) replica (?P<number>[0-9]+)$")


def _source(dictionaries: Mapping, replicas: Mapping | None, checkpoint: str) -> tuple[Any, bool, str]:
    """(dictionary, is_crosscoder, the activations it reads) of ``checkpoint``: its own dictionary, or the
    ``number``-th replica of checkpoint ``name`` for ``"{name} replica {number}"`` (read on ``name``'s
    activations), as ``compare_checkpoints`` names them."""
    m = REPLICA.match(checkpoint)
    if m and checkpoint not in dictionaries:
        reps = list((replicas or {}).get(m["name"], []))
        if not 1 <= int(m["number"]) <= len(reps):
            raise FeatdiffError(
                f"No dictionary for {checkpoint!r}: {len(reps)} replica(s) of {m['name']!r} are given; pass "
                "replicas={checkpoint: [SAEs]} (compare_checkpoints keeps them)."
            )
        return reps[int(m["number"]) - 1], False, m["name"]
    d, is_cc = _dictionary_for(dictionaries, checkpoint)
    return d, is_cc, checkpoint


def _decoder(dictionary, is_cc: bool, checkpoint: str) -> Float[Tensor, "d_sae d_in"]:
    W = dictionary.decoder(checkpoint) if is_cc else dictionary.W_dec
    return W.detach().float().cpu()


@torch.no_grad()
def _code_batches(dictionary, is_cc: bool, acts: ActivationSet, checkpoint: str, rows=None, batch_size=4096):
    """Codes (float32, CPU) of the rows of ``acts`` (all, or the index ``rows``), batch by batch."""
    if is_cc:
        sub = acts if rows is None else acts.subset(torch.as_tensor(rows, dtype=torch.long))
        for b in sub.batches(batch_size, shuffle=False, names=dictionary.names):
            yield dictionary.encode(stack(b, dictionary.names)).float().cpu()
        return
    x = acts.column(checkpoint)  # on disk: a view read chunk by chunk, never the whole column
    x = x if rows is None else x[torch.as_tensor(rows, dtype=torch.long)]
    if x.shape[1] != dictionary.W_dec.shape[1]:
        raise FeatdiffError(
            f"The activations of {checkpoint!r} have width {x.shape[1]} but its SAE has d_in="
            f"{dictionary.W_dec.shape[1]}; pass the activations the SAE was trained on."
        )
    p = next(iter(dictionary.parameters()), None)
    dev, dt = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    chunks = x.chunks(batch_size) if hasattr(x, "chunks") else (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    for xb in chunks:
        yield dictionary.encode(xb.to(dev, dt)).float().cpu()


def top_activations(
    dictionary,
    acts: ActivationSet,
    checkpoint: str,
    n: int = 10,
    features: Sequence[int] | None = None,
    batch_size: int = 4096,
) -> tuple[Float[Tensor, "n k"], Int[Tensor, "n k"], Float[Tensor, " k"]]:
    """(top ``n`` activation values, their rows, firing frequency) per feature (columns: ``features``, or
    all), in one streamed pass; values descending, zeros (not fired) where a feature fires on fewer rows.

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> acts = ActivationSet.from_tensors({"base": torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])})
    >>> vals, rows, freq = top_activations(sae_from_dictionary(torch.eye(2), k=1), acts, "base", n=2)
    >>> vals.tolist(), rows[:, 0].tolist(), [round(v, 3) for v in freq.tolist()]
    ([[3.0, 2.0], [1.0, 0.0]], [1, 0], [0.667, 0.333])
    """
    is_cc = is_crosscoder(dictionary)
    cols = None if features is None else torch.as_tensor(list(features), dtype=torch.long)
    best_v = best_r = None
    fired = None
    start = 0
    for f in _code_batches(dictionary, is_cc, acts, checkpoint, batch_size=batch_size):
        if cols is not None:
            f = f[:, cols]
        rows = torch.arange(start, start + len(f)).unsqueeze(1).expand_as(f)
        start += len(f)
        fired = (f != 0).sum(0) if fired is None else fired + (f != 0).sum(0)
        v, r = (f, rows) if best_v is None else (torch.cat([best_v, f]), torch.cat([best_r, rows]))
        k = min(n, len(v))
        top = v.topk(k, dim=0, sorted=True)
        best_v, best_r = top.values, r.gather(0, top.indices)
    if best_v is None or fired is None:  # an ActivationSet is never empty; kept for type checkers
        raise FeatdiffError(f"No activations of {checkpoint!r} to encode.")
    return best_v, best_r, fired.float() / max(start, 1)


def _window(acts: ActivationSet, row: int, before: int, after: int) -> list[int]:
    """Rows around ``row`` from the same sequence (rows of a sequence are consecutive in an ActivationSet
    made by collect_activations); ``row`` alone without sequence ids."""
    if acts.sequence_ids is None:
        return [row]
    sid = acts.sequence_ids
    lo = row
    while lo > 0 and row - lo < before and sid[lo - 1] == sid[row]:
        lo -= 1
    hi = row
    while hi + 1 < len(sid) and hi - row < after and sid[hi + 1] == sid[row]:
        hi += 1
    return list(range(lo, hi + 1))


def _contexts(
    dictionary, is_cc, acts, checkpoint, tops: list[tuple[int, list[int]]], unembedding, before, after
) -> list[list[Context]]:
    """The contexts of each ``(feature, top rows)`` in ``tops``: every window row is encoded once, in
    batches, and only the codes the windows need are kept."""
    wins = [[_window(acts, int(r), before, after) for r in rows] for _, rows in tops]
    pair_rows, pair_cols = [], []
    for (f, _), ws in zip(tops, wins, strict=True):
        for w in ws:
            pair_rows += w
            pair_cols += [f] * len(w)
    values = torch.zeros(len(pair_rows))
    if pair_rows:
        unique, inverse = torch.unique(torch.tensor(pair_rows), return_inverse=True)
        cols = torch.tensor(pair_cols)
        start = 0
        for codes in _code_batches(dictionary, is_cc, acts, checkpoint, rows=unique):
            hit = (inverse >= start) & (inverse < start + len(codes))
            values[hit] = codes[inverse[hit] - start, cols[hit]]
            start += len(codes)
    u = unembedding or Unembedding()
    out, i = [], 0
    for (_, rows), ws in zip(tops, wins, strict=True):
        cs = []
        for row, w in zip(rows, ws, strict=True):
            ids = None if acts.token_ids is None else [int(t) for t in acts.token_ids[w]]
            cs.append(
                Context(
                    tokens=u.token_text(ids) if ids is not None else [f"#{r}" for r in w],
                    token_ids=ids,
                    values=values[i : i + len(w)].tolist(),
                    center=w.index(int(row)),
                    row=int(row),
                    sequence=None if acts.sequence_ids is None else int(acts.sequence_ids[row]),
                )
            )
            i += len(w)
        out.append(cs)
    return out


def _logits(unembedding: Unembedding | None, direction: Tensor, n: int) -> tuple[list | None, list | None]:
    logits = None if unembedding is None else unembedding.logits(direction)
    if logits is None:
        return None, None
    k = min(n, len(logits))
    up, down = logits.topk(k), (-logits).topk(k)
    mk = lambda ids, vals: [  # noqa: E731
        Logit(int(i), t, float(v))
        for i, t, v in zip(ids.tolist(), unembedding.token_text(ids.tolist()), vals, strict=True)
    ]
    return mk(up.indices, up.values.tolist()), mk(down.indices, (-down.values).tolist())


def _as_unembeddings(models) -> dict[str, Unembedding]:
    if models is None:
        return {}
    if isinstance(models, Mapping):
        return {str(k): Unembedding.from_model(m) for k, m in models.items() if m is not None}
    return {"*": Unembedding.from_model(models)}  # one model (or Unembedding) for every checkpoint


def _row_lookup(features):
    """(checkpoint, feature) -> that row of a features table (a pandas Series), or None."""
    if features is None or not len(features) or not {"checkpoint", "feature"} <= set(features):
        return lambda c, f: None
    index = {
        (str(c), int(f)): i
        for i, (c, f) in enumerate(zip(features["checkpoint"], features["feature"], strict=True))
    }
    return lambda c, f: features.iloc[index[(c, f)]] if (c, f) in index else None


def _related(
    row, dictionaries, checkpoint, feature, reference, n_related, units: dict, sources: Mapping
) -> list[tuple[str, int, str, float]]:
    """(checkpoint, feature, role, weight) of the base features beside ``feature`` of ``checkpoint`` (see
    ``ROLES``); ``units`` caches unit decoders by checkpoint. A recombination component past the
    reference's width is a row of one of its replicas: ``sources`` (``Comparison.meta["replica_components"]``)
    names it ``"{reference} replica {number}"`` and its feature there."""
    if (
        checkpoint == reference
        or REPLICA.match(checkpoint)
        or reference not in dictionaries
        and not any(is_crosscoder(d) and reference in d.names for d in dictionaries.values())
    ):
        return []
    tgt, tgt_cc = _dictionary_for(dictionaries, checkpoint)
    ref, ref_cc = _dictionary_for(dictionaries, reference)
    status = None if row is None else str(row["status"])
    if status == "recombined" and row.get("components") is not None and len(row["components"]):
        d_ref = _decoder(ref, ref_cc, reference).shape[0]
        out = []
        for c, coef in row["components"]:
            c = int(c)
            if c < d_ref:
                out.append((reference, c, "component", float(coef)))
            elif str(c) in sources:  # a row of a replica (featdiff.metrics.recombination: extra_reference)
                number, f = sources[str(c)]
                out.append((f"{reference} replica {int(number)}", int(f), "component", float(coef)))
            else:  # a replica row whose origin this comparison did not record (saved by an older featdiff)
                out.append((f"{reference} replicas", c, "component", float(coef)))
        return out
    if tgt_cc and ref is tgt:  # one crosscoder: the same latent, read in the reference
        a = _decoder(tgt, True, checkpoint)[feature]
        b = _decoder(ref, True, reference)[feature]
        cos = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))
        return [(reference, feature, "latent", cos)]
    if status in ("reused", "split") and int(row["match"]) >= 0:
        return [(reference, int(row["match"]), "match", float(row["similarity"]))]
    for name, d, cc in ((reference, ref, ref_cc), (checkpoint, tgt, tgt_cc)):
        if name not in units:
            units[name] = unit_decoder(_decoder(d, cc, name))
    cos = units[reference] @ units[checkpoint][feature]
    top = cos.topk(min(n_related, len(cos)))
    return [(reference, int(i), "nearest", float(v)) for i, v in zip(top.indices, top.values, strict=True)]


def _distinct(acts: ActivationSet, rows: list[int], n: int, before: int, after: int) -> list[tuple[int, int]]:
    """The first ``n`` of ``rows`` (most active first) whose windows differ, each with how many of ``rows``
    showed the same window (the same token ids around the top token at the same place); rows alone where
    the activations carry no token ids."""
    if acts.token_ids is None:
        return [(r, 1) for r in rows[:n]]
    first: dict[tuple, int] = {}
    count: dict[tuple, int] = {}
    for r in rows:
        w = _window(acts, r, before, after)
        key = (tuple(acts.token_ids[w].tolist()), w.index(r))
        first.setdefault(key, r)
        count[key] = count.get(key, 0) + 1
    return [(r, count[k]) for k, r in list(first.items())[:n]]


def feature_cards(
    dictionaries: Mapping,
    acts: ActivationSet,
    keys: Sequence[tuple[str, int]],
    *,
    features=None,
    reference: str = "base",
    models=None,
    n_contexts: int = 5,
    before: int = 8,
    after: int = 3,
    n_logits: int = 8,
    n_related: int = 3,
    related: bool | str = True,
    replicas: Mapping | None = None,
    replica_components: Mapping | None = None,
    dedupe_pool: int = 4,
) -> list[FeatureCard]:
    """The cards of several ``(checkpoint, feature)`` keys, sharing one streamed pass per checkpoint.

    ``dictionaries``: ``{checkpoint: SAE}`` (or ``{"crosscoder": cc}``), as ``Comparison.dictionaries``;
    ``acts``: the checkpoints' activations (with ``token_ids`` and ``sequence_ids`` for token windows, as
    ``collect_activations`` records them); ``features``: a ``Comparison.features`` table (status, match,
    components); ``models``: ``{checkpoint: HookedTransformer or Unembedding}`` (or one model for all) for
    the logits and token text, else no logits and token ids. Windows hold up to ``before`` tokens before
    and ``after`` after the top token, within its sequence; identical windows are shown once (the top
    ``n_contexts * dedupe_pool`` rows are read for ``n_contexts`` distinct ones). ``related=False`` leaves
    out the base features, ``related="list"`` lists them without their cards (``RelatedFeature.card`` None).
    ``replicas`` (``{checkpoint: [SAEs]}``) and ``replica_components`` (``Comparison.meta
    ["replica_components"]``) give the cards of recombination components from the reference's replicas; a
    replica's features are keys too, as ``("base replica 1", feature)``.
    """
    for name, value in (
        ("n_contexts", n_contexts),
        ("before", before),
        ("after", after),
        ("n_logits", n_logits),
    ):
        check_int("feature_cards", name, value, minimum=0)
    check_int("feature_cards", "dedupe_pool", dedupe_pool, minimum=1)
    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(
            f"feature_cards needs the checkpoints' activations as an ActivationSet; got {type(acts).__name__}."
        )
    if related not in (True, False, "list"):
        raise FeatdiffError(
            f"The 'related' parameter of feature_cards must be True, False or 'list'; got {related!r}."
        )
    unemb = _as_unembeddings(models)
    row_of = _row_lookup(features)
    sources = dict(replica_components or {})
    units: dict = {}
    keys = [(str(c), int(f)) for c, f in keys]
    wanted: dict[str, dict[int, None]] = {}
    rel: dict[tuple[str, int], list] = {}

    def has_source(c: str) -> bool:
        try:
            _source(dictionaries, replicas, c)
        except FeatdiffError:
            return False
        return True

    for c, f in keys:
        d, is_cc, column = _source(dictionaries, replicas, c)
        d_sae = _decoder(d, is_cc, c).shape[0]
        if not 0 <= f < d_sae:
            raise FeatdiffError(f"Feature {f} of {c!r} does not exist: its dictionary has {d_sae} features.")
        if column not in acts:
            raise FeatdiffError(
                f"The activations hold {acts.names}, not {column!r}; pass the activations of {column!r}."
            )
        wanted.setdefault(c, {})[f] = None
        if related:
            rel[(c, f)] = _related(row_of(c, f), dictionaries, c, f, reference, n_related, units, sources)
        if related is True:
            for g_c, g, _, _ in rel[(c, f)]:
                if has_source(g_c):
                    wanted.setdefault(g_c, {})[g] = None
    cards: dict[tuple[str, int], FeatureCard] = {}
    for c, fs in wanted.items():
        d, is_cc, column = _source(dictionaries, replicas, c)
        cols = list(fs)
        vals, rows, freq = top_activations(d, acts, column, n=max(n_contexts * dedupe_pool, 1), features=cols)
        W = _decoder(d, is_cc, column)
        u = unemb.get(column, unemb.get("*"))
        picks = [
            _distinct(acts, rows[:, j][vals[:, j] > 0].tolist(), n_contexts, before, after)
            for j in range(len(cols))
        ]
        tops = [(f, [r for r, _ in p]) for f, p in zip(cols, picks, strict=True)]
        contexts = _contexts(d, is_cc, acts, column, tops, u, before, after)
        for j, f in enumerate(cols):
            for ctx, (_, repeats) in zip(contexts[j], picks[j], strict=True):
                ctx.repeats = repeats
            promoted, suppressed = _logits(u, W[f], n_logits)
            row = row_of(c, f)
            cards[(c, f)] = FeatureCard(
                checkpoint=c,
                feature=f,
                status=None if row is None else str(row["status"]),
                frequency=float(freq[j]),
                max_activation=float(vals[0, j]),
                contexts=contexts[j],
                promoted=promoted,
                suppressed=suppressed,
                text_source="ids" if acts.token_ids is None else (u or Unembedding()).text_source,
                n_tokens=acts.n_tokens,
            )
    out = []
    for c, f in keys:
        card = cards[(c, f)]
        if related:
            card = FeatureCard(
                **{
                    **card.__dict__,
                    "related": [
                        RelatedFeature(g_c, g, role, w, cards.get((g_c, g)) if related is True else None)
                        for g_c, g, role, w in rel[(c, f)]
                    ],
                }
            )
        out.append(card)
    return out


def feature_card(
    dictionaries: Mapping,
    acts: ActivationSet,
    checkpoint: str,
    feature: int,
    **kwargs,
) -> FeatureCard:
    """The card of one feature (``feature_cards`` documents the arguments).

    Examples
    --------
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> acts = ActivationSet.from_tensors({"base": torch.eye(4), "rl": torch.eye(4)},
    ...                                   token_ids=torch.arange(4),
    ...                                   sequence_ids=torch.zeros(4, dtype=torch.long))
    >>> saes = {"base": sae_from_dictionary(torch.eye(4), k=1), "rl": sae_from_dictionary(torch.eye(4), k=1)}
    >>> card = feature_card(saes, acts, "rl", 2, before=1, after=1)
    >>> card.contexts[0].tokens, card.contexts[0].values, card.related[0].feature
    (['1', '2', '3'], [0.0, 1.0, 0.0], 2)
    """
    return feature_cards(dictionaries, acts, [(checkpoint, feature)], **kwargs)[0]
