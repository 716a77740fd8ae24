"""Feature cards as HTML: one card (its contexts with every token's activation, its logits, the base features
beside it) and the report's feature-card section (``report_section``). The data: ``featdiff.report.cards``."""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING

from featdiff.constants import LOGIT_METHOD
from featdiff.errors import FeatdiffError

if TYPE_CHECKING:
    from featdiff.report.cards import FeatureCard, Logit

CARD_CSS = """
.fd-card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;margin:.4em 0;font-size:.85em;max-width:100%;
box-sizing:border-box;overflow-x:auto}
.fd-card h4{margin:.1em 0 .3em;font-size:1em}
.fd-ctx{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all;margin:.15em 0}
.fd-tok{padding:0 1px;margin-right:2px;border-radius:2px}.fd-top{outline:1px solid #c60}
.fd-side{display:flex;flex-wrap:wrap;gap:.8em}.fd-side>div{flex:1 1 22em;min-width:0}
.fd-logits{display:flex;flex-wrap:wrap;gap:1.5em}.fd-logits table{border-collapse:collapse}
.fd-logits td{padding:0 .4em}.fd-muted{color:#666}
"""


def _tok(text: str, value: float, vmax: float, top: bool) -> str:
    a = 0.0 if vmax <= 0 or not math.isfinite(value) else max(0.0, min(1.0, value / vmax))
    cls = "fd-tok fd-top" if top else "fd-tok"
    shown = html.escape(text.replace("\n", "\u21b5"))
    return (
        f'<span class="{cls}" style="background:rgba(255,140,0,{a:.2f})" title="{value:.3g}">{shown}</span>'
    )


def _logit_table(title: str, items: list[Logit] | None) -> str:
    if not items:
        return ""
    rows = "".join(f"<tr><td>{html.escape(x.token)}</td><td>{x.value:+.3f}</td></tr>" for x in items)
    return f"<div><b>{title}</b><table>{rows}</table></div>"


def anchor(checkpoint: str, feature: int) -> str:
    """The HTML id of a feature's card in the report: ``report.html#fd-card-<checkpoint>-<feature>``, the
    checkpoint's name with characters other than letters, digits, ``_ . -`` as ``_``.

    Examples
    --------
    >>> anchor("rl", 115), anchor("base replica 1", 7)
    ('fd-card-rl-115', 'fd-card-base_replica_1-7')
    """
    return f"fd-card-{re.sub(r'[^A-Za-z0-9_.-]', '_', checkpoint)}-{int(feature)}"


def _ref(checkpoint: str, feature: int, linked) -> str:
    """``checkpoint feature f``, a link to its card where the page has it (``linked``: a set of keys)."""
    text = f"{html.escape(checkpoint)} feature {int(feature)}"
    return f'<a href="#{anchor(checkpoint, feature)}">{text}</a>' if (checkpoint, int(feature)) in linked else text


def _card_body(card: FeatureCard) -> str:
    vmax = card.max_activation if math.isfinite(card.max_activation) else 0.0
    head = (
        f"<h4>{html.escape(card.checkpoint)} feature {card.feature}"
        + (f" · {html.escape(card.status)}" if card.status else "")
        + "</h4>"
        + f'<div class="fd-muted">fires on {card.frequency:.2%} of {card.n_tokens} tokens · max activation '
        f"{card.max_activation:.3g} · token text: {html.escape(card.text_source)}</div>"
    )
    ctx = (
        "".join(
            '<div class="fd-ctx">'
            + "".join(
                _tok(t, v, vmax, i == c.center)
                for i, (t, v) in enumerate(zip(c.tokens, c.values, strict=True))
            )
            + f' <span class="fd-muted">({c.value:.3g}'
            + (f", {c.repeats}x" if getattr(c, "repeats", 1) > 1 else "")
            + ")</span></div>"
            for c in card.contexts
        )
        or '<div class="fd-muted">never fires on these tokens</div>'
    )
    logits = (
        f'<div class="fd-logits">{_logit_table("promotes", card.promoted)}'
        f"{_logit_table('suppresses', card.suppressed)}</div>"
        f'<div class="fd-muted">{html.escape(card.logit_method)}</div>'
        if card.promoted is not None
        else '<div class="fd-muted">logits: no model given (pass models=)</div>'
    )
    return head + "<div><b>top contexts</b></div>" + ctx + logits


