"""The comparison table: ``Comparison`` (summary, features, meta; written to and read from a folder), its
columns and statuses (the thresholds every scoring route shares are featdiff.comparison.config's)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featdiff import constants
from featdiff._version import __version__
from featdiff.core.io import atomic_dir, write_json
from featdiff.errors import FeatdiffError
from featdiff.metrics.quality import QUALITY_COLUMNS, SAMPLED_QUALITY
from featdiff.metrics.uncertainty import (
    FLAG_COLUMNS,
    FRACTION_COLUMNS,
    MEAN_COLUMNS,
    SHARE_COLUMNS,
)
from featdiff.report.cards import FeatureCard, feature_cards
from featdiff.report.figures import headless_pyplot, plot_comparison

SUMMARY_COLUMNS = [
    "reuse",
    "recombination",
    "novelty",
    "reuse_raw",
    "recombination_raw",
    "novelty_raw",
    "split",
    "drift",
    "freq_shift",
    "base_coverage",
    "transfer_fve",
    "reference_fve",
    "target_fve",
    "noise_floor_reuse",
    "n_features",
    "n_scored",
    "n_dead",
    "n_faint",
    "n_absorbed",
]
# the uncertainty of every summary number (featdiff.metrics.uncertainty): an interval and a base-vs-base floor
UNCERTAINTY_COLUMNS = [
    *FLAG_COLUMNS,
    *SHARE_COLUMNS,
    *[f"{c}_{s}" for c in (*FRACTION_COLUMNS, *MEAN_COLUMNS) for s in ("lo", "hi", "floor")],
    *[f"{c}_raw_{s}" for c in ("reuse", "recombination", "novelty") for s in ("lo", "hi")],
    "reference_n_scored",
    "reference_n_dead",
    "reference_n_faint",
    "n_replicas",
]
# each SAE's own quality on the evaluation tokens (featdiff.comparison.quality), the reference's and the
# target's on every row; ce_recovered / kl_div only where the models were run (compare_checkpoints)
QUALITY_SUMMARY_COLUMNS = [
    f"{side}_{c}"
    for side in ("reference", "target")
    for q in QUALITY_COLUMNS
    for c in (q, *((f"{q}_lo", f"{q}_hi") if q in SAMPLED_QUALITY else ()))
]
FEATURE_COLUMNS = [
    "checkpoint",
    "feature",
    "status",
    "match",
    "similarity",
    "drift",
    "freq_shift",
    "components",
    "n_components",
    "fit_cosine",
    "frequency",
    "absorbed",
    "parent",
]
# "split" (a near-duplicate of an already-matched reference feature) counts toward reuse; "faint" (fired on
# the evaluation activations but carries less than min_contribution of the decoded energy) and "dead" (never
# fired) are counted, not scored; "absorbed" (a reference feature the target carries with no row of its own,
# CompareConfig.absorbed) is in no fraction
STATUSES = ["reused", "split", "recombined", "novel", "dead", "faint", "absorbed"]


@dataclass
class Comparison:
    """The result of a comparison: ``summary`` (one row per compared checkpoint), ``features`` (one row per
    (checkpoint, feature)), ``meta`` (hook, tokens, seeds, versions). ``to_dir`` / ``load`` round-trip the
    tables exactly; alignments, dictionaries and ``extras`` (the evaluation activations and the models'
    unembeddings that feature cards read) stay in memory only.

    Examples
    --------
    >>> import tempfile
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> from featdiff.synthetic import plant_checkpoints
    >>> from featdiff.comparison.scoring import compare_dictionaries
    >>> p = plant_checkpoints(d_in=16, n_atoms=32,
    ...                       targets={"rl": {"reused": .75, "recombined": .0, "novel": .25}})
    >>> saes = {n: sae_from_dictionary(D, k=4) for n, D in p.dictionaries.items()}
    >>> cmp = compare_dictionaries(saes, p.sample(1000), progress=False)
    >>> cmp.summary.loc["rl", ["reuse_raw", "novelty_raw"]].tolist()
    [0.75, 0.25]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     Comparison.load(cmp.to_dir(d + "/cmp", figures=False)).summary.equals(cmp.summary)
    True
    """

    summary: pd.DataFrame
    features: pd.DataFrame
    meta: dict = field(default_factory=dict)
    alignments: dict | None = field(default=None, repr=False)
    dictionaries: dict | None = field(default=None, repr=False)
    extras: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        fractions = ("reuse", "recombination", "novelty")
        if "reuse" not in self.summary or self.summary["reuse"].isna().all():  # no floor: the raw reading
            fractions = tuple(f"{c}_raw" for c in fractions)
        cols = [c for c in (*fractions, "drift", "transfer_fve") if c in self.summary]
        return (
            f"Comparison(reference={self.meta.get('reference')!r})\n{self.summary[cols].round(3).to_string()}"
        )

    def _repr_html_(self) -> str:
        return self.summary.round(4)._repr_html_()

    def feature_card(
        self, checkpoint: str, feature: int, *, acts=None, dictionaries=None, models=None, **kwargs
    ) -> FeatureCard:
        """The card of one feature (``featdiff.report.cards``): top contexts, frequency, logits, status and the base
        features it matches or is built from, with theirs. ``acts``, ``dictionaries`` and ``models`` default
        to what the comparison kept in memory (``compare_checkpoints`` keeps all three; a loaded Comparison
        none); ``kwargs`` go to ``feature_cards`` (``n_contexts``, ``before``, ``after``, ``n_logits``).

        Examples
        --------
        >>> import torch
        >>> from featdiff.dictionaries.sae import sae_from_dictionary
        >>> from featdiff.comparison.scoring import compare_dictionaries
        >>> from featdiff.activations import ActivationSet
        >>> x = torch.eye(6).repeat(10, 1)
        >>> acts = ActivationSet.from_tensors({"base": x, "rl": x}, token_ids=torch.arange(60) % 6)
        >>> saes = {n: sae_from_dictionary(torch.eye(6), k=1) for n in ("base", "rl")}
        >>> card = compare_dictionaries(saes, acts, progress=False).feature_card("rl", 4)
        >>> card.status, round(card.frequency, 3), card.contexts[0].tokens, card.related[0].feature
        ('reused', 0.167, ['4'], 4)
        """
        keys = [(checkpoint, feature)]
        return self.feature_cards(keys, acts=acts, dictionaries=dictionaries, models=models, **kwargs)[0]

    def feature_cards(self, keys, *, acts=None, dictionaries=None, models=None, **kwargs) -> list[FeatureCard]:
        """The cards of several ``(checkpoint, feature)`` keys (see ``feature_card``), one pass per checkpoint."""
        acts = acts if acts is not None else self.extras.get("activations")
        dictionaries = dictionaries if dictionaries is not None else self.dictionaries
        if dictionaries is None or acts is None:
            missing = [n for n, v in (("dictionaries=", dictionaries), ("acts=", acts)) if v is None]
            raise FeatdiffError(
                f"This Comparison keeps no {' and no '.join(m[:-1] for m in missing)} (a loaded one keeps "
                f"neither): pass {' and '.join(missing)} (the SAEs {{checkpoint: sae}} and the ActivationSet "
                "it was scored on) to feature_card."
            )
        models = models if models is not None else self.extras.get("unembeddings")
        kwargs.setdefault("replicas", self.extras.get("replica_saes"))  # components from the base's replicas
        kwargs.setdefault("replica_components", self.meta.get("replica_components"))
        return feature_cards(
            dictionaries, acts, keys, features=self.features, reference=self.meta.get("reference", "base"),
            models=models, **kwargs,
        )

    def plot(self, path: str | os.PathLike | None = None):
        """A figure of the status fractions per checkpoint and the drift distribution; saved if ``path``."""
        fig = plot_comparison(self)
        if path is not None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
            tmp.replace(path)
        return fig

    def to_dir(self, path: str | os.PathLike, figures: bool = True, overwrite: bool | None = None) -> Path:
        """Write summary.csv, features.parquet, meta.json and figures/ into ``path`` (atomically).

        An existing ``path`` is replaced only when it is empty or featdiff's own output; a folder holding
        anything else raises (nothing a user wrote is deleted) unless ``overwrite=True``."""

        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.summary.to_csv(tmp / constants.SUMMARY)
            feats = self.features.copy()
            if "components" in feats:
                feats["components"] = feats["components"].map(json.dumps)
            feats.to_parquet(tmp / constants.FEATURES, index=False)
            write_json(
                tmp / constants.META,
                {**self.meta, "featdiff_version": __version__, "format_version": constants.FORMAT_VERSION},
            )
            if figures:
                (tmp / constants.FIGURES).mkdir()
                fig = self.plot(tmp / constants.FIGURES / "comparison.png")
                headless_pyplot().close(fig)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Comparison:
        """Read a folder written by ``to_dir``."""
        path = Path(path)
        for name in (constants.SUMMARY, constants.FEATURES, constants.META):
            if not (path / name).is_file():
                raise FeatdiffError(
                    f"{path} is not a Comparison folder: {name} is missing. Write one with to_dir."
                )
        try:
            meta = json.loads((path / constants.META).read_text())
            if meta.get("format_version", constants.FORMAT_VERSION) > constants.FORMAT_VERSION:
                raise FeatdiffError(
                    f"{path} was written by a newer featdiff (format {meta['format_version']}); upgrade featdiff."
                )
            summary = pd.read_csv(path / constants.SUMMARY, index_col=0, float_precision="round_trip")
            if "indistinguishable_from_reference" in summary:  # True / False / empty (no replicas)
                summary["indistinguishable_from_reference"] = summary[
                    "indistinguishable_from_reference"
                ].astype("boolean")
            features = pd.read_parquet(path / constants.FEATURES)
            if "components" in features:
                features["components"] = features["components"].map(
                    lambda s: [tuple(c) for c in json.loads(s)]
                )
        except FeatdiffError:
            raise
        except Exception as e:
            raise FeatdiffError(
                f"Cannot read the Comparison folder {path}: {type(e).__name__}: {e}. Write it again with to_dir."
            ) from None
        return cls(summary, features, meta)
