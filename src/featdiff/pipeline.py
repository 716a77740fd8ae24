"""The one-call pipeline: ``compare_checkpoints`` loads checkpoints, collects paired activations, trains
(or takes) the dictionaries and scores them; it only calls the public stage functions."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from featdiff import distributed as dist
from featdiff._replicas import as_replicas
from featdiff.activations import ActivationSet, collect_activations
from featdiff.cards import Unembedding
from featdiff.comparison import CompareConfig, Comparison
from featdiff.corpus import as_corpus
from featdiff.dictionaries.crosscoder import train_crosscoder
from featdiff.dictionaries.sae import load_sae, train_saes
from featdiff.errors import FeatdiffError, FeatdiffWarning, check_choice
from featdiff.metrics.uncertainty import DEFAULT_ESTIMATOR
from featdiff.models import default_hook, load_model, load_prompts
from featdiff.score import compare_crosscoder, compare_dictionaries

# reference replica SAEs compare_checkpoints trains by default (docs/metrics.md: cost vs interval width)
DEFAULT_N_REPLICAS = 2
# widen when a reference SAE twice as wide leaves this share less of the variance unexplained: on planted
# data 0.29-0.46 at 0.5x-0.75x the planted width (where recombination reads low), 0.02-0.15 at 1x with any
# k; 0.06 on the lab (docs/metrics.md, "Widening")
WIDEN_REDUCTION = 0.2
# ... and only when the reference uses (nearly) all its latents: one with many dead latents has room to
# spare (SmolLM2-135M at 24k tokens: 31 % live, yet a 2x SAE left 29 % less unexplained)
WIDEN_MIN_LIVE = 0.9
METHODS = ("saes", "crosscoder")


def _describe(spec, model) -> str:
    """Where a checkpoint came from, for meta.json."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return str(getattr(model, "featdiff_path", None) or f"<in-memory {type(spec).__name__}>")


def _checkpoint_specs(base, rl, sft, more: dict) -> dict:
    """{name: spec} from a mapping in the first argument or from base / rl / sft (/ **more, deprecated)."""
    if isinstance(base, Mapping):
        if rl is not None or sft is not None or more:
            raise FeatdiffError(
                "compare_checkpoints takes the checkpoints either as one mapping {name: checkpoint} or as "
                "base, rl, sft; not both."
            )
        specs = dict(base)
    else:
        if more:
            warnings.warn(
                f"compare_checkpoints(..., {', '.join(f'{k}=' for k in more)}) is deprecated: a checkpoint "
                "name could collide with an option; pass every checkpoint in one mapping, "
                "compare_checkpoints({'base': ..., 'rl': ..., " + ", ".join(f"'{k}': ..." for k in more) + "}, ...).",
                DeprecationWarning,
                stacklevel=3,
            )
        specs = {"base": base, "rl": rl, "sft": sft, **more}
    specs = {n: s for n, s in specs.items() if s is not None}
    if len(specs) < 2:
        raise FeatdiffError("compare_checkpoints needs the base and at least one post-trained checkpoint.")
    return specs


def _score(saes, replicas, evaluate, reference, metrics, config, progress, meta) -> Comparison:
    """``compare_dictionaries`` as the pipeline calls it, keeping the replica SAEs for the feature cards."""
    cmp = compare_dictionaries(
        saes,
        evaluate,
        reference=reference,
        replicas=replicas,
        metrics=metrics,
        config=config,
        progress=progress,
        meta=meta,
    )
    cmp.extras["replica_saes"] = replicas
    return cmp


