"""The comparison table: ``Comparison`` (summary, features, meta; written to and read from a folder), its
columns and statuses, and ``CompareConfig``, the thresholds every scoring route shares."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featdiff import constants
from featdiff._version import __version__
from featdiff.core.config import Config, check_int, check_number
from featdiff.core.io import atomic_dir, write_json
from featdiff.errors import FeatdiffError, check_choice
from featdiff.metrics.uncertainty import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    FLAG_COLUMNS,
    FRACTION_COLUMNS,
    INTERVAL_LEVEL,
    MEAN_COLUMNS,
    N_BOOTSTRAP,
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
    "n_live",
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
    "reference_n_live",
    "reference_n_dead",
    "reference_n_faint",
    "n_replicas",
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
# a live latent that fires (nearly) only where a reused latent fires, and with it rebuilds that latent's
# reference feature, is a child of it (status split; featdiff.comparison.statuses.add_children)
CHILD_COFIRING = 0.9
# ... and there at least this many times as often as it fires overall (a dense latent is no one's parent)
CHILD_LIFT = 2.0
STATUSES = ["reused", "split", "recombined", "novel", "dead", "faint", "absorbed"]



@dataclass
class CompareConfig(Config):
    """The thresholds and choices of a comparison, whichever method computes it (docs/design.md's defaults).

    SAE route: ``reuse_threshold`` (cosine of a reused match), ``fit_threshold``, ``max_components`` and
    ``min_components`` (recombination by a subset fit), ``recombination_margin`` (how much better
    than its best single reference row a recombination must fit), ``absorbed`` / ``absorbed_threshold``
    (off by default: also list the reference features the target carries by firing kept features together,
    found from paired activations, as rows of status "absorbed" that no fraction counts, with their number
    in the summary's ``n_absorbed``: featdiff.metrics.recombination.absorbed_recombination), ``method`` /
    ``on`` (how dictionaries are aligned), ``eps``
    (firing-frequency smoothing of freq_shift), ``min_contribution`` (which live features are scored: a feature
    is live when it fired at least once on the evaluation activations, and a live feature is scored when it
    carries at least this fraction of the mean share of the decoded energy of the live features; the others
    get status ``faint``, counted in ``n_faint`` and not scored, as ``dead`` ones, which never fired; 0
    scores every live feature; featdiff.dictionaries.stats.scored_features),
    ``child_cofiring`` / ``child_lift`` (a live latent that fires on at least ``child_cofiring`` of its tokens
    together with a reused latent, at least ``child_lift`` times that latent's overall rate, and with it
    rebuilds that latent's reference feature is a child of it, status ``split``:
    featdiff.comparison.statuses.add_children; ``child_cofiring=0`` switches it off),
    ``correct`` (apply the noise-floor correction; False prints the raw fractions as the corrected ones,
    flagged ``uncorrected``).
    Crosscoder route: ``nrn_shared`` (NRN bounds of a shared feature), ``mas_threshold`` (MAS above which
    a feature is one checkpoint's), ``pair_share`` (with three or more checkpoints, the share of a feature's
    norms the reference and the target must hold for it to count as theirs) and ``p`` (decoder norm).
    Uncertainty: ``estimator`` (how raw fractions are corrected with the replicas' null profile; default
    ``union``: reuse = ``reuse_union`` / ``reuse_union_floor``, recombination = (recombination_raw - reuse
    x recombination_floor) / reuse_floor, every share a summary column; featdiff.metrics.uncertainty and
    docs/metrics.md give each estimator), ``interval_level`` and ``n_bootstrap`` (the ``<col>_lo`` /
    ``<col>_hi`` intervals). docs/design.md lists every threshold with its default, its home and why.

    Examples
    --------
    >>> CompareConfig(reuse_threshold=0.8).to_dict()["reuse_threshold"]
    0.8
    >>> try:
    ...     CompareConfig.from_dict({"reuse_treshold": 0.8})
    ... except ValueError as e:
    ...     print(str(e).split(";")[0])
    Unknown CompareConfig keys ['reuse_treshold']
    """

    reuse_threshold: float = 0.7
    fit_threshold: float = 0.9
    max_components: int = 3
    min_components: int = 2
    recombination_margin: float = 0.15
    child_cofiring: float = CHILD_COFIRING
    child_lift: float = CHILD_LIFT
    absorbed: bool = False
    absorbed_threshold: float = 0.15
    method: str = "hungarian"
    on: str = "decoder"
    eps: float = 1e-6
    min_contribution: float = 0.01
    correct: bool = True
    nrn_shared: tuple[float, float] = (0.3, 0.7)
    mas_threshold: float = 0.5
    pair_share: float = 0.5
    p: int = 2
    estimator: str = DEFAULT_ESTIMATOR
    interval_level: float = INTERVAL_LEVEL
    n_bootstrap: int = N_BOOTSTRAP

    def __post_init__(self) -> None:
        where = "CompareConfig"
        check_choice("method", self.method, ("hungarian", "max"), where)
        check_choice("on", self.on, ("decoder", "activations"), where)
        check_choice("p", self.p, (1, 2), where)
        check_choice("estimator", self.estimator, ESTIMATORS, where)
        check_number(where, "interval_level", self.interval_level, 0, 1, strict_low=True, strict_high=True)
        check_int(where, "n_bootstrap", self.n_bootstrap, minimum=10)
        for name in ("reuse_threshold", "fit_threshold"):
            check_number(where, name, getattr(self, name), -1, 1)
        check_number(where, "eps", self.eps, 0)
        check_number(where, "child_cofiring", self.child_cofiring, 0, 1)
        check_number(where, "child_lift", self.child_lift, 1)
        check_number(where, "recombination_margin", self.recombination_margin, 0, 1)
        check_number(where, "absorbed_threshold", self.absorbed_threshold, 0, 1, strict_low=True)
        for name in ("mas_threshold", "pair_share"):
            check_number(where, name, getattr(self, name), 0, 1)
        for name in ("max_components", "min_components"):
            check_int(where, name, getattr(self, name))
        if self.min_components > self.max_components:
            raise FeatdiffError(
                f"CompareConfig needs 1 <= min_components <= max_components; got {self.min_components}, "
                f"{self.max_components}."
            )
        self.nrn_shared = tuple(self.nrn_shared)  # type: ignore[assignment]
        lo, hi = self.nrn_shared if len(self.nrn_shared) == 2 else (2.0, 0.0)
        if not 0 <= lo <= hi <= 1:
            raise FeatdiffError(
                f"The 'nrn_shared' parameter of {where} must be (low, high) with 0 <= low <= high <= 1; "
                f"got {self.nrn_shared}."
            )


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
    >>> p = plant_checkpoints(d_in=16, n_atoms=32, targets={"rl": {"reused": .75, "recombined": .0, "novel": .25}})
    >>> saes = {n: sae_from_dictionary(D, k=4) for n, D in p.dictionaries.items()}
    >>> cmp = compare_dictionaries(saes, p.sample(1000), progress=False)
    >>> cmp.summary.loc["rl", ["reuse", "novelty"]].tolist()
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
        cols = [
            c for c in ("reuse", "recombination", "novelty", "drift", "transfer_fve") if c in self.summary
        ]
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
        >>> saes = {"base": sae_from_dictionary(torch.eye(6), k=1), "rl": sae_from_dictionary(torch.eye(6), k=1)}
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
