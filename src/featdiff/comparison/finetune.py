"""The warm-started route, ``method="finetune"`` of ``compare_checkpoints`` / ``compare_activations``: train
the reference's SAE, fine-tune a copy on each checkpoint's activations (featdiff.dictionaries.finetune), and
score them aligned by index with the SAE route's own scoring (``compare_dictionaries`` with
``CompareConfig(method="index")``): the same statuses, floors, intervals, warnings, cards and report. The
floor's replicas are the reference's SAE fine-tuned on the reference's own activations in another data
order for the same steps. The Hungarian matching is kept as a check: ``index_agreement`` (a summary column)
is the share of a target's scored latents whose Hungarian match is their own index.

Also here: the warning that the independent-SAE route's seed floor is too low to read, which names this
route (``seed_floor_message``).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from featdiff.alignment.matching import align
from featdiff.comparison.config import CompareConfig
from featdiff.dictionaries.finetune import FinetuneConfig, finetune_saes
from featdiff.errors import FeatdiffError, FeatdiffWarning

# the estimator of the route where CompareConfig keeps the default ("union"): union's shares match
# many-to-one by cosine, which ignores the index alignment; ratio divides the index reuse by the index floor
FINETUNE_ESTIMATOR = "ratio"


def index_config(config: CompareConfig | None) -> CompareConfig:
    """``config`` (default ``CompareConfig()``) with ``method="index"``, and ``estimator="ratio"`` where it
    asks for ``union``.

    Examples
    --------
    >>> cfg = index_config(None)
    >>> cfg.method, cfg.estimator
    ('index', 'ratio')
    >>> index_config(CompareConfig(estimator="symmetric")).estimator
    'symmetric'
    """
    cfg = config or CompareConfig()
    estimator = FINETUNE_ESTIMATOR if cfg.estimator == "union" else cfg.estimator
    return dataclasses.replace(cfg, method="index", estimator=estimator)


def finetune_fitter(reference: str, finetune: FinetuneConfig, train):
    """A ``fit_saes`` for the pipeline's SAE route (featdiff.comparison.pipeline): at each width, ``train``
    (``train_saes``) trains the reference's SAE once (cached, so the width check's probes and the next round
    share it), and every other SAE asked for, a target ``(name, seed)`` or a replica ``(reference, seed + i)``,
    is that SAE fine-tuned on its checkpoint's activations with its seed's data order."""
    bases: dict[int, object] = {}

    def fit(acts, *, d_sae, architecture, k, seed, names, extra, progress, device, **kw):
        if architecture != "topk":
            raise FeatdiffError(
                f"method='finetune' fine-tunes topk SAEs; got architecture={architecture!r}. Pass "
                "architecture='topk', or method='saes' for independently trained SAEs."
            )
        if d_sae not in bases:
            sae_kw = dict(d_sae=d_sae, architecture=architecture, k=k, seed=seed, names=[reference], progress=progress)
            bases[d_sae] = train(acts, device=device, **sae_kw, **kw)[reference]
        jobs = {n: (n, seed) for n in names if n != reference}
        jobs.update(dict(extra or {}))
        out = finetune_saes(bases[d_sae], acts, jobs, finetune, reference, progress, device) if jobs else {}
        if reference in names:
            out[reference] = bases[d_sae]
        return out

    return fit


def index_agreement(al, threshold: float = 0.7) -> float:
    """The Hungarian check of an index alignment: of the target's live latents that the Hungarian matching on
    decoder cosines (over the same live latents) calls reused (cosine >= ``threshold``), the share matched to
    their own index (1 where fine-tuning moved no latent onto another's feature; NaN where none is reused).

    Examples
    --------
    >>> import torch
    >>> W = torch.eye(4)
    >>> index_agreement(align(W, W, method="index")), index_agreement(align(W, W[[1, 0, 2, 3]], method="index"))
    (1.0, 0.5)
    """
    h = align(al.ref_decoder, al.tgt_decoder, ref_live=al.ref_live, tgt_live=al.tgt_live)
    reused = np.flatnonzero(al.tgt_live & (h.match >= 0) & (np.nan_to_num(h.similarity, nan=-1.0) >= threshold))
    return float((h.match[reused] == reused).mean()) if len(reused) else float("nan")


def add_index_check(cmp, finetune: FinetuneConfig, threshold: float = 0.7) -> None:
    """Put the Hungarian check in ``cmp``: the summary column ``index_agreement`` per target, and
    ``cmp.meta["finetune"]`` (the FinetuneConfig, each target's agreement and the reference replicas')."""
    agreement = {t: index_agreement(al, threshold) for t, al in cmp.alignments.items()}
    cmp.summary["index_agreement"] = [agreement.get(t, float("nan")) for t in cmp.summary.index]
    reference = cmp.meta.get("reference", "base")
    replica = []
    for rep in (cmp.extras.get("replica_saes") or {}).get(reference, []):
        live = next(iter(cmp.alignments.values())).ref_live if cmp.alignments else None
        al = align(cmp.dictionaries[reference], rep, method="index", ref_live=live)
        replica.append(index_agreement(al, threshold))
    cmp.meta["finetune"] = {
        "config": finetune.to_dict(),
        "alignment": "index",
        "index_agreement": agreement,
        "replica_index_agreement": replica,
    }


def finish_route(cmp, method: str, finetune: FinetuneConfig, config: CompareConfig | None) -> None:
    """After the pipeline's SAE route: the Hungarian check of the warm-started route (``add_index_check``),
    or the independent route's seed-floor warning (``seed_floor_message``, threshold
    ``config.diagnostics.min_seed_floor``), issued and kept in ``cmp.meta["warnings"]``."""
    if method == "finetune":
        add_index_check(cmp, finetune, (config or CompareConfig()).reuse_threshold)
        return
    msg = seed_floor_message(cmp, (config or CompareConfig()).diagnostics.min_seed_floor)
    if msg:
        cmp.meta.setdefault("warnings", []).append(msg)
        warnings.warn(msg, FeatdiffWarning, stacklevel=3)


def seed_floor_message(cmp, min_seed_floor: float) -> str | None:
    """The warning of the independent-SAE route where its reference replicas share fewer than
    ``min_seed_floor`` of their latents (``reuse_floor``), naming ``method="finetune"``; None otherwise.

    Examples
    --------
    >>> import pandas as pd
    >>> from types import SimpleNamespace
    >>> c = SimpleNamespace(summary=pd.DataFrame({"reuse_floor": [0.14]}), meta={"method": "saes"})
    >>> seed_floor_message(c, 0.3).split(":")[0]
    'seed floor'
    >>> seed_floor_message(c, 0.1) is None
    True
    """
    if cmp.meta.get("method", "saes") != "saes" or "reuse_floor" not in cmp.summary or not len(cmp.summary):
        return None
    q = float(cmp.summary["reuse_floor"].iloc[0])
    if not np.isfinite(q) or q >= min_seed_floor:
        return None
    reference = cmp.meta.get("reference", "base")
    return (
        f"seed floor: {reference} SAEs trained from scratch with different seeds share only {q:.1%} of their "
        f"scored latents (below min_seed_floor={min_seed_floor:g}), so the independent-SAE readings are mostly "
        f"seed noise. method='finetune' (each checkpoint's SAE fine-tuned from the {reference} SAE, aligned by "
        "index) keeps the floor high, but on the scenario library it still misreads recombined and split "
        "features (docs/metrics.md, 'Which route to trust when'); or make the SAEs agree across seeds."
    )