def _train_and_compare(
    train,
    held_out,
    *,
    names: list[str],
    reference: str,
    d_sae: int | None,
    architecture: str,
    k: int | None,
    seed: int,
    n_replicas: int,
    metrics,
    config: CompareConfig | None,
    train_kwargs: dict,
    progress: bool,
    device,
    fit_saes,
    meta: dict,
    widen: int,
    distributed: bool = False,
) -> Comparison | None:
    """The SAE route of ``compare_checkpoints`` / ``compare_activations``: train one SAE per checkpoint and
    the replicas and score them on ``held_out``. While ``widen`` rounds are left, the width check: where
    the reference SAE uses nearly all its latents (live share >= ``WIDEN_MIN_LIVE``), a reference SAE
    twice as wide (the probe) is trained; where that leaves at least ``WIDEN_REDUCTION`` less of the
    reference's variance unexplained, or the comparison finds the reference lacking features of its own
    activations (``diagnostics.narrow_reference``), every SAE is trained again at twice the width (the
    probe is the new reference SAE) and scored again. ``meta["width_check"]`` records each check,
    ``meta["widened"]`` each widening."""
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise FeatdiffError(f"widen must be a non-negative integer (rounds of doubling d_sae); got {widen!r}.")
    from featdiff.diagnostics import narrow_reference
    from featdiff.dictionaries.stats import sae_stats

    # replica SAEs train in the same pass as the others: the reference's with seeds seed + 1, ...; the
    # targets' too where the estimator needs them (featdiff.metrics.uncertainty)
    per_target = (config.estimator if config else DEFAULT_ESTIMATOR) == "symmetric"
    owners = [reference, *([n for n in names if n != reference] if per_target else [])]
    jobs = {(n, i): (n, seed + 1 + i) for n in owners for i in range(n_replicas)}
    extra = {f"{n} replica {i + 1}": spec for (n, i), spec in jobs.items()}
    evaluate = train if held_out is None else held_out
    width = d_sae or 4 * train.d_model
    checks, widened, probe = [], [], None

    def fit(w: int, which: list[str], extra_: dict | None, folder: str) -> dict:
        kw = dict(train_kwargs)
        if kw.get("checkpoint_dir") is not None and folder:  # another width is another run: its own folder
            kw["checkpoint_dir"] = Path(f"{kw['checkpoint_dir']}-{folder}")
        sae_kw = dict(d_sae=w, architecture=architecture, k=k, seed=seed, names=which, extra=extra_, progress=progress)
        return fit_saes(train, device=device, **sae_kw, **kw)

    for round_ in range(widen + 1):
        # after a widening the probe is the reference SAE at this width (an SAE depends only on its
        # checkpoint, seed and the data order: train_saes would give the same one)
        trained = fit(width, [n for n in names if probe is None or n != reference], extra or None, f"d_sae{width}" if round_ else "")
        if probe is not None:
            trained[reference] = probe
        saes = {n: trained[n] for n in names}
        replicas = {}
        for key, (n, _) in extra.items():
            replicas.setdefault(n, []).append(trained[key])
        sae_meta = {"architecture": architecture, "d_sae": width, "k": k, "seed": seed, "n_replicas": n_replicas}
        sae_meta.update({a: v for a, v in train_kwargs.items() if a != "checkpoint_dir"})
        round_meta = {**meta, "sae": sae_meta, **({"widened": list(widened)} if widened else {})}
        if checks:
            round_meta["width_check"] = list(checks)
        if distributed and not dist.is_main():
            return None
        cmp = _score(saes, replicas, evaluate, reference, metrics, config, progress, round_meta)
        if round_ == widen:
            break
        narrow = sorted(narrow_reference(cmp))
        n_feat = cmp.meta.get("reference_n_features") or 0
        live_share = cmp.meta.get("reference_n_live", 0) / n_feat if n_feat else float("nan")
        check = {"d_sae": width, "reference_live_share": live_share, "narrow": narrow, "probe_d_sae": None}
        checks.append(check)
        cmp.meta["width_check"] = list(checks)
        # a dictionary with spare (dead) latents is not held back by its width: no probe, no widening
        if not narrow and not live_share >= WIDEN_MIN_LIVE:
            break
        probe = fit(2 * width, [reference], None, f"probe-d_sae{2 * width}")[reference]
        fve = float(cmp.summary["reference_fve"].iloc[0])  # scored on the same held-out tokens
        fve_probe = float(sae_stats(probe, evaluate.column(reference), where="the width probe")["fve"])
        reduction = 1.0 - (1.0 - fve_probe) / (1.0 - fve) if fve < 1.0 else 0.0
        check.update(probe_d_sae=2 * width, reference_fve=fve, probe_fve=fve_probe, unexplained_reduction=reduction)
        if not narrow and reduction < WIDEN_REDUCTION:
            break
        widened.append({"d_sae": width, "reference_live_share": live_share, "unexplained_reduction": reduction, "narrow": narrow})
        width *= 2
    if widened:
        w0 = widened[0]
        why = [
            f"{w0['reference_live_share']:.0%} of the {reference} SAE's latents live, and one twice as wide left "
            f"{w0['unexplained_reduction']:.0%} less of its variance unexplained"
        ]
        if w0["narrow"]:
            why.append(f"the narrow-reference check fired for {', '.join(w0['narrow'])}")
        msg = (
            f"d_sae {w0['d_sae']:,} was too narrow for these activations ({' and '.join(why)}), so every SAE was "
            f"trained again and the tables are at d_sae {width:,}: an SAE narrower than the features reads "
            "recombinations as novel. Pass widen=0 to keep the width you asked for."
        )
        cmp.meta.setdefault("warnings", []).insert(0, msg)
        warnings.warn(msg, FeatdiffWarning, stacklevel=3)
    return cmp