def card_html(card: FeatureCard, style: bool = True, linked=frozenset()) -> str:
    """The card as an HTML fragment: the feature beside its related base features (``_repr_html_``), each
    with its own contexts and logits where it has a card; ``linked``: the ``(checkpoint, feature)`` keys
    whose cards the page holds (the related features link to them)."""
    side = ""
    if card.related:
        side = "".join(
            f'<div class="fd-card"><div class="fd-muted">{html.escape(r.role)} · weight {r.weight:.3f} · '
            + _ref(r.checkpoint, r.feature, linked)
            + "</div>"
            + (_card_body(r.card) if r.card is not None else "")
            + "</div>"
            for r in card.related
        )
        side = f"<div><b>base features</b>{side}</div>"
    css = f"<style>{CARD_CSS}</style>" if style else ""
    return f'{css}<div class="fd-card"><div class="fd-side"><div>{_card_body(card)}</div>{side}</div></div>'


# --------------------------------------------------------------------------- the report's section
PICKS = {
    "most novel": "novel features least like any base feature (lowest similarity to their best match)",
    "most drifted": "reused features that moved most from their base feature (highest drift)",
    "most recombined": "recombined features built from the most base features, best fitted first",
}


def pick_features(features, checkpoint: str, n: int = 5) -> dict[str, list[int]]:
    """The features a report shows for ``checkpoint``: ``n`` per group of ``PICKS``, from a
    ``Comparison.features`` table (a group is empty where no feature has its status).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"checkpoint": "rl", "feature": [0, 1, 2], "status": ["novel", "reused", "reused"],
    ...                   "similarity": [0.2, 0.9, 0.8], "drift": [None, 0.1, 0.2], "frequency": 0.1})
    >>> pick_features(t, "rl", n=1)
    {'most novel': [0], 'most drifted': [2], 'most recombined': []}
    """
    t = features[features["checkpoint"] == checkpoint]
    status = t["status"].astype(str)

    def top(mask, by, ascending):
        cols = [c for c in by if c in t]
        s = t[mask].sort_values(cols + ["feature"], ascending=[*ascending[: len(cols)], True], kind="stable")
        return [int(f) for f in s["feature"].head(n)]

    return {
        "most novel": top(status == "novel", ["similarity", "frequency"], [True, False]),
        "most drifted": top(status.isin(["reused", "split"]), ["drift", "frequency"], [False, False]),
        # absorbed recombinations have no row of their own in the dictionary, so no card
        "most recombined": top(
            (status == "recombined") & ~(t["absorbed"].fillna(False).astype(bool) if "absorbed" in t else False),
            ["n_components", "fit_cosine"],
            [False, False],
        ),
    }


INDEX_MAX = 5000
"""At most this many features in the report's feature index (every live feature of every checkpoint, the
reference's included); a comparison with more leaves the index out and says so (``report_section``)."""


def _index_keys(comparison, features, targets: list[str]) -> list[tuple[str, int]]:
    """Every live feature of the reference and of each target (not dead, faint or absorbed), and the
    replica features that recombinations name, in that order."""
    reference = (getattr(comparison, "meta", None) or {}).get("reference", "base")
    keys: list[tuple[str, int]] = []
    dictionaries = getattr(comparison, "dictionaries", None) or {}
    al = next(iter((getattr(comparison, "alignments", None) or {}).values()), None)
    if reference in dictionaries and al is not None and getattr(al, "ref_live", None) is not None:
        keys += [(reference, int(f)) for f in range(len(al.ref_live)) if bool(al.ref_live[f])]
    elif reference in dictionaries:
        keys += [(reference, f) for f in range(int(dictionaries[reference].W_dec.shape[0]))]
    status = features["status"].astype(str)
    live = ~status.isin(["dead", "faint", "absorbed"])
    if reference not in dictionaries:  # one crosscoder: the reference reads the targets' live latents
        keys += [(reference, int(f)) for f in sorted(set(features.loc[live, "feature"].astype(int)))]
    for c in targets:
        mask = live & (features["checkpoint"].astype(str) == c)
        keys += [(c, int(f)) for f in features.loc[mask, "feature"]]
    for number, f in ((getattr(comparison, "meta", None) or {}).get("replica_components") or {}).values():
        keys.append((f"{reference} replica {int(number)}", int(f)))
    return list(dict.fromkeys(keys))


def _index(comparison, keys, n_contexts: int, kwargs) -> tuple[str, set]:
    """The feature index: per checkpoint a ``<details>`` holding one compact card per feature, each with its
    anchor (``anchor``); and the keys it holds."""
    options = {"n_contexts": n_contexts, "n_logits": 5, **kwargs, "related": "list"}
    cards = comparison.feature_cards(keys, **options)
    linked = set(keys)
    parts = []
    for c in dict.fromkeys(k[0] for k in keys):
        mine = [card for card in cards if card.checkpoint == c]
        items = "".join(
            f'<details class="fd-index" id="{anchor(c, card.feature)}"><summary>{html.escape(c)} feature '
            f"{card.feature}" + (f" · {html.escape(card.status)}" if card.status else "")
            + f" · fires on {card.frequency:.2%}"
            + "".join(f" · {html.escape(r.role)} {_ref(r.checkpoint, r.feature, linked)}" for r in card.related)
            + f'</summary><div class="fd-card">{_card_body(card)}</div></details>'
            for card in mine
        )
        head = f"<summary><b>{html.escape(c)}</b>: all {len(mine)} live features</summary>"
        parts.append(f"<details>{head}{items}</details>")
    return "".join(parts), linked


