"""Diagnostics: where a comparison's reading is weak, say so and say what to change.

``diagnose`` looks at a ``Comparison`` (or only its summary table) and returns one plain sentence per
problem it finds; ``emit_warnings`` runs it, issues each sentence as a ``FeatdiffWarning`` and stores them
in ``cmp.meta["warnings"]`` (the HTML report lists them). The checks and their defaults (the fields of
``DiagnosticsConfig``, featdiff.comparison.config):

- **dead latents** (``max_dead_fraction=0.5``): a dictionary more than half of whose latents are not
  scored: ``dead`` (never fired on the evaluation tokens) or ``faint`` (fired, the definition of live, but
  carried less than ``min_contribution`` of the decoded energy). Its fractions are over the scored ones
  only, and scored counts that differ between checkpoints move every fraction. Half is where a 4x-wide SAE
  has fewer live latents than twice the model width.
- **low noise floor** (``max_correction=3.0``): two reference SAEs that share a fraction q of their
  features make the correction divide raw fractions by q; above 3x (q < 0.33) the corrected numbers are
  mostly SAE noise.
- **few evaluation tokens** (``min_tokens_per_feature=10``): fewer than 10 evaluation tokens per live
  feature. A feature that fires on one token in 10 x n_scored is then likely to be called dead, and
  ``freq_shift`` compares frequencies counted on a handful of firings.
- **unsettled training** (``settle_window=0.2``, ``settle_tolerance=0.02``): the reconstruction loss
  recorded by ``train_saes`` (``sae.featdiff_train["losses"]``) still fell by more than 2 % across the
  last 20 % of the steps before its learning-rate decay (the rule of featdiff.dictionaries.health, the
  crosscoder's too; docs/diagnostics.md has the measurements that chose it).
- **narrow reference** (``max_missed_excess=0.1``): a target's latents that fire on the reference's own
  activations as on the target's (``featdiff.metrics.coverage``) have no match in the reference dictionary
  more often than the noise floor explains: more than ``1 - q + 0.1`` of them, and a binomial test against
  ``1 - q`` gives p < 0.05, and the reference SAE leaves at least 10 % (median) of the energy along the
  missed latents in its own activations unreconstructed. The reference SAE lacks features of its own
  activations (too narrow, or ``k`` too small), so recombinations of them read as novel (docs/diagnostics.md
  and docs/metrics.md have where it fires and where it does not).
- **a much worse SAE** (``max_fve_drop=0.1``, ``max_ce_recovered_drop=0.1``): a target's SAE explains
  less of its own held-out activations' variance, or recovers less of the language-model loss spliced in,
  than the reference's by more than the margin (featdiff.comparison.quality): a reading of "novel" for it
  then means little.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from featdiff.comparison.config import MAX_MISSED_EXCESS, DiagnosticsConfig
from featdiff.comparison.quality import quality_messages
from featdiff.dictionaries.health import loss_settling
from featdiff.errors import FeatdiffError, group_messages, warn


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _dead_message(
    name: str, n_features: int, n_dead: int, n_tokens, limit: float, n_faint=None
) -> str | None:
    """``n_dead``: latents not scored (never fired, or, where ``n_faint`` is given separately, only those);
    ``n_faint``: latents that fired but carry less than min_contribution of the decoded energy."""
    n_out = int(n_dead) + (int(n_faint) if n_faint is not None and math.isfinite(n_faint) else 0)
    if not n_features or n_out / n_features <= limit:
        return None
    on = f" on the {int(n_tokens):,} evaluation tokens" if n_tokens else ""
    n_scored = n_features - n_out
    if n_faint is not None and math.isfinite(n_faint):
        what = (
            f"{int(n_dead):,} never fired{on} (dead) and {int(n_faint):,} fired but carried less than "
            "min_contribution of the decoded energy (faint)"
        )
    else:
        what = f"never fired{on} (dead) or carried less than min_contribution of the decoded energy (faint)"
    return (
        f"{name}: {n_out / n_features:.0%} of its dictionary's {n_features:,} latents ({n_out:,}) are not "
        f"scored: {what}; its fractions are over the {n_scored:,} scored ones, and scored counts that differ "
        f"between checkpoints change every fraction. Use a smaller d_sae (about {max(1, n_scored):,}), train "
        f"longer (more n_samples), or evaluate on more tokens (more than {limit:.0%} unscored warns)."
    )


def _training_message(name: str, record: Mapping, cfg: DiagnosticsConfig) -> str | None:
    window, tolerance = cfg.settle_window, cfg.settle_tolerance
    losses = list(record.get("losses") or [])
    n_steps = int(record.get("n_steps") or len(losses))
    if n_steps < cfg.min_steps:
        return (
            f"{name}: its dictionary trained for only {n_steps} steps, too few to tell whether the loss settled; "
            "train longer (n_samples or n_steps)."
        )
    drop = loss_settling(losses, window, record.get("lr_decay_start"))
    if drop <= tolerance:
        return None
    if not math.isfinite(drop):
        return f"{name}: its training loss is not finite at the end of the run; lower lr or check the activations."
    return (
        f"{name}: its dictionary's reconstruction loss still fell by {drop:.1%} over the last {window:.0%} of "
        f"the steps before the learning-rate decay of its {n_steps}-step run (more than {tolerance:.0%}): the "
        "training had not settled. Train longer (raise n_samples or n_steps) before reading the fractions."
    )


def _unexplained_words(unexplained: float, reference: str) -> str:
    if not math.isfinite(unexplained):
        return ""
    return f", and the {reference} SAE leaves {unexplained:.0%} of their energy in its activations unreconstructed"


def _narrow_message(name: str, reference: str, misses: Mapping, q: float, cfg: DiagnosticsConfig) -> str | None:
    excess = cfg.max_missed_excess
    n, k = int(misses.get("n_present") or 0), int(misses.get("n_missed") or 0)
    if n == 0 or not math.isfinite(q):
        return None
    from scipy.stats import binom  # lazily: scipy.stats loads scipy.optimize (import featdiff stays light)

    expected = min(1.0, max(0.0, 1.0 - q))
    if k / n <= expected + excess or binom.sf(k - 1, n, expected) >= cfg.missed_p_value:
        return None
    unexplained = _num(misses.get("missed_unexplained"))
    if math.isfinite(unexplained) and unexplained < cfg.min_unexplained:
        return None  # the reference reconstructs them: it holds them in another form (drifted, split)
    return (
        f"{name}: {k} of its {n} features that also fire on {reference}'s own activations ({k / n:.0%}) have no "
        f"match in the {reference} dictionary, against {expected:.0%} between {reference} SAEs of different "
        f"seeds{_unexplained_words(unexplained, reference)}: the {reference} SAE lacks features of its own activations (narrower than the features there, "
        "or k too small), so recombinations of them read as novel and recombination is underestimated. "
        "Train the SAEs wider (a larger d_sae, e.g. twice this one) and compare again."
    )


def _narrow_messages(summary, meta: Mapping, cfg: DiagnosticsConfig) -> dict[str, str]:
    """{target: message} of the narrow-reference check, from a summary with a reuse floor and the meta's
    ``reference_misses``."""
    floor_col = "reuse_floor" if "reuse_floor" in summary else "noise_floor_reuse"
    if floor_col not in summary or not len(summary):
        return {}
    q = _num(summary[floor_col].iloc[0])
    reference = meta.get("reference", "base")
    out = {}
    for name, m in (meta.get("reference_misses") or {}).items():
        msg = _narrow_message(str(name), reference, m, q, cfg)
        if msg:
            out[str(name)] = msg
    return out


def narrow_reference(cmp, max_missed_excess: float = MAX_MISSED_EXCESS) -> dict[str, str]:
    """{target: warning} for the targets whose comparison shows the reference SAE lacking features of its
    own activations (the "narrow reference" check of ``diagnose``); empty when none does or the comparison
    has no replicas (no floor to judge against). ``compare_checkpoints(widen=...)`` trains wider SAEs when
    this is not empty."""
    return _narrow_messages(cmp.summary, cmp.meta, DiagnosticsConfig(max_missed_excess=max_missed_excess))


def diagnose(cmp_or_summary, config: DiagnosticsConfig | None = None, **thresholds) -> list[str]:
    """Plain-language warnings about where a comparison's numbers are weak, each saying what to change.

    ``cmp_or_summary`` is a ``Comparison`` (all checks) or its ``summary`` DataFrame (the checks that need
    only the table: dead latents of the targets, the noise floor, tokens per feature when the summary
    has ``n_eval_tokens``). From a Comparison it also reads ``meta`` (``n_eval_tokens``,
    ``reference_n_scored`` / ``reference_n_features``, ``reference_misses``) and the training records that ``train_saes`` puts on
    each dictionary (``featdiff_train``). The thresholds are ``config`` (default ``DiagnosticsConfig()``,
    ``CompareConfig.diagnostics`` when a scoring route calls it) with ``thresholds`` (its field names)
    changed; an empty list means no check fired.

    Examples
    --------
    >>> import pandas as pd
    >>> s = pd.DataFrame({"n_features": [256], "n_scored": [80], "n_dead": [176], "noise_floor_reuse": [0.2]},
    ...                  index=pd.Index(["rl"], name="checkpoint"))
    >>> [m.split(":")[0] for m in diagnose(s)]
    ['rl', 'noise floor']
    >>> diagnose(s, max_dead_fraction=0.9, max_correction=10)
    []
    """
    cfg = config or DiagnosticsConfig()
    if thresholds:  # unknown names raise, listing the allowed ones
        cfg = DiagnosticsConfig.from_dict({**cfg.to_dict(), **thresholds})
    max_dead_fraction, max_correction = cfg.max_dead_fraction, cfg.max_correction
    min_tokens_per_feature = cfg.min_tokens_per_feature
    if isinstance(cmp_or_summary, pd.DataFrame):
        summary, meta, dictionaries = cmp_or_summary, {}, {}
    elif hasattr(cmp_or_summary, "summary") and hasattr(cmp_or_summary, "meta"):
        summary, meta = cmp_or_summary.summary, dict(cmp_or_summary.meta or {})
        dictionaries = dict(getattr(cmp_or_summary, "dictionaries", None) or {})
    else:
        raise FeatdiffError(
            f"diagnose needs a Comparison or its summary DataFrame; got {type(cmp_or_summary).__name__}."
        )
    out: list[str] = []
    reference = meta.get("reference", "base")
    n_tokens = meta.get("n_eval_tokens")

    # dead latents: the reference's (from meta), then each target's
    ref_n, ref_live = meta.get("reference_n_features"), meta.get("reference_n_scored")
    if ref_n is not None and ref_live is not None:
        n_out, ref_faint = int(ref_n) - int(ref_live), None
        faint = _num(summary["reference_n_faint"].iloc[0]) if "reference_n_faint" in summary and len(summary) else None
        if faint is not None and math.isfinite(faint):
            ref_faint, n_out = faint, n_out - int(faint)
        msg = _dead_message(f"{reference} (reference)", int(ref_n), n_out, n_tokens, max_dead_fraction, ref_faint)
        if msg:
            out.append(msg)
    for name, row in summary.iterrows():
        n_feat, n_dead = _num(row.get("n_features")), _num(row.get("n_dead"))
        n_faint = _num(row.get("n_faint"))
        if math.isfinite(n_feat) and math.isfinite(n_dead):
            faint = n_faint if math.isfinite(n_faint) else None
            msg = _dead_message(str(name), int(n_feat), int(n_dead), n_tokens, max_dead_fraction, faint)
            if msg:
                out.append(msg)

    # the noise floor: one message, the floor is the reference's
    floor_col = "reuse_floor" if "reuse_floor" in summary else "noise_floor_reuse"
    if floor_col in summary and len(summary):
        q = _num(summary[floor_col].iloc[0])
        if math.isfinite(q) and (q <= 0 or 1.0 / q > max_correction):
            factor = "is undefined (q = 0)" if q <= 0 else f"multiplies raw fractions by {1 / q:.1f}"
            out.append(
                f"noise floor: two {reference} SAEs trained with different seeds share only {q:.1%} of their "
                f"scored features, so the correction {factor} (more than {max_correction:g}x) and the corrected "
                "fractions are mostly SAE noise. Read the raw fractions beside their floor, and make the SAEs "
                "agree across seeds: a smaller d_sae, longer training, or more tokens."
            )

    # a reference narrower than the features of its own activations (meta from compare_dictionaries)
    out.extend(_narrow_messages(summary, meta, cfg).values())

    # a target's SAE much worse than the reference's (FVE, CE loss recovered: featdiff.comparison.quality)
    out.extend(quality_messages(summary, reference, cfg))

    # evaluation tokens per scored feature
    for name, row in summary.iterrows():
        tokens = _num(row.get("n_eval_tokens", n_tokens))
        n_scored = _num(row.get("n_scored"))
        if math.isfinite(tokens) and math.isfinite(n_scored) and n_scored > 0:
            per = tokens / n_scored
            if per < min_tokens_per_feature:
                out.append(
                    f"{name}: {int(tokens):,} evaluation tokens for {int(n_scored):,} scored features "
                    f"({per:.1f} per feature, fewer than {min_tokens_per_feature:g}): firing frequencies and "
                    f"live/dead calls are unreliable. Evaluate on at least "
                    f"{math.ceil(min_tokens_per_feature * n_scored):,} tokens (more data, or a larger "
                    "eval_fraction), or use a smaller d_sae."
                )

    # training that had not settled (records written by train_saes)
    for name, d in dictionaries.items():
        record = getattr(d, "featdiff_train", None)
        if isinstance(record, Mapping):
            msg = _training_message(str(name), record, cfg)
            if msg:
                out.append(msg)
    for name, d in (getattr(cmp_or_summary, "extras", None) or {}).items():
        record = getattr(d, "featdiff_train", None)
        if isinstance(record, Mapping):
            msg = _training_message(str(name), record, cfg)
            if msg:
                out.append(msg)
    return out


def emit_warnings(cmp, config: DiagnosticsConfig | None = None, **thresholds) -> list[str]:
    """Run ``diagnose(cmp, config, **thresholds)``, issue the messages as ``FeatdiffWarning``s at the
    caller's line (those alike for several checkpoints as one, with a count: featdiff.errors.group_messages)
    and store every message in ``cmp.meta["warnings"]`` (written to meta.json and shown by the report);
    returns the list."""
    messages = diagnose(cmp, config, **thresholds)
    for m in group_messages(messages):
        warn(m)
    cmp.meta["warnings"] = messages
    return messages