def compare_activations(
    acts: ActivationSet,
    *,
    held_out: ActivationSet | None = None,
    reference: str | None = None,
    d_sae: int | None = None,
    architecture: str = "topk",
    k: int | None = None,
    seed: int = 0,
    n_replicas: int = DEFAULT_N_REPLICAS,
    eval_fraction: float = 0.2,
    widen: int = 1,
    metrics: list | None = None,
    config: CompareConfig | None = None,
    train_kwargs: dict | None = None,
    progress: bool = True,
    device: str | None = None,
) -> Comparison:
    """``compare_checkpoints``'s SAE route from paired activations you already have (e.g. an
    ``ActivationSet.open`` folder or ``from_sae_lens_cache``): train one SAE per checkpoint and
    ``n_replicas`` reference replicas, score them, and widen (below) where the reference is too narrow.

    ``held_out`` is the evaluation set; without it a fraction ``eval_fraction`` of ``acts``'s sequences is
    held out. ``reference`` defaults to "base" (else the first checkpoint). ``widen``: rounds of a width
    check. Where the reference SAE uses >= 90 % of its latents (``WIDEN_MIN_LIVE``), one reference SAE
    twice as wide (the probe) is trained; where it leaves >= 20 % less of the reference's variance
    unexplained (``WIDEN_REDUCTION``), or the comparison finds the reference lacking features of its own
    activations (``featdiff.diagnostics.narrow_reference``), every SAE is trained again at twice ``d_sae``:
    an SAE narrower than the features cannot tell recombination from novelty (docs/metrics.md,
    "Widening"). ``cmp.meta["width_check"]`` holds each check's numbers; where the tables are at a wider
    width, ``cmp.meta["widened"]`` and a warning say so. ``widen=0`` keeps ``d_sae`` and checks nothing.

    Examples
    --------
    >>> from featdiff.synthetic.planted import plant_checkpoints
    >>> planted = plant_checkpoints(d_in=16, n_atoms=32, seed=0)
    >>> cmp = compare_activations(planted.sample(4000), d_sae=32, k=4, n_replicas=1,
    ...                           train_kwargs={"n_steps": 100}, progress=False)
    >>> list(cmp.summary.index), cmp.meta["sae"]["d_sae"]
    (['rl', 'sft'], 32)
    """
    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(
            f"compare_activations needs an ActivationSet; got {type(acts).__name__}. "
            "Wrap tensors with ActivationSet.from_tensors({'base': X0, 'rl': X1})."
        )
    if isinstance(n_replicas, bool) or not isinstance(n_replicas, int) or n_replicas < 0:
        raise FeatdiffError(f"n_replicas must be a non-negative integer; got {n_replicas!r}.")
    reference = reference or ("base" if "base" in acts.names else acts.names[0])
    if reference not in acts.names:
        raise FeatdiffError(f"compare_activations: no checkpoint {reference!r}; the activations have {acts.names}.")
    train = acts
    if held_out is None:
        train, held_out = acts.split(eval_fraction, seed=seed)
    meta = {"method": "saes", "hook": acts.hook, "n_tokens": acts.n_tokens, "n_train_tokens": train.n_tokens, "seed": seed}
    return _train_and_compare(
        train,
        held_out,
        names=list(acts.names),
        reference=reference,
        d_sae=d_sae,
        architecture=architecture,
        k=k,
        seed=seed,
        n_replicas=n_replicas,
        metrics=metrics,
        config=config,
        train_kwargs=dict(train_kwargs or {}),
        progress=progress,
        device=device,
        fit_saes=train_saes,
        meta=meta,
        widen=widen,
    )