def report_section(comparison, n: int = 5, index: bool = True, **kwargs) -> str:
    """The HTML report's browsable section: per compared checkpoint, the ``pick_features`` groups, each
    feature's card in a ``<details>`` element, and (``index``) the feature index: every live feature of every
    checkpoint, the reference's and the replica features recombinations use included, each a compact card
    with the HTML id ``anchor(checkpoint, feature)`` (``report.html#fd-card-rl-115`` opens feature 115 of rl),
    linked from the features beside it; up to ``INDEX_MAX`` features. One self-contained fragment: inline
    CSS, no script. Where the comparison keeps no activations or dictionaries (a loaded one) the section
    says so."""
    head = "<h2>Feature cards</h2>"
    features = getattr(comparison, "features", None)
    if (
        not hasattr(comparison, "feature_cards")
        or features is None
        or not {"checkpoint", "status"} <= set(features)
    ):
        return head + '<p class="note">No feature cards: this is not a Comparison with a features table.</p>'
    targets = [str(c) for c in dict.fromkeys(features["checkpoint"])] if len(features) else []
    reference = (getattr(comparison, "meta", None) or {}).get("reference", "base")
    picks = {c: pick_features(features, c, n) for c in targets}
    keys = [(c, f) for c, groups in picks.items() for fs in groups.values() for f in fs]
    index_keys = _index_keys(comparison, features, targets) if index else []
    try:
        cards = dict(zip(keys, comparison.feature_cards(keys, **kwargs), strict=True)) if keys else {}
        index_html, linked = "", set()
        if index_keys and len(index_keys) <= INDEX_MAX:
            index_html, linked = _index(comparison, index_keys, min(n, 3) or 3, kwargs)
    except FeatdiffError as e:
        return head + f'<p class="note">No feature cards: {html.escape(str(e))}</p>'
    parts = [
        head,
        f"<style>{CARD_CSS}</style>",
        "<p>What a feature is: its top-activating contexts (each token shaded by the feature's activation, "
        "the top token outlined; a context seen several times is shown once, with its count), how often it "
        f"fires, the logits its decoder row promotes and suppresses ({html.escape(LOGIT_METHOD)}) and, beside "
        "it, the base features it matches, is built from or lies nearest to, with their own contexts and "
        "logits. Click a feature to open its card.</p>",
    ]
    for c, groups in picks.items():
        parts.append(f"<h3>{html.escape(c)}</h3>")
        for group, fs in groups.items():
            parts.append(
                f'<p><b>{html.escape(group)}</b> <span class="note">{html.escape(PICKS[group])}</span></p>'
            )
            if not fs:
                parts.append('<p class="note">(none)</p>')
            for f in fs:
                card = cards[(c, f)]
                summary = (
                    f"{html.escape(c)} feature {f} · {html.escape(card.status or '')} · fires on "
                    f"{card.frequency:.2%} · related: "
                    + (
                        ", ".join(f"{html.escape(r.role)} {_short(r.checkpoint, reference)}{r.feature}" for r in card.related)
                        or "none"
                    )
                )
                parts.append(
                    f'<details class="fd-details"><summary>{summary}</summary>'
                    f"{card_html(card, style=False, linked=linked)}</details>"
                )
    if index_keys:
        parts.append("<h3>Feature index</h3>")
        if index_html:
            parts.append(
                '<p class="note">Every live feature, by checkpoint: open one here, or go to '
                "<code>report.html#fd-card-CHECKPOINT-FEATURE</code> (e.g. "
                f"<code>#{anchor(index_keys[-1][0], index_keys[-1][1])}</code>). Related features link to "
                "their own cards.</p>" + index_html
            )
        else:
            parts.append(
                f'<p class="note">{len(index_keys)} live features: more than the index holds ({INDEX_MAX}). '
                "Any feature's card: <code>cmp.feature_card(checkpoint, feature)</code>; all of them: "
                "<code>featdiff.export_features(cmp, path)</code>.</p>"
            )
    return "\n".join(parts)


def _short(checkpoint: str, reference: str) -> str:
    """A related feature's checkpoint in a summary line: nothing for the reference, else its name."""
    return "" if checkpoint == reference else f"{html.escape(checkpoint)} "
