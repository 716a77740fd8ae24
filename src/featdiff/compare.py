"""compare_dictionaries and compare_checkpoints: aligned dictionaries -> tidy tables (a Comparison)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featdiff import constants
from featdiff._io import atomic_dir, write_json
from featdiff._replicas import (
    _as_replicas,
    _d_sae,
    _reference_replica_profiles,
    _uncertainty_columns,
)
from featdiff.activations import ActivationSet
from featdiff.align import Alignment, align
from featdiff.errors import FeatdiffError, check_choice
from featdiff.metrics.recombination import recombination
from featdiff.metrics.registry import MetricContext, compute_metric, get_metric
from featdiff.metrics.reuse import base_coverage, drift
from featdiff.metrics.uncertainty import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    FRACTION_COLUMNS,
    INTERVAL_LEVEL,
    MEAN_COLUMNS,
    N_BOOTSTRAP,
    fve_chunks,
    split_provisional,
)

SUMMARY_COLUMNS = [
    "reuse",
    "recombination",
    "novelty",
    "reuse_raw",
    "recombination_raw",
    "novelty_raw",
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
]
# the uncertainty of every summary number (featdiff.metrics.uncertainty): an interval and a base-vs-base floor
UNCERTAINTY_COLUMNS = [
    "split",
    "saturated",
    "indistinguishable_from_reference",
    *[f"{c}_{s}" for c in (*FRACTION_COLUMNS, *MEAN_COLUMNS) for s in ("lo", "hi", "floor")],
    "reference_n_live",
    "reference_n_dead",
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
]
STATUSES = ["reused", "recombined", "novel", "dead", "split"]
# reference replica SAEs compare_checkpoints trains by default (docs/metrics.md: cost vs interval width)
DEFAULT_N_REPLICAS = 2


@dataclass
class CompareConfig:
    """Thresholds and choices of compare_dictionaries (DESIGN.md's defaults).

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
    method: str = "hungarian"
    on: str = "decoder"
    eps: float = 1e-6
    correct: bool = True
    estimator: str = DEFAULT_ESTIMATOR
    interval_level: float = INTERVAL_LEVEL
    n_bootstrap: int = N_BOOTSTRAP

    def __post_init__(self) -> None:
        check_choice("method", self.method, ("hungarian", "max"), "CompareConfig")
        check_choice("on", self.on, ("decoder", "activations"), "CompareConfig")
        check_choice("estimator", self.estimator, ESTIMATORS, "CompareConfig")
        if not 0 < self.interval_level < 1:
            raise FeatdiffError(f"CompareConfig.interval_level must be in (0, 1); got {self.interval_level}.")
        if (
            isinstance(self.n_bootstrap, bool)
            or not isinstance(self.n_bootstrap, int)
            or self.n_bootstrap < 10
        ):
            raise FeatdiffError(
                f"CompareConfig.n_bootstrap must be an integer >= 10; got {self.n_bootstrap!r}."
            )
        for name in ("reuse_threshold", "fit_threshold", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FeatdiffError(f"CompareConfig.{name} must be a number; got {v!r}.")
        for name in ("max_components", "min_components"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise FeatdiffError(f"CompareConfig.{name} must be an integer; got {v!r}.")
        for name in ("reuse_threshold", "fit_threshold"):
            v = getattr(self, name)
            if not -1 <= v <= 1:
                raise FeatdiffError(f"CompareConfig.{name} is a cosine threshold in [-1, 1]; got {v}.")
        if not 1 <= self.min_components <= self.max_components:
            raise FeatdiffError(
                f"CompareConfig needs 1 <= min_components <= max_components; got {self.min_components}, "
                f"{self.max_components}."
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CompareConfig:
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise FeatdiffError(
                f"Unknown CompareConfig keys {sorted(unknown)}; allowed are {sorted(allowed)}."
            )
        return cls(**d)


def correct_fractions(
    reuse_raw: float, recombination_raw: float, noise_floor: float
) -> tuple[float, float, float]:
    """Correct raw fractions for imperfect dictionary learning, using the noise floor.

    Two reference SAEs trained on the same data with different seeds match only a fraction q (the noise
    floor) of their features, although every feature is shared: a feature present in both checkpoints is
    detected as such with probability about q, and a missed one looks novel. So the detected fractions are
    divided by q: reuse = min(1, reuse_raw / q), recombination = min(recombination_raw / q, 1 - reuse),
    novelty = 1 - reuse - recombination. Without a noise floor (NaN) the raw fractions are returned.

    Examples
    --------
    >>> [round(x, 4) for x in correct_fractions(0.3, 0.1, 0.6)]
    [0.5, 0.1667, 0.3333]
    """
    if noise_floor is None or not np.isfinite(noise_floor) or noise_floor <= 0:
        return reuse_raw, recombination_raw, max(0.0, 1.0 - reuse_raw - recombination_raw)
    q = min(1.0, noise_floor)
    r = min(1.0, reuse_raw / q)
    c = min(recombination_raw / q, 1.0 - r)
    return r, c, max(0.0, 1.0 - r - c)


def _stats_update(stats: dict, x: torch.Tensor, codes: torch.Tensor, recon: torch.Tensor) -> None:
    """Accumulate firing counts and the sums behind the fraction of variance explained."""
    x, recon = x.double(), recon.double()
    stats["n"] += len(x)
    stats["fired"] += (codes > 0).sum(0).double()
    stats["err"] += float(((x - recon) ** 2).sum())
    stats["sum"] += x.sum(0)
    stats["sumsq"] += float((x * x).sum())


def _stats_compute(stats: dict) -> tuple[torch.Tensor, float]:
    """(firing frequency per feature, fraction of variance explained)."""
    n = stats["n"]
    total = stats["sumsq"] - float((stats["sum"] ** 2).sum()) / n
    return (stats["fired"] / n).float(), (1.0 - stats["err"] / total if total > 0 else float("nan"))


@torch.no_grad()
def code_stats(dictionary, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, float]:
    """Firing frequency of every feature of ``dictionary`` on ``x`` and the fraction of the variance of
    ``x`` its reconstructions explain, in one streamed pass (codes are never all held in memory)."""
    p = next(iter(dictionary.parameters()))
    d_sae = dictionary.W_dec.shape[0]
    stats = {"n": 0, "fired": torch.zeros(d_sae, dtype=torch.float64), "err": 0.0, "sum": 0.0, "sumsq": 0.0}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        codes = dictionary.encode(xb.to(p.device, p.dtype))
        recon = dictionary.decode(codes).float().cpu()
        _stats_update(stats, xb, codes.float().cpu(), recon)
    return _stats_compute(stats)


def _feature_table(al: Alignment, cfg: CompareConfig, ref_freq, tgt_freq) -> pd.DataFrame:
    d = drift(al, ref_freq, tgt_freq, cfg.reuse_threshold, cfg.eps)
    rc = recombination(al, cfg.fit_threshold, cfg.max_components, cfg.min_components, cfg.reuse_threshold)
    t = al.table()
    status = np.where(
        ~t["live"],
        "dead",
        np.where(d["drift"].notna(), "reused", np.where(rc["recombined"], "recombined", "novel")),
    )
    return pd.DataFrame(
        {
            "checkpoint": al.target,
            "feature": t["feature"],
            "status": pd.Categorical(status, categories=STATUSES),
            "match": t["match"],
            "similarity": t["similarity"],
            "drift": d["drift"],
            "freq_shift": d["freq_shift"],
            "components": rc["components"],
            "n_components": rc["n_components"],
            "fit_cosine": rc["fit_cosine"],
            "frequency": np.nan if tgt_freq is None else tgt_freq.double().numpy(),
        }
    )


def compare_dictionaries(
    saes: dict,
    acts: ActivationSet | None = None,
    reference: str = "base",
    noise_floor=None,
    metrics: list | None = None,
    config: CompareConfig | None = None,
    progress: bool = True,
    meta: dict | None = None,
    replicas: list | dict | None = None,
    **overrides,
) -> Comparison:
    """Align every target dictionary to the reference one and score it (DESIGN.md's definitions).

    ``saes`` maps checkpoint names to dictionaries (sae-lens SAEs); ``acts`` (optional, recommended)
    holds every checkpoint's activations on the same evaluation tokens: with them, dead features are
    found, firing frequencies compared and variance explained. ``replicas`` are dictionaries trained with
    other seeds on the same data: a list of reference replicas, or ``{checkpoint: [SAEs]}`` (targets may
    have replicas too). Each reference replica compared with the reference gives the base-vs-base value of
    every summary column (``<col>_floor``) and the null profile that corrects the fractions
    (``CompareConfig.estimator``, see featdiff.metrics.uncertainty); replicas and a bootstrap over features
    and token chunks give each column's interval (``<col>_lo``, ``<col>_hi`` at ``interval_level``).
    ``noise_floor=sae`` is the deprecated form of ``replicas=[sae]``. ``metrics`` lists registered metric names or callables to
    compute (default: every registered metric). ``overrides`` set CompareConfig fields.

    Examples
    --------
    >>> import torch
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> W = torch.eye(8)
    >>> saes = {"base": sae_from_dictionary(W, k=2), "rl": sae_from_dictionary(W[[1, 0, 2, 3, 4, 5, 6, 7]], k=2)}
    >>> cmp = compare_dictionaries(saes, progress=False)
    >>> cmp.summary.loc["rl", ["reuse", "recombination", "novelty", "drift"]].tolist()
    [1.0, 0.0, 0.0, 0.0]
    """
    from tqdm.auto import tqdm

    cfg = config or CompareConfig()
    if overrides:
        cfg = CompareConfig.from_dict({**cfg.to_dict(), **overrides})
    if not isinstance(saes, dict) or len(saes) < 2:
        raise FeatdiffError("compare_dictionaries needs a dict of at least two dictionaries {name: SAE}.")
    if reference not in saes:
        raise FeatdiffError(f"The reference {reference!r} is not among the dictionaries {list(saes)}.")
    if acts is not None:
        missing = [n for n in saes if n not in acts]
        if missing:
            raise FeatdiffError(
                f"Activations are missing checkpoints {missing}; the ActivationSet has {acts.names}."
            )
    chosen = [get_metric(m) for m in (metrics if metrics is not None else _default_metrics())]
    targets = [n for n in saes if n != reference]
    replicas = _as_replicas(replicas, noise_floor, reference)
    unknown = set(replicas) - set(saes)
    if unknown:
        raise FeatdiffError(f"replicas= names checkpoints {sorted(unknown)} that are not among {list(saes)}.")

    freqs: dict[str, torch.Tensor | None] = {n: None for n in saes}
    own_fve: dict[str, float] = {n: float("nan") for n in saes}
    if acts is not None:
        for n in tqdm(list(saes), desc="encoding", disable=not progress):
            _check_width(saes[n], acts, n)
            freqs[n], own_fve[n] = code_stats(saes[n], acts[n])
    live_mask = {n: None if f is None else (f > 0).numpy() for n, f in freqs.items()}
    ref_live = (
        live_mask[reference] if live_mask[reference] is not None else np.ones(_d_sae(saes[reference]), bool)
    )
    null_profiles, union_null = _reference_replica_profiles(
        saes[reference],
        replicas.get(reference, []),
        acts,
        reference,
        cfg,
        live_mask[reference],
        freqs[reference],
    )

    rows, tables, alignments = [], [], {}
    for name in tqdm(targets, desc="aligning", disable=not progress):
        al = align(
            saes[reference],
            saes[name],
            cfg.method,
            cfg.on,
            acts if cfg.on == "activations" else None,
            reference,
            name,
            live_mask[reference],
            live_mask[name],
        )
        alignments[name] = al
        table = split_provisional(
            _feature_table(al, cfg, freqs[reference], freqs[name]), al, cfg.reuse_threshold
        )
        live = table["status"] != "dead"
        n_live = int(live.sum())
        frac = {s: float((table["status"] == s).sum() / n_live) if n_live else float("nan") for s in STATUSES}
        frac["reused"] += frac.pop("split")  # a split feature is a near-duplicate of a reused one
        split_fraction = float((table["status"] == "split").sum() / n_live) if n_live else float("nan")
        r, c, nov = frac["reused"], frac["recombined"], frac["novel"]
        row = {
            "checkpoint": name,
            "reuse": r,
            "recombination": c,
            "novelty": nov,
            "reuse_raw": frac["reused"],
            "recombination_raw": frac["recombined"],
            "novelty_raw": frac["novel"],
            "drift": float(table["drift"].mean()) if table["drift"].notna().any() else float("nan"),
            "freq_shift": float(table.loc[table.status == "reused", "freq_shift"].mean()),
            "base_coverage": base_coverage(al, cfg.reuse_threshold),
            "transfer_fve": float("nan"),
            "reference_fve": own_fve[reference],
            "target_fve": float("nan"),
            "noise_floor_reuse": float("nan"),
            "n_features": len(table),
            "n_live": n_live,
            "n_dead": int((~live).sum()),
        }
        transfer = None
        if acts is not None:
            # SAE transfer (Kissane et al. 2024): the reference SAE on the target's activations, per token
            # chunk (summed, the same number as one pass; resampled, its interval).
            transfer = fve_chunks(saes[reference], acts[name])
            row["target_fve"] = own_fve[name]
        row.update(
            _uncertainty_columns(
                table,
                al,
                name,
                saes,
                replicas,
                null_profiles,
                union_null,
                transfer,
                acts,
                cfg,
                ref_live,
                live_mask,
                freqs,
                own_fve[reference],
            )
        )
        row["split"] = split_fraction
        ctx = MetricContext(reference, name, al, saes[reference], saes[name], acts, table)
        for metric in chosen:
            summ, feats = compute_metric(metric, ctx)
            clash = set(summ) & set(row)
            if clash:
                raise FeatdiffError(
                    f"Metric {metric.name!r} would overwrite the summary columns {sorted(clash)}; rename it."
                )
            row.update(summ)
            if feats is not None:
                clash = (set(feats.columns) - {"feature"}) & set(table.columns)
                if clash:
                    raise FeatdiffError(
                        f"Metric {metric.name!r} returns columns {sorted(clash)} that already exist."
                    )
                table = table.merge(feats, on="feature", how="left", validate="one_to_one")
        rows.append(row)
        tables.append(table)
    summary = pd.DataFrame(rows).set_index("checkpoint")
    summary["indistinguishable_from_reference"] = summary["indistinguishable_from_reference"].astype(
        "boolean"
    )
    features = pd.concat(tables, ignore_index=True)
    features["status"] = pd.Categorical(features["status"], categories=STATUSES)
    meta = {
        **(meta or {}),
        "interval_level": cfg.interval_level,
        "estimator": cfg.estimator if cfg.correct else None,
        "n_replicas": {n: len(v) for n, v in replicas.items()},
        "reference": reference,
        "targets": targets,
        "config": cfg.to_dict(),
        "metrics": [m.name for m in chosen],
        "n_eval_tokens": None if acts is None else acts.n_tokens,
        "hook": None if acts is None else acts.hook,
    }
    return Comparison(summary, features, meta, alignments=alignments, dictionaries=dict(saes))


def _check_width(dictionary, acts: ActivationSet, name: str) -> None:
    d_in = dictionary.W_dec.shape[-1]
    if d_in != acts.d_model:
        raise FeatdiffError(
            f"The dictionary of {name!r} has d_in={d_in} but its activations have d_model={acts.d_model}; "
            "use dictionaries trained at the same hook as the activations."
        )


def _default_metrics() -> list[str]:
    from featdiff.metrics.registry import _REGISTRY

    return list(_REGISTRY)


@dataclass
class Comparison:
    """The result of a comparison: ``summary`` (one row per compared checkpoint), ``features`` (one row per
    (checkpoint, feature)), ``meta`` (hook, tokens, seeds, versions). ``to_dir`` / ``load`` round-trip the
    tables exactly; alignments and dictionaries stay in memory only.

    Examples
    --------
    >>> import tempfile
    >>> from featdiff.dictionaries.sae import sae_from_dictionary
    >>> from featdiff.synthetic import plant_checkpoints
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

    def plot(self, path: str | os.PathLike | None = None):
        """A figure of the status fractions per checkpoint and the drift distribution; saved if ``path``."""
        from featdiff.report import plot_comparison

        fig = plot_comparison(self)
        if path is not None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
            tmp.replace(path)
        return fig

    def to_dir(self, path: str | os.PathLike, figures: bool = True) -> Path:
        """Write summary.csv, features.parquet, meta.json and figures/ into ``path`` (atomically)."""
        from featdiff import __version__

        path = Path(path)
        with atomic_dir(path) as tmp:
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
                import matplotlib.pyplot as plt

                (tmp / constants.FIGURES).mkdir()
                fig = self.plot(tmp / constants.FIGURES / "comparison.png")
                plt.close(fig)
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


METHODS = ("saes", "crosscoder")


def _describe(spec, model) -> str:
    """Where a checkpoint came from, for meta.json."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return str(getattr(model, "featdiff_path", None) or f"<in-memory {type(spec).__name__}>")


def compare_checkpoints(
    base,
    rl=None,
    sft=None,
    *,
    tokens=None,
    texts=None,
    hook: str | None = None,
    method: str = "saes",
    saes: dict | None = None,
    d_sae: int | None = None,
    architecture: str = "topk",
    k: int | None = None,
    seed: int = 0,
    noise_floor: bool | None = None,
    n_replicas: int = DEFAULT_N_REPLICAS,
    eval_fraction: float = 0.2,
    metrics: list | None = None,
    config: CompareConfig | None = None,
    train_kwargs: dict | None = None,
    batch_size: int = 32,
    pad_token_id: int | None = None,
    progress: bool = True,
    device: str | None = None,
    **more,
) -> Comparison:
    """Everything in one call: load the checkpoints, collect paired activations, train (or take) the
    dictionaries, align them to the base's and score them.

    ``base``, ``rl``, ``sft`` and any further keyword checkpoints (``dpo=...``) take whatever ``load_model``
    takes. ``tokens`` (or ``texts``) give the data; checkpoints from ``featdiff.lab`` carry their own
    prompts (and their pad token). ``hook`` defaults to the middle layer's residual stream. ``method="saes"`` trains one SAE per
    checkpoint (plus ``n_replicas`` base SAEs with seeds seed + 1, ... for the floors, intervals and the
    correction; with the ``symmetric`` estimator as many per target) unless ``saes`` gives them (a key
    ``"__replicas__"`` may then hold the reference replicas, a list, or ``{checkpoint: [SAEs]}``);
    ``noise_floor=True/False`` is the deprecated form of ``n_replicas=1/0``;
    ``method="crosscoder"`` trains one crosscoder over all checkpoints. A fraction ``eval_fraction`` of the
    tokens is held out for scoring. ``train_kwargs`` go to ``train_saes`` / ``train_crosscoder``.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
    >>> cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=8, d_head=4, n_heads=4, d_vocab=20,
    ...                               act_fn="relu", tokenizer_name=None, seed=0, d_mlp=32)
    >>> base, rl = HookedTransformer(cfg), HookedTransformer(cfg)
    >>> rl.load_state_dict(base.state_dict())
    <All keys matched successfully>
    >>> tokens = torch.randint(0, 20, (64, 8), generator=torch.Generator().manual_seed(0))
    >>> cmp = compare_checkpoints(base, rl, tokens=tokens, d_sae=32, k=2, train_kwargs={"n_steps": 50},
    ...                           progress=False)
    >>> bool(cmp.summary.loc["rl", "transfer_fve"] == cmp.summary.loc["rl", "reference_fve"])  # same weights
    True
    """
    from featdiff.activations import collect_activations
    from featdiff.models import default_hook, load_model, load_prompts

    check_choice("method", method, METHODS, "compare_checkpoints")
    specs = {"base": base, "rl": rl, "sft": sft, **more}
    specs = {n: s for n, s in specs.items() if s is not None}
    if len(specs) < 2:
        raise FeatdiffError("compare_checkpoints needs the base and at least one post-trained checkpoint.")
    models = {n: load_model(s, device=device) for n, s in specs.items()}
    if tokens is None and texts is None:
        tokens = load_prompts(models["base"])
        if pad_token_id is None:
            pad_token_id = (getattr(models["base"], "featdiff_meta", None) or {}).get("pad_token_id")
        if tokens is None:
            raise FeatdiffError(
                "compare_checkpoints needs data: pass tokens= (token ids, shape (batch, seq)) or texts=; "
                "only checkpoints made by featdiff.lab carry their own prompts."
            )
    data = tokens if tokens is not None else texts
    hook = hook or default_hook(models["base"])
    acts = collect_activations(
        models,
        data,
        hook=hook,
        batch_size=batch_size,
        progress=progress,
        device=device,
        pad_token_id=pad_token_id,
    )
    train, held_out = acts.split(eval_fraction, seed=seed)
    meta = {
        "method": method,
        "hook": hook,
        "n_tokens": acts.n_tokens,
        "n_train_tokens": train.n_tokens,
        "seed": seed,
        "checkpoints": {n: _describe(specs[n], m) for n, m in models.items()},
        "activations": acts.meta,
    }
    if method == "crosscoder":
        from featdiff.dictionaries.crosscoder import train_crosscoder

        for arg, value, why in (
            ("saes", saes, "a crosscoder is trained over all checkpoints"),
            ("metrics", metrics, "registered metrics are computed on the SAE route (method='saes')"),
        ):
            if value is not None:
                raise FeatdiffError(f"compare_checkpoints(method='crosscoder') takes no {arg}=: {why}.")

        cc = train_crosscoder(
            train, d_sae=d_sae, k=k or 32, seed=seed, progress=progress, device=device, **(train_kwargs or {})
        )
        return compare_crosscoder(cc, held_out, reference="base", config=config, meta=meta, progress=progress)

    from featdiff.dictionaries.sae import train_saes

    if noise_floor is not None:
        warnings.warn(
            "compare_checkpoints(noise_floor=...) is deprecated; pass n_replicas= (reference replica SAEs to "
            "train; noise_floor=True means n_replicas=1, False means 0).",
            FutureWarning,
            stacklevel=2,
        )
        n_replicas = int(bool(noise_floor))
    if isinstance(n_replicas, bool) or not isinstance(n_replicas, int) or n_replicas < 0:
        raise FeatdiffError(f"n_replicas must be a non-negative integer; got {n_replicas!r}.")
    replicas: dict[str, list] = {}
    if saes is None:
        per_target = (config.estimator if config else DEFAULT_ESTIMATOR) == "symmetric"
        extra = {f"__replica_base_{i}__": ("base", seed + 1 + i) for i in range(n_replicas)}
        if per_target:
            extra.update(
                {
                    f"__replica_{n}_{i}__": (n, seed + 1 + i)
                    for n in models
                    if n != "base"
                    for i in range(n_replicas)
                }
            )
        saes = train_saes(
            train,
            device=device,
            d_sae=d_sae,
            architecture=architecture,
            k=k,
            seed=seed,
            extra=extra or None,
            progress=progress,
            **(train_kwargs or {}),
        )
        for key, (n, _) in extra.items():
            replicas.setdefault(n, []).append(saes.pop(key))
        meta["sae"] = {
            "architecture": architecture,
            "d_sae": d_sae,
            "k": k,
            "seed": seed,
            **(train_kwargs or {}),
        }
    else:
        from featdiff.dictionaries.sae import load_sae

        saes = dict(saes)
        given = saes.pop("__replicas__", None) or []
        old = saes.pop("__noise_floor__", None)
        given = dict(given) if isinstance(given, dict) else {"base": list(given)}
        if old is not None:
            given["base"] = [old, *given.get("base", [])]
        load = lambda s: load_sae(s) if isinstance(s, (str, os.PathLike)) else s  # noqa: E731
        saes = {n: load(s) for n, s in saes.items()}
        replicas = {n: [load(s) for s in v] for n, v in given.items()}
    cmp = compare_dictionaries(
        saes,
        held_out,
        reference="base",
        replicas=replicas,
        metrics=metrics,
        config=config,
        progress=progress,
        meta=meta,
    )
    cmp.extras["noise_floor_sae"] = (replicas.get("base") or [None])[0]
    cmp.extras["replica_saes"] = replicas
    return cmp


def compare_crosscoder(
    cc,
    acts: ActivationSet | None = None,
    reference: str = "base",
    nrn_shared: tuple[float, float] = (0.3, 0.7),
    mas_threshold: float = 0.5,
    pair_share: float = 0.5,
    p: int = 2,
    config: CompareConfig | None = None,
    progress: bool = True,
    meta: dict | None = None,
) -> Comparison:
    """Score one shared crosscoder as a Comparison (the ``method="crosscoder"`` view).

    Per target checkpoint T and feature k, with NRN_k = n_k^T / (n_k^base + n_k^T) (decoder norms):
    a feature whose base and T norms make less than ``pair_share`` of its norms over all checkpoints
    belongs to the others (status "other", left out of T's fractions; only with three or more).
    NRN below ``nrn_shared[0]`` means the feature belongs to the base only (``status`` "base_only", not
    one of T's features); between the bounds it is shared: ``reused``, with ``similarity`` the cosine of
    its base and T decoder rows and ``drift`` = 1 - similarity; above ``nrn_shared[1]`` it is T-specific:
    ``recombined`` when 2-3 base decoder rows of the base's own features fit its T decoder row (OMP,
    cosine >= ``fit_threshold``), else ``novel``. Fractions are over T's live features (shared + specific).
    The features table also carries ``nrn``, one ``mas_<checkpoint>`` column per checkpoint, the
    M-model ``category`` (a checkpoint's name when its MAS > ``mas_threshold``, else "shared") and, for
    T-specific features when activations are given, latent scaling (Minder et al. 2025): ``nu_error``,
    ``nu_reconstruction`` and ``sparsity_artefact`` (the base does carry the feature; the crosscoder's
    sparsity penalty made it look specific). The summary counts those as ``n_artefacts``.
    """
    from tqdm.auto import tqdm

    from featdiff.metrics.crosscoder import decoder_cosine, latent_scaling, mas, nrn
    from featdiff.metrics.recombination import fit_components

    cfg = config or CompareConfig()
    if reference not in cc.names:
        raise FeatdiffError(
            f"The reference {reference!r} is not among the crosscoder's checkpoints {cc.names}."
        )
    lo, hi = nrn_shared
    if not 0 <= lo <= hi <= 1:
        raise FeatdiffError(f"nrn_shared must be (low, high) with 0 <= low <= high <= 1; got {nrn_shared}.")
    m = mas(cc, mas_threshold, p)
    dead = np.zeros(cc.d_sae, bool)
    freqs = None
    if acts is not None:
        from featdiff.metrics.crosscoder import firing_frequency

        freqs = firing_frequency(cc, acts).to_numpy()
        dead = freqs == 0
        m.loc[dead, "category"] = "dead"
    fve = cc.evaluate(acts).set_index("checkpoint") if acts is not None else None
    norms = cc.decoder_norms(p)
    base_dec = cc.decoder(reference).detach().float()
    base_dec = base_dec / base_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows, tables = [], []
    targets = [n for n in cc.names if n != reference]
    for name in tqdm(targets, desc="scoring", disable=not progress):
        r = nrn(cc, name, reference, p).to_numpy(dtype=float)
        cos = decoder_cosine(cc, reference, name).to_numpy(dtype=float)
        # with more than two checkpoints, a feature of the others (tiny norms in both the reference and T)
        # has an ill-defined NRN: it belongs to neither, and is left out of T's fractions
        pair = (norms[reference] + norms[name]) / norms.sum(axis=1).clip(lower=1e-30)
        other = (pair.to_numpy() < pair_share) & ~dead
        live_pair = ~dead & ~other
        shared = (r >= lo) & (r <= hi) & live_pair
        specific = (r > hi) & live_pair
        base_only = (r < lo) & live_pair
        base_feats = np.flatnonzero((r <= hi) & live_pair)
        status = np.full(cc.d_sae, "novel", dtype=object)
        status[shared] = "reused"
        status[base_only] = "base_only"
        status[other] = "other"
        status[dead] = "dead"
        tgt_dec = cc.decoder(name).detach().float()
        rc = fit_components(
            tgt_dec / tgt_dec.norm(dim=1, keepdim=True).clamp_min(1e-12),
            np.flatnonzero(specific),
            base_dec,
            base_feats,
            cfg.fit_threshold,
            cfg.max_components,
            cfg.min_components,
        )
        status[rc["recombined"].to_numpy()] = "recombined"
        scaling = pd.DataFrame(
            index=np.arange(cc.d_sae), columns=["nu_error", "nu_reconstruction"], dtype=float
        )
        artefact = np.zeros(cc.d_sae, bool)
        if acts is not None and specific.any():
            # Latent scaling (Minder et al. 2025): is a T-specific feature really absent from the base?
            ls = latent_scaling(
                cc, acts, features=np.flatnonzero(specific).tolist(), tuned=name, base=reference
            )
            ls = ls.set_index("feature")
            scaling.loc[ls.index, ["nu_error", "nu_reconstruction"]] = ls[["nu_error", "nu_reconstruction"]]
            artefact[ls.index.to_numpy()] = ls["sparsity_artefact"].to_numpy(dtype=bool)
        table = pd.DataFrame(
            {
                "checkpoint": name,
                "feature": np.arange(cc.d_sae, dtype=np.int64),
                "status": pd.Categorical(status, categories=[*STATUSES, "base_only", "other"]),
                "match": np.where(shared, np.arange(cc.d_sae), -1).astype(np.int64),
                "similarity": np.where(shared, cos, np.nan),
                "drift": np.where(shared, 1 - cos, np.nan),
                "freq_shift": np.nan,
                "components": rc["components"],
                "n_components": rc["n_components"],
                "fit_cosine": rc["fit_cosine"],
                "frequency": np.nan if freqs is None else freqs,
                "nrn": r,
                "decoder_cosine": cos,
                "nu_error": scaling["nu_error"].to_numpy(dtype=float),
                "nu_reconstruction": scaling["nu_reconstruction"].to_numpy(dtype=float),
                "sparsity_artefact": artefact,
                "category": m["category"].to_numpy(),
                **{f"mas_{c}": m[c].to_numpy(dtype=float) for c in cc.names},
            }
        )
        own = shared | specific
        n_own = int(own.sum())
        frac = {s: float((status[own] == s).sum() / n_own) if n_own else float("nan") for s in STATUSES[:3]}
        base_live = len(base_feats)
        rows.append(
            {
                "checkpoint": name,
                "reuse": frac["reused"],
                "recombination": frac["recombined"],
                "novelty": frac["novel"],
                "reuse_raw": frac["reused"],
                "recombination_raw": frac["recombined"],
                "novelty_raw": frac["novel"],
                "drift": float(np.nanmean(np.where(shared, 1 - cos, np.nan)))
                if shared.any()
                else float("nan"),
                "freq_shift": float("nan"),
                "base_coverage": float(shared.sum() / base_live) if base_live else float("nan"),
                "transfer_fve": float("nan"),
                "reference_fve": float(fve.loc[reference, "fve"]) if fve is not None else float("nan"),
                "target_fve": float(fve.loc[name, "fve"]) if fve is not None else float("nan"),
                "noise_floor_reuse": float("nan"),
                "n_features": cc.d_sae,
                "n_live": n_own,
                "n_dead": int(dead.sum()),
                "specific_fraction": float((m["category"] == name).sum() / max(1, (~dead).sum())),
                "mean_nrn": float(np.nanmean(r[~dead])) if (~dead).any() else float("nan"),
                "n_artefacts": int(artefact.sum()),
            }
        )
        tables.append(table)
    summary = pd.DataFrame(rows).set_index("checkpoint")
    features = pd.concat(tables, ignore_index=True)
    meta = {
        **(meta or {}),
        "method": "crosscoder",
        "reference": reference,
        "targets": targets,
        "config": cfg.to_dict(),
        "nrn_shared": list(nrn_shared),
        "mas_threshold": mas_threshold,
        "p": p,
        "crosscoder": cc.cfg.to_dict(),
        "n_eval_tokens": None if acts is None else acts.n_tokens,
    }
    return Comparison(summary, features, meta, dictionaries={"crosscoder": cc}, extras={"mas": m})