def compare_checkpoints(
    base=None,
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
    n_replicas: int = DEFAULT_N_REPLICAS,
    replicas: list | dict | None = None,
    noise_floor: bool | None = None,
    eval_fraction: float = 0.2,
    metrics: list | None = None,
    config: CompareConfig | None = None,
    train_kwargs: dict | None = None,
    batch_size: int = 32,
    pad_token_id: int | None = None,
    progress: bool = True,
    device: str | None = None,
    distributed: bool = False,
    activations_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    widen: int = 1,
    **more,
) -> Comparison | None:
    """Everything in one call: load the checkpoints, collect paired activations, train (or take) the
    dictionaries, align them to the base's and score them.

    ``base``, ``rl``, ``sft`` take whatever ``load_model`` takes; any number of checkpoints can instead come
    as one mapping ``{"base": ..., "dpo": ..., ...}`` in the first argument (the reference is ``"base"``, or
    the mapping's first entry when it has none), so that no checkpoint name can collide with an option. ``tokens`` (token ids, shape (batch, seq)) or ``texts`` give the data: ``texts`` is a path
    (``.txt``, ``.jsonl``, ``.parquet``, a ``datasets`` ``save_to_disk`` folder), a list of strings, or a
    ``featdiff.TextCorpus`` (text field, context length, packing or truncation, ``max_tokens``), tokenized with
    the reference checkpoint's tokenizer and read chunk by chunk (docs/cli.md, "Text input"); checkpoints from
    ``featdiff.lab`` carry their own prompts (and their pad token). ``distributed=True`` (under ``torchrun``) shares
    collection and training across the ranks (``featdiff.distributed``, docs/distributed.md): rank 0 returns the
    Comparison a single process would, the other ranks None. ``hook`` defaults to the middle layer's residual stream. ``method="saes"`` trains one SAE per
    checkpoint (plus ``n_replicas`` reference SAEs with seeds seed + 1, ... for the floors, intervals and the
    correction; with the ``symmetric`` estimator as many per target) unless ``saes`` gives them (then
    ``replicas=`` may give the replicas: a list of reference SAEs, or ``{checkpoint: [SAEs]}``);
    ``noise_floor=True/False`` is the deprecated form of ``n_replicas=1/0``;
    ``method="crosscoder"`` trains one crosscoder over all checkpoints. A fraction ``eval_fraction`` of the
    tokens is held out for scoring. ``train_kwargs`` go to ``train_saes`` / ``train_crosscoder``.
    ``activations_dir`` streams the activations to that folder and leaves them there (an
    ``OnDiskActivationSet``: training and scoring read them chunk by chunk, for sets larger than memory).
    ``checkpoint_dir`` makes the run resumable: collection, SAE and crosscoder training save their progress
    in its subfolders ``collect``, ``saes`` and ``crosscoder`` (docs/long-runs.md), and the same call after a
    kill continues where they stopped, to the tables of an uninterrupted run. ``widen`` (SAE route, one
    process): rounds of a width check that trains every SAE again at twice ``d_sae`` where a reference SAE
    twice as wide explains much more, or the reference lacks features of its own activations
    (``compare_activations``); ``widen=0`` keeps ``d_sae`` and skips the check.

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
    check_choice("method", method, METHODS, "compare_checkpoints")
    specs = _checkpoint_specs(base, rl, sft, more)
    reference = "base" if "base" in specs else next(iter(specs))
    stage_ckpt = {}
    if checkpoint_dir is not None:
        if distributed:
            raise FeatdiffError(
                "compare_checkpoints(checkpoint_dir=...) is not supported with distributed=True (every rank "
                "would write the same folder); pass checkpoint_dir to a single-process run."
            )
        stage_ckpt = {s_: {"checkpoint_dir": Path(checkpoint_dir) / s_} for s_ in ("collect", "saes", "crosscoder")}
    if distributed:
        dist.init()
        device = dist.rank_device(device)
    collect = dist.collect_activations if distributed else collect_activations
    fit_crosscoder = dist.train_crosscoder if distributed else train_crosscoder
    fit_saes = dist.train_saes if distributed else train_saes
    if tokens is not None and texts is not None:
        raise FeatdiffError("compare_checkpoints takes token ids (tokens=) or text (texts=), not both.")
    if texts is not None:
        texts = as_corpus(texts)  # a path is checked before any checkpoint is loaded
    models = {n: load_model(s, device=device) for n, s in specs.items()}
    if tokens is None and texts is None:
        tokens = load_prompts(models[reference])
        if pad_token_id is None:
            pad_token_id = (getattr(models[reference], "featdiff_meta", None) or {}).get("pad_token_id")
        if tokens is None:
            raise FeatdiffError(
                "compare_checkpoints needs data: pass tokens= (token ids, shape (batch, seq)) or texts=; "
                "only checkpoints made by featdiff.lab carry their own prompts."
            )
    data = tokens if tokens is not None else texts
    hook = hook or default_hook(models[reference])
    acts = collect(
        models,
        data,
        hook=hook,
        batch_size=batch_size,
        progress=progress,
        device=device,
        pad_token_id=pad_token_id,
        out_dir=activations_dir,
        **stage_ckpt.get("collect", {}),
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
        for arg, value, why in (
            ("saes", saes, "a crosscoder is trained over all checkpoints"),
            ("metrics", metrics, "registered metrics are computed on the SAE route (method='saes')"),
        ):
            if value is not None:
                raise FeatdiffError(f"compare_checkpoints(method='crosscoder') takes no {arg}=: {why}.")

        cc = fit_crosscoder(
            train, d_sae=d_sae, k=k, seed=seed, progress=progress, device=device,
            **{**stage_ckpt.get("crosscoder", {}), **(train_kwargs or {})},
        )  # fmt: skip
        if distributed and not dist.is_main():
            return None
        cmp = compare_crosscoder(cc, held_out, reference=reference, config=config, meta=meta, progress=progress)
        cmp.extras["unembeddings"] = {n: Unembedding.from_model(m) for n, m in models.items()}  # feature cards
        return cmp

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
    if saes is None:
        if replicas is not None:
            raise FeatdiffError("compare_checkpoints takes replicas= only with saes=; else pass n_replicas=.")
        cmp = _train_and_compare(
            train,
            held_out,
            names=list(models),
            reference=reference,
            d_sae=d_sae,
            architecture=architecture,
            k=k,
            seed=seed,
            n_replicas=n_replicas,
            metrics=metrics,
            config=config,
            train_kwargs={**stage_ckpt.get("saes", {}), **(train_kwargs or {})},
            progress=progress,
            device=device,
            fit_saes=fit_saes,
            meta=meta,
            widen=0 if distributed else widen,
            distributed=distributed,
        )
        if cmp is None:
            return None
    else:
        saes = dict(saes)
        old = saes.pop("__noise_floor__", None)
        if old is not None:
            warnings.warn(
                "compare_checkpoints(saes={..., '__noise_floor__': sae}) is deprecated; pass replicas=[sae].",
                FutureWarning,
                stacklevel=2,
            )
        given = as_replicas(replicas, old, reference)
        load = lambda s: load_sae(s) if isinstance(s, (str, os.PathLike)) else s  # noqa: E731
        saes = {n: load(s) for n, s in saes.items()}
        replicas = {n: [load(s) for s in v] for n, v in given.items()}
        if distributed and not dist.is_main():
            return None
        cmp = _score(saes, replicas, held_out, reference, metrics, config, progress, meta)
    cmp.extras["unembeddings"] = {n: Unembedding.from_model(m) for n, m in models.items()}  # feature cards
    return cmp


