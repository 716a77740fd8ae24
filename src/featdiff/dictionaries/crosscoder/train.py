"""Training a crosscoder (``train_crosscoder``): initialisation from the data, the BatchTopK or L1 loss with
the auxiliary loss that revives dead latents, resumable runs, and the run's health (``cc.diagnostics``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.core.output import progress_bar
from featdiff.core.runstate import RunCheckpoint, data_fingerprint, load_run_state, save_run_state
from featdiff.dictionaries.crosscoder.config import CrosscoderConfig
from featdiff.dictionaries.crosscoder.model import Crosscoder, as_acts, stack
from featdiff.dictionaries.health import dead_latents, training_health, warn_training_health
from featdiff.errors import FeatdiffError


def train_crosscoder(
    acts: ActivationSet,
    d_sae: int | None = None,
    sparsity: str | None = None,
    k: int | None = None,
    seed: int | None = None,
    config: CrosscoderConfig | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    keep_checkpoint: bool = True,
    data_parallel=None,
    **overrides,
) -> Crosscoder:
    """Train one crosscoder on paired activations of every checkpoint in ``acts`` (in ``acts.names`` order).

    Without ``config`` the settings are ``d_sae`` (default 8 * d_in), ``sparsity`` (default "batchtopk"),
    ``k`` (default ``default_crosscoder_k(d_in, d_sae)``), ``lr`` (default ``default_crosscoder_lr(d_in)``),
    ``seed`` (default 0) and any CrosscoderConfig
    field passed as a keyword (``lr=1e-3``, ``n_samples=200_000``...). With ``config``, the config supplies
    every setting, arguments and keywords that are given still override it, and its ``names`` pick (and
    order) the checkpoints of ``acts``. The run length is ``n_steps`` if set, else ``n_epochs`` passes over
    the tokens if set, else ``n_samples`` rows (default 500,000; the data is cycled), as in
    ``train_saes``. The same seed gives identical weights.

    ``cc.diagnostics`` says how the run went: ``n_steps``, ``n_samples``, ``final_loss``,
    ``loss_settling`` (see ``loss_settling``), ``loss_settled``, ``dead_fraction``, ``n_dead``,
    ``n_eval_tokens``. A ``FeatdiffWarning`` says when the loss had not settled or more than
    ``max_dead_fraction`` of the latents are dead.

    ``device`` (default the CPU) is where it trains, e.g. "cuda"; each batch is moved there. The result
    is on the CPU in eval mode, with ``norm_scale`` and the inference threshold set.
    ``data_parallel`` (a ``featdiff.distributed.DataParallel``, under torchrun) trains each rank on its share
    of every batch with the batch-wide top-k and all-reduced gradients; ``featdiff.distributed`` passes it.

    ``checkpoint_dir`` makes the run resumable, as in ``train_saes``: every ``checkpoint_every`` steps (and
    at the end) the weights, optimizer state, dead-latent counters, losses and RNG state are saved there;
    the same call after a kill continues from the last save to the weights of an uninterrupted run.
    ``keep_checkpoint=False`` removes featdiff's checkpoint files after success.

    Examples
    --------
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(256, 8), "rl": torch.randn(256, 8)})
    >>> cc = train_crosscoder(acts, d_sae=16, k=2, n_steps=5, batch_size=64, progress=False)
    >>> cc.names, tuple(cc.W_dec.shape), list(cc.evaluate(acts).columns)
    (['base', 'rl'], (2, 16, 8), ['checkpoint', 'fve', 'mse', 'l0', 'dead_fraction'])
    """

    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(
            f"train_crosscoder needs an ActivationSet; got {type(acts).__name__}. "
            "Wrap tensors with ActivationSet.from_tensors({name: X})."
        )
    if acts.n_tokens < 2:
        raise FeatdiffError(
            f"train_crosscoder needs at least 2 tokens; the ActivationSet has {acts.n_tokens}."
        )
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise FeatdiffError(
            f"train_crosscoder: bad device {device!r} ({e}); use e.g. 'cpu' or 'cuda'."
        ) from None
    given = {"d_sae": d_sae, "sparsity": sparsity, "k": k, "seed": seed}
    given = {key: v for key, v in given.items() if v is not None}
    if config is None:
        base = {
            "names": acts.names,
            "d_in": acts.d_model,
            "d_sae": 8 * acts.d_model,
            "sparsity": "batchtopk",
            "seed": 0,
            "hook": acts.hook,
        }
    else:
        if not isinstance(config, CrosscoderConfig):
            raise FeatdiffError(f"config must be a CrosscoderConfig; got {type(config).__name__}.")
        base = config.to_dict()
    base.update(given)
    base.update(overrides)
    cfg = CrosscoderConfig.from_dict(base)
    acts = as_acts(acts, cfg.names)
    if acts.d_model != cfg.d_in:
        raise FeatdiffError(
            f"The config says d_in={cfg.d_in} but the activations have d_model={acts.d_model}."
        )
    if acts.names != cfg.names:
        acts = acts.select(cfg.names)

    g = torch.Generator().manual_seed(cfg.seed)
    cc = Crosscoder(cfg, generator=g)
    _init_from_data(cc, acts)
    cc.to(dev)

    n_steps = cfg.n_steps_for(acts.n_tokens)
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    decay_start = int(n_steps * (1 - cfg.lr_decay_fraction))
    warmup = max(1, int(n_steps * cfg.l1_warmup_fraction))
    since_fired = torch.zeros(cfg.d_sae, device=dev)
    aux_k = cfg.aux_k or max(1, cfg.d_in // 2)

    def batches(start: int):
        # the order is a function of the seed and the epoch: a resumed run skips to batch ``start``
        epoch, skip = divmod(start, max(1, acts.n_tokens // cfg.batch_size))
        while True:
            for b in acts.batches(
                cfg.batch_size, shuffle=True, seed=cfg.seed * 100003 + epoch, names=cfg.names
            ):
                if b[cfg.names[0]].shape[0] == cfg.batch_size or acts.n_tokens < cfg.batch_size:
                    if skip:
                        skip -= 1
                        continue
                    yield stack(b, cfg.names)
            epoch += 1

    losses = torch.zeros(n_steps)
    state = {"smoothed": None}
    run_ckpt, start = None, 0
    if checkpoint_dir is not None:
        settings = {"config": cfg.to_dict(), "n_tokens": acts.n_tokens, "data": data_fingerprint(acts, cfg.names)}
        run_ckpt = RunCheckpoint(checkpoint_dir, "train_crosscoder", settings, checkpoint_every, n_steps)
        start = run_ckpt.resume(lambda folder: _load_run_state(folder, cc, opt, since_fired, losses, state))
    it = batches(start)
    bar = progress_bar(
        range(start, n_steps), total=n_steps, initial=start, desc="crosscoder", disable=not progress, leave=False
    )
    for step in bar:
        if step >= decay_start and n_steps > decay_start:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (n_steps - step) / (n_steps - decay_start)
        x = next(it) if data_parallel is None else data_parallel.share(next(it))
        x = cc._normalise(x.to(dev))
        loss, parts = _loss(cc, x, step, warmup, since_fired, aux_k, data_parallel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if data_parallel is not None:
            parts["mse"] = data_parallel.reduce_gradients(cc.parameters(), parts["mse"])
        opt.step()
        losses[step] = parts["mse"]
        # the bar shows an exponential moving average of the reconstruction loss it trains on
        smoothed = state["smoothed"]
        state["smoothed"] = smoothed = parts["mse"] if smoothed is None else 0.95 * smoothed + 0.05 * parts["mse"]
        if progress and (step % 50 == 0 or step == n_steps - 1):
            bar.set_postfix(mse=f"{smoothed:.4g}")
        if run_ckpt is not None:
            run_ckpt.step_done(
                step + 1, lambda folder: _save_run_state(folder, cc, opt, since_fired, losses, state)
            )
    cc = cc.cpu().eval()
    cc.diagnostics = _diagnose(cc, acts, losses)
    warn_training_health(
        cc.diagnostics,
        "train_crosscoder",
        settle_window=cfg.settle_window,
        settle_tolerance=cfg.settle_tolerance,
        max_dead_fraction=cfg.max_dead_fraction,
        d_sae=cfg.d_sae,
        revive="lower dead_steps_threshold so the auxiliary loss revives them sooner",
    )
    if run_ckpt is not None and not keep_checkpoint:
        run_ckpt.clear()
    return cc


def _save_run_state(folder: Path, cc: Crosscoder, opt, since_fired: Tensor, losses: Tensor, state: dict) -> None:
    """What a resumed ``train_crosscoder`` needs: weights and buffers, optimizer, counters, losses, RNG."""
    extra = {"optimizer": opt.state_dict(), "since_fired": since_fired, "losses": losses, "smoothed": state["smoothed"]}
    save_run_state(folder, {"crosscoder": cc.state_dict()}, extra)


def _load_run_state(folder: Path, cc: Crosscoder, opt, since_fired: Tensor, losses: Tensor, state: dict) -> None:
    weights, saved = load_run_state(folder, ["crosscoder"])
    cc.load_state_dict(weights["crosscoder"])
    opt.load_state_dict(saved["optimizer"])
    since_fired.copy_(saved["since_fired"])
    losses.copy_(saved["losses"])
    state["smoothed"] = saved["smoothed"]


@torch.no_grad()
def _diagnose(cc: Crosscoder, acts: ActivationSet, losses: Tensor, max_tokens: int = 1 << 18) -> dict:
    """``training_health`` of the run: the loss judged over the constant-lr phase (during the final decay the
    loss falls because the lr anneals), dead latents on the first ``max_tokens`` training tokens."""
    cfg = cc.cfg
    sub = acts if acts.n_tokens <= max_tokens else acts.subset(slice(0, max_tokens))
    codes = (cc.encode(stack(b, cc.names)) for b in sub.batches(4096, shuffle=False, names=cc.names))
    return training_health(
        losses,
        dead_latents(codes, cc.d_sae),
        batch_size=min(cfg.batch_size, acts.n_tokens),
        lr_decay_fraction=cfg.lr_decay_fraction,
        settle_window=cfg.settle_window,
        settle_tolerance=cfg.settle_tolerance,
        n_eval_tokens=sub.n_tokens,
    )


@torch.no_grad()
def _init_from_data(cc: Crosscoder, acts: ActivationSet) -> None:
    """Estimate norm_scale (E||s_m a^m||^2 = d_in) and start b_dec at the mean normalised activation."""
    sumsq = torch.zeros(cc.n_models, dtype=torch.float64)
    total = torch.zeros(cc.n_models, cc.d_in, dtype=torch.float64)
    for b in acts.batches(65536, shuffle=False, names=cc.names):
        x = stack(b, cc.names).double()
        sumsq += x.pow(2).sum((0, 2))
        total += x.sum(0)
    n = acts.n_tokens
    if cc.cfg.normalise:
        mean_sq = (sumsq / n).clamp(min=1e-12)
        cc.norm_scale.copy_((cc.d_in / mean_sq).sqrt().float())
    cc.b_dec.copy_((total / n).float() * cc.norm_scale[:, None])


def _loss(cc: Crosscoder, x: Tensor, step: int, warmup: int, since_fired: Tensor, aux_k: int, data_parallel=None):
    """Training loss on normalised activations x: squared error summed over checkpoints and d_in (with
    ``data_parallel``, x is this rank's share of the batch and the batch top-k spans the ranks)."""
    cfg = cc.cfg
    pre = cc._pre(x)
    acts = torch.relu(pre)
    if cfg.sparsity == "batchtopk":
        f, min_kept = cc._batchtopk(acts, data_parallel)
    else:
        f, min_kept = acts, None
    x_hat = torch.einsum("bs,msd->bmd", f, cc.W_dec) + cc.b_dec
    residual = x - x_hat
    mse = residual.pow(2).sum((1, 2)).mean()
    parts = {"mse": float(mse.detach())}
    loss = mse
    with torch.no_grad():
        fired = (f > 0).any(0)
        if data_parallel is not None:
            fired = data_parallel.any(fired)
        since_fired += 1
        since_fired[fired] = 0
    if cfg.sparsity == "l1":
        lam = cfg.l1_coefficient * min(1.0, (step + 1) / warmup)
        l1 = (f * cc._weighted_norms()).sum(-1).mean()
        loss = loss + lam * l1
        parts["l1"] = float(l1.detach())
    else:
        with torch.no_grad():
            if cc.threshold < 0:
                cc.threshold.copy_(min_kept)
            else:
                mom = cfg.threshold_momentum
                cc.threshold.mul_(mom).add_((1 - mom) * min_kept)
        dead = since_fired > cfg.dead_steps_threshold
        n_dead = int(dead.sum())
        if n_dead > 0 and cfg.aux_k_coefficient > 0:
            k_aux = min(aux_k, n_dead)
            scale = min(n_dead / aux_k, 1.0)
            dead_pre = torch.where(dead[None], acts, torch.full_like(acts, -torch.inf))
            top = dead_pre.topk(k_aux, dim=-1, sorted=False)
            aux_f = torch.zeros_like(acts).scatter(-1, top.indices, top.values.clamp(min=0))
            aux_hat = torch.einsum("bs,msd->bmd", aux_f, cc.W_dec)
            aux = (aux_hat - residual.detach()).pow(2).sum((1, 2)).mean()
            loss = loss + cfg.aux_k_coefficient * scale * aux
            parts["aux"] = float(aux.detach())
    return loss, parts
