"""The one-call pipeline: ``compare_checkpoints`` loads checkpoints, collects paired activations, trains
(or takes) the dictionaries and scores them; it only calls the public stage functions."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from featdiff import distributed as dist
from featdiff.activations.activations import ActivationSet
from featdiff.activations.collect import collect_activations
from featdiff.activations.corpus import as_corpus
from featdiff.comparison.config import CompareConfig
from featdiff.comparison.finetune import finetune_fitter, finish_route, index_config
from featdiff.comparison.quality import add_lm_quality
from featdiff.comparison.replicas import as_replicas
from featdiff.comparison.scoring import compare_crosscoder, compare_dictionaries
from featdiff.comparison.table import Comparison
from featdiff.comparison.width import scored_shares
from featdiff.core.config import check_int
from featdiff.dictionaries.crosscoder.train import train_crosscoder
from featdiff.dictionaries.finetune import FinetuneConfig, as_finetune_config
from featdiff.dictionaries.formats import load_sae
from featdiff.dictionaries.sae import train_saes
from featdiff.errors import FeatdiffError, check_choice, warn
from featdiff.metrics.uncertainty import DEFAULT_ESTIMATOR
from featdiff.models.folder import load_prompts
from featdiff.models.hooks import default_hook
from featdiff.models.load import load_model
from featdiff.report.cards import Unembedding

# reference replica SAEs compare_checkpoints trains by default (docs/metrics.md: cost vs interval width)
DEFAULT_N_REPLICAS = 2
METHODS = ("saes", "crosscoder", "finetune")
# per round of the width check, the summary columns kept in meta["width_check"] (the round's tables are
# otherwise replaced by the next round's)
ROUND_SUMMARY = ("reuse", "recombination", "novelty", "reuse_raw", "recombination_raw", "novelty_raw")


def _describe(spec, model) -> str:
    """Where a checkpoint came from, for meta.json."""
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return str(getattr(model, "featdiff_path", None) or f"<in-memory {type(spec).__name__}>")


def _checkpoint_specs(base, rl, sft) -> dict:
    """{name: spec} from a mapping in the first argument or from base / rl / sft."""
    if isinstance(base, Mapping):
        if rl is not None or sft is not None:
            raise FeatdiffError(
                "compare_checkpoints takes the checkpoints either as one mapping {name: checkpoint} or as "
                "base, rl, sft; not both."
            )
        specs = dict(base)
    else:
        specs = {"base": base, "rl": rl, "sft": sft}
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
    the replicas and score them on ``held_out``. While ``widen`` rounds are left, the width check
    (thresholds in ``config.width_check``, a ``WidthCheck``): where the reference SAE uses nearly all its
    latents (scored share >= ``min_scored``), a reference SAE ``factor`` times as wide (the probe) is trained;
    where that leaves at least ``min_reduction`` less of the reference's variance unexplained, or the
    comparison finds the reference lacking features of its own activations (``diagnostics.narrow_reference``,
    unless ``narrow_reference=False``), every SAE is trained again ``factor`` times as wide (the probe is the
    new reference SAE) and scored again. ``meta["width_check"]`` records every round (width, seconds, the
    round's summary, the check's numbers and decision), ``meta["width_check_config"]`` the thresholds and
    ``meta["widened"]`` each widening."""
    wc = (config or CompareConfig()).width_check
    from featdiff.comparison.diagnostics import narrow_reference
    from featdiff.dictionaries.stats import sae_stats

    # replica SAEs train in the same pass as the others: the reference's with seeds seed + 1, ...; the
    # targets' too where the estimator needs them (featdiff.metrics.uncertainty)
    per_target = (config.estimator if config else DEFAULT_ESTIMATOR) == "symmetric"
    owners = [reference, *([n for n in names if n != reference] if per_target else [])]
    jobs = {(n, i): (n, seed + 1 + i) for n in owners for i in range(n_replicas)}
    extra = {f"{n} replica {i + 1}": spec for (n, i), spec in jobs.items()}
    evaluate = train if held_out is None else held_out
    width = d_sae or 4 * train.d_model
    rounds, widened, probe, kept_probes = [], [], None, {}

    def fit(w: int, which: list[str], extra_: dict | None, folder: str) -> dict:
        kw = dict(train_kwargs)
        if kw.get("checkpoint_dir") is not None and folder:  # another width is another run: its own folder
            kw["checkpoint_dir"] = Path(f"{kw['checkpoint_dir']}-{folder}")
        sae_kw = dict(d_sae=w, architecture=architecture, k=k, seed=seed, names=which, extra=extra_, progress=progress)
        return fit_saes(train, device=device, **sae_kw, **kw)

    for round_ in range(widen + 1):
        # after a widening the probe is the reference SAE at this width (an SAE depends only on its
        # checkpoint, seed and the data order: train_saes would give the same one)
        t0 = time.perf_counter()
        todo = [n for n in names if n not in kept_probes and (probe is None or n != reference)]
        trained = fit(width, todo, extra or None, f"d_sae{width}" if round_ else "") if todo or extra else {}
        train_s = time.perf_counter() - t0
        trained.update(kept_probes)
        if probe is not None:
            trained[reference] = probe
        saes = {n: trained[n] for n in names}
        replicas = {}
        for key, (n, _) in extra.items():
            replicas.setdefault(n, []).append(trained[key])
        sae_meta = {"architecture": architecture, "d_sae": width, "k": k, "seed": seed, "n_replicas": n_replicas}
        sae_meta.update({a: v for a, v in train_kwargs.items() if a != "checkpoint_dir"})
        round_meta = {**meta, "sae": sae_meta, **({"widened": list(widened)} if widened else {})}
        if distributed and not dist.is_main():
            return None
        t0 = time.perf_counter()
        cmp = _score(saes, replicas, evaluate, reference, metrics, config, progress, round_meta)
        score_s = time.perf_counter() - t0
        if widen == 0:
            break
        s = cmp.summary
        check = {
            "round": round_,
            "d_sae": width,
            "train_s": train_s,
            "score_s": score_s,
            "summary": {
                str(t): {c: float(s.loc[t, c]) for c in ROUND_SUMMARY if c in s.columns} for t in s.index
            },
        }
        rounds.append(check)
        if round_ == widen:
            check.update(decision="last round: no check", wall_s=train_s + score_s)
            break
        narrow = sorted(narrow_reference(cmp)) if wc.narrow_reference else []
        scored_share = scored_shares(cmp, reference)
        # a dictionary with spare (dead) latents is not held back by its width: only SAEs that use nearly
        # all their latents are probed, the reference's and (``targets``) every target's: a target with
        # more features than the reference (SFT adds them) outgrows a width that fits the reference
        probed = [n for n in names if (n == reference or wc.targets) and scored_share.get(n, 0.0) >= wc.min_scored]
        check.update(
            reference_scored_share=scored_share.get(reference, float("nan")),
            scored_share=scored_share,
            narrow=narrow,
            probed=probed,
            probe_d_sae=None,
            probe_s=0.0,
        )
        if narrow and reference not in probed:
            probed = [reference, *probed]
        if not probed:
            check.update(decision=f"keep: scored share below min_scored={wc.min_scored:g}", wall_s=train_s + score_s)
            break
        t0 = time.perf_counter()
        probes = fit(wc.factor * width, probed, None, f"probe-d_sae{wc.factor * width}")
        reductions = {}
        for n in probed:  # each SAE and its probe, on the same held-out tokens
            fve = float(cmp.summary["reference_fve"].iloc[0] if n == reference else cmp.summary.loc[n, "target_fve"])
            fve_probe = float(sae_stats(probes[n], evaluate.column(n), where="the width probe")["fve"])
            reductions[n] = 1.0 - (1.0 - fve_probe) / (1.0 - fve) if fve < 1.0 else 0.0
            if n == reference:
                check.update(reference_fve=fve, probe_fve=fve_probe, unexplained_reduction=reductions[n])
        probe_s = time.perf_counter() - t0
        check.update(probe_d_sae=wc.factor * width, unexplained_reductions=reductions, probe_s=probe_s,
                     wall_s=train_s + score_s + probe_s)
        wide = [n for n, r in reductions.items() if r >= wc.min_reduction]
        if not narrow and not wide:
            check["decision"] = f"keep: unexplained-variance reduction below min_reduction={wc.min_reduction:g}"
            break
        check["decision"] = f"widen to d_sae {wc.factor * width}" + (
            f" (narrow reference: {', '.join(narrow)})" if narrow else ""
        ) + (f" (probe: {', '.join(wide)})" if wide else "")
        widened.append(
            {
                "d_sae": width,
                "reference_scored_share": scored_share.get(reference, float("nan")),
                "unexplained_reduction": reductions.get(reference, float("nan")),
                "scored_share": scored_share,
                "unexplained_reductions": reductions,
                "wide": wide,
                "narrow": narrow,
            }
        )
        # the probes are those checkpoints' SAEs at the next width (same checkpoint, seed and data order)
        probe = probes.get(reference)
        kept_probes = {n: probes[n] for n in probed if n != reference}
        width *= wc.factor
    if rounds:
        cmp.meta["width_check"] = rounds
        cmp.meta["width_check_config"] = wc.to_dict()
    if widened:
        cmp.meta["widened"] = list(widened)
        w0 = widened[0]
        times = "twice" if wc.factor == 2 else f"{wc.factor} times"
        why = [
            f"{w0['scored_share'][n]:.0%} of the {n} SAE's latents live, and one {times} as wide left "
            f"{w0['unexplained_reductions'][n]:.0%} less of its variance unexplained"
            for n in w0["wide"]
        ]
        if w0["narrow"]:
            why.append(f"the narrow-reference check fired for {', '.join(w0['narrow'])}")
        msg = (
            f"d_sae {w0['d_sae']:,} was too narrow for these activations ({' and '.join(why)}), so every SAE was "
            f"trained again and the tables are at d_sae {width:,}: an SAE narrower than the features reads "
            "recombinations as novel. Pass widen=0 to keep the width you asked for."
        )
        cmp.meta.setdefault("warnings", []).insert(0, msg)
        warn(msg)
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
    method: str = "saes",
    finetune: FinetuneConfig | dict | None = None,
) -> Comparison:
    """``compare_checkpoints``'s SAE route from paired activations you already have (e.g. an
    ``ActivationSet.open`` folder or ``from_sae_lens_cache``): train one SAE per checkpoint and
    ``n_replicas`` reference replicas, score them, and widen (below) where the reference is too narrow.

    Parameters
    ----------
    acts : ActivationSet
        Every checkpoint's activations on the same tokens (in memory or on disk).
    held_out : ActivationSet, optional
        The evaluation set; without it a fraction ``eval_fraction`` of ``acts``'s sequences is held out.
    reference : str, optional
        The checkpoint the others are compared with; default "base", else the first.
    d_sae, architecture, k, seed :
        The SAEs' width, architecture, active latents and seed (replicas: seed + 1, ...).
    n_replicas : int
        Reference SAEs trained with other seeds: the floors, intervals and correction (0: only ``*_raw``).
    eval_fraction : float
        The share of sequences held out when ``held_out`` is not given.
    widen : int
        Rounds of the width check below; 0 keeps ``d_sae`` and checks nothing.
    method, finetune :
        ``"saes"`` (independent SAEs) or ``"finetune"`` (the reference's SAE fine-tuned on each checkpoint,
        ``finetune`` a ``FinetuneConfig``), as in ``compare_checkpoints``.
    metrics, config, train_kwargs, progress, device :
        As in ``compare_checkpoints``.

    Notes
    -----
    The width check's thresholds are ``config.width_check`` (a ``WidthCheck``). Every SAE that uses >= 90 %
    of its latents (``min_scored``), the reference's and (``targets``, on by default) each target's, gets a
    probe twice as wide; where any probe leaves >= 20 % less of its own SAE's variance unexplained
    (``min_reduction``), or the comparison finds the reference lacking features of its own activations
    (``featdiff.comparison.diagnostics.narrow_reference``), every SAE is trained again at twice ``d_sae``: an
    SAE narrower than the features cannot tell recombination from novelty (docs/metrics.md, "Widening").
    ``cmp.meta["width_check"]`` holds one entry per round: its ``d_sae``, seconds (``train_s``,
    ``score_s``, ``probe_s``, ``wall_s``), ``summary`` (every target's reuse, recombination, novelty and
    their raw values at that width), the check's numbers and its ``decision``; the HTML report shows them.
    Where the tables are at a wider width, ``cmp.meta["widened"]`` and a warning say so. ``widen=0`` keeps
    ``d_sae`` and checks nothing. ``method="finetune"``: the targets' SAEs and the replicas are the
    reference's SAE fine-tuned on their activations (``finetune``, a ``FinetuneConfig``), aligned by index
    (featdiff.comparison.finetune).

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
    check_int("compare_activations", "n_replicas", n_replicas, minimum=0)
    check_int("compare_activations", "widen", widen, minimum=0)  # rounds of doubling d_sae
    check_choice("method", method, ("saes", "finetune"), "compare_activations")
    reference = reference or ("base" if "base" in acts.names else acts.names[0])
    if reference not in acts.names:
        raise FeatdiffError(f"compare_activations: no checkpoint {reference!r}; the activations have {acts.names}.")
    train = acts
    if held_out is None:
        train, held_out = acts.split(eval_fraction, seed=seed)
    meta = {"method": method, "hook": acts.hook, "n_tokens": acts.n_tokens, "n_train_tokens": train.n_tokens, "seed": seed}
    ft = as_finetune_config(finetune)
    cmp = _train_and_compare(
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
        config=index_config(config) if method == "finetune" else config,
        train_kwargs=dict(train_kwargs or {}),
        progress=progress,
        device=device,
        fit_saes=finetune_fitter(reference, ft, train_saes) if method == "finetune" else train_saes,
        meta=meta,
        widen=widen,
    )
    finish_route(cmp, method, ft, config)  # the index check, or the seed-floor warning
    return cmp


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
    finetune: FinetuneConfig | dict | None = None,
) -> Comparison | None:
    """Everything in one call: load the checkpoints, collect paired activations, train (or take) the
    dictionaries, align them to the base's and score them.

    Parameters
    ----------
    base, rl, sft : model, path or name
        Whatever ``load_model`` takes. Any number of checkpoints can instead come as one mapping
        ``{"base": ..., "dpo": ..., ...}`` in ``base`` (the reference is ``"base"``, else the first entry).
    tokens : tensor (batch, seq), optional
        Token ids. Checkpoints from ``featdiff.lab`` carry their own prompts (and pad token) and need none.
    texts : path, list of str or TextCorpus, optional
        Text instead of ``tokens``: a ``.txt``, ``.jsonl`` or ``.parquet`` file, a ``datasets``
        ``save_to_disk`` folder, strings, or a ``featdiff.TextCorpus`` (text field, context length, packing,
        ``max_tokens``); tokenized with the reference's tokenizer, read chunk by chunk (docs/cli.md).
    hook : str, optional
        TransformerLens hook name; default the middle layer's residual stream.
    method : {"saes", "crosscoder", "finetune"}
        One SAE per checkpoint (plus ``n_replicas`` reference replicas), one crosscoder over all, or the
        reference's SAE fine-tuned on each checkpoint and aligned by index (docs/metrics.md, "The
        warm-started route").
    finetune : FinetuneConfig or dict, optional
        ``method="finetune"``: the fine-tuning's steps and learning rate (featdiff.comparison.finetune).
    saes : dict, optional
        Trained SAEs ``{checkpoint: SAE}`` to use instead of training them.
    d_sae, architecture, k, seed :
        The dictionaries' width, architecture ("topk", ...), active latents, seed (replicas: seed + 1, ...).
    n_replicas : int
        Reference SAEs trained with other seeds: the floors, intervals and the noise-floor correction
        (0: no corrected reading, only the ``*_raw`` columns; docs/metrics.md, "Naming").
    replicas : list or dict, optional
        With ``saes``: the replicas, a list of reference SAEs or ``{checkpoint: [SAEs]}``.
    eval_fraction : float
        The share of sequences held out for scoring.
    metrics : list, optional
        Registered metric names or callables (default: every registered metric).
    config : CompareConfig, optional
        Every scoring threshold (docs/design.md, "Where each threshold lives").
    train_kwargs : dict, optional
        Passed to ``train_saes`` / ``train_crosscoder`` (e.g. ``n_samples``, ``n_steps``).
    batch_size, pad_token_id, device :
        Collection batch size, padding token, torch device.
    progress : bool
        Show progress bars.
    distributed : bool
        Under ``torchrun``, share collection and training across ranks (docs/distributed.md); rank 0
        returns the Comparison, the other ranks None.
    activations_dir : path, optional
        Stream the activations to this folder and leave them there (read chunk by chunk afterwards).
    checkpoint_dir : path, optional
        Make the run resumable: stages save progress in its ``collect``, ``saes``, ``crosscoder``
        subfolders, and the same call after a kill continues (docs/long-runs.md).
    widen : int
        Rounds of a width check (SAE route, one process) that retrains every SAE at twice ``d_sae`` where
        a twice-wider SAE explains much more (``compare_activations``; ``config.width_check``); 0 skips it.

    Returns
    -------
    Comparison or None
        ``summary`` (one row per target), ``features`` (one row per target feature), ``meta``; None on
        ranks other than 0 under ``distributed=True``.

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
    >>> s = cmp.summary.loc["rl"]
    >>> bool(abs(s["transfer_fve"] - s["reference_fve"]) < 1e-12)  # same weights (equal up to rounding)
    True
    """
    check_choice("method", method, METHODS, "compare_checkpoints")
    specs = _checkpoint_specs(base, rl, sft)
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
        add_lm_quality(cmp, models, data, held_out, pad_token_id, progress)  # CE loss recovered, KL per checkpoint
        cmp.extras["unembeddings"] = {n: Unembedding.from_model(m) for n, m in models.items()}  # feature cards
        return cmp

    check_int("compare_checkpoints", "n_replicas", n_replicas, minimum=0)
    check_int("compare_checkpoints", "widen", widen, minimum=0)  # rounds of doubling d_sae
    ft = as_finetune_config(finetune)
    if method == "finetune" and (saes is not None or distributed):
        raise FeatdiffError(
            "compare_checkpoints(method='finetune') trains its own SAEs in one process; it takes no saes= and no "
            "distributed=True. To score SAEs you fine-tuned yourself, use compare_dictionaries(saes, acts, "
            "config=CompareConfig(method='index'))."
        )
    if saes is None:
        if replicas is not None:
            raise FeatdiffError("compare_checkpoints takes replicas= only with saes=; else pass n_replicas=.")
        skipped = None
        if distributed and widen:
            # the probe and the retraining would need every rank again after rank 0 scored: not built
            skipped = (
                f"compare_checkpoints(distributed=True) runs no width check (widen={widen} asked for one): the "
                f"tables are at d_sae {d_sae or 4 * train.d_model:,} whether or not that is too narrow for these "
                "activations. Check the width in one process (compare_activations on the activations, "
                "activations_dir=...) or pass widen=0 to keep d_sae without this warning."
            )
            if dist.is_main():
                warn(skipped)
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
            config=index_config(config) if method == "finetune" else config,
            train_kwargs={**stage_ckpt.get("saes", {}), **(train_kwargs or {})},
            progress=progress,
            device=device,
            fit_saes=finetune_fitter(reference, ft, train_saes) if method == "finetune" else fit_saes,
            meta=meta,
            widen=0 if distributed else widen,
            distributed=distributed,
        )
        if cmp is None:
            return None
        finish_route(cmp, method, ft, config)  # the index check, or the seed-floor warning
        if skipped:
            cmp.meta.setdefault("warnings", []).append(skipped)
            cmp.meta["width_check"] = [{"round": 0, "d_sae": cmp.meta["sae"]["d_sae"], "decision": "skipped: distributed=True"}]
    else:
        given = as_replicas(replicas, reference)
        load = lambda s: load_sae(s) if isinstance(s, (str, os.PathLike)) else s  # noqa: E731
        saes = {n: load(s) for n, s in saes.items()}
        replicas = {n: [load(s) for s in v] for n, v in given.items()}
        if distributed and not dist.is_main():
            return None
        cmp = _score(saes, replicas, held_out, reference, metrics, config, progress, meta)
    add_lm_quality(cmp, models, data, held_out, pad_token_id, progress)  # CE loss recovered, KL per SAE
    cmp.extras["unembeddings"] = {n: Unembedding.from_model(m) for n, m in models.items()}  # feature cards
    return cmp


