"""Warm-started dictionaries: copies of one SAE fine-tuned on other checkpoints' activations.

Two SAEs trained from scratch with different seeds share only part of their latents (on a real model as few
as 13-15 %; docs/metrics.md), so a comparison of independently trained SAEs reads mostly seed noise where
that share is low. ``finetune_saes`` starts every checkpoint's SAE from the reference's SAE and trains it
for ``FinetuneConfig.n_steps`` steps on that checkpoint's activations (Kissane et al. 2024; SAE-Track):
latent j then means the same before and after unless the data moved it, so the dictionaries are aligned
by index (``featdiff.alignment.matching.align(method="index")``). The base-vs-base floor is the reference's
SAE fine-tuned the same number of steps on the reference's own activations in another data order.
``method="finetune"`` of ``compare_checkpoints`` / ``compare_activations`` runs this route
(``featdiff.comparison.finetune``); docs/metrics.md, "The warm-started route", has its measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from featdiff.activations.activations import ActivationSet
from featdiff.core.config import Config, check_int, check_number
from featdiff.core.output import progress_bar
from featdiff.dictionaries.batched import PARAMS
from featdiff.dictionaries.sae import (
    SAETrainConfig,
    _cycle_batches,
    _LossHistory,
    _make_training_sae,
    _to_inference,
)
from featdiff.dictionaries.stats import firing_frequency
from featdiff.errors import FeatdiffError

if TYPE_CHECKING:
    from sae_lens import SAE

# fine-tuning steps of every warm-started SAE, its replicas' too (docs/metrics.md, "The warm-started route":
# the steps a replaced feature's latent needs to move to the new direction)
FINETUNE_STEPS = 500
# the fine-tuning learning rate (train_saes's from-scratch default is 1e-2)
FINETUNE_LR = 1e-3


@dataclass
class FinetuneConfig(Config):
    """How ``finetune_saes`` fine-tunes a copy of the reference SAE on each checkpoint's activations.

    ``n_steps`` optimiser steps (default ``FINETUNE_STEPS``) of ``batch_size`` rows at learning rate ``lr``
    (default ``FINETUNE_LR``; a fresh Adam), warmed up linearly over ``lr_warm_up_steps`` and decayed
    linearly to 0 over the last ``lr_decay_fraction`` of the steps; ``aux_loss_coefficient`` weighs the
    AuxK loss that moves dead latents toward what the others leave unreconstructed (a new feature's
    direction), and a latent is dead after ``dead_feature_window`` steps without firing (counted from the
    start of the fine-tuning). ``resample``: a latent that fired on the reference's activations and is dead
    on the checkpoint fine-tuned on is started again once, along the residual of a badly reconstructed
    token (Bricken et al. 2023's resampling): the base feature it held is gone there, and this frees it to
    learn a new one (sae-lens's AuxK alone turns it to the negated new direction, where it never fires). The
    same settings serve the targets and the reference replicas that measure the floor.

    Examples
    --------
    >>> cfg = FinetuneConfig(n_steps=200)
    >>> FinetuneConfig.from_dict(cfg.to_dict()) == cfg, cfg.lr
    (True, 0.001)
    """

    n_steps: int = FINETUNE_STEPS
    lr: float = FINETUNE_LR
    batch_size: int = 1024
    lr_warm_up_steps: int = 0
    lr_decay_fraction: float = 0.2
    aux_loss_coefficient: float = 1.0
    dead_feature_window: int = 50
    resample: bool = True

    def __post_init__(self) -> None:
        where = "FinetuneConfig"
        if not isinstance(self.resample, bool):
            raise FeatdiffError(f"The 'resample' parameter of {where} must be True or False; got {self.resample!r}.")
        for name in ("n_steps", "batch_size", "dead_feature_window"):
            check_int(where, name, getattr(self, name))
        check_int(where, "lr_warm_up_steps", self.lr_warm_up_steps, minimum=0)
        check_number(where, "lr", self.lr, 0, strict_low=True)
        check_number(where, "aux_loss_coefficient", self.aux_loss_coefficient, 0)
        check_number(where, "lr_decay_fraction", self.lr_decay_fraction, 0, 1, strict_high=True)


def as_finetune_config(config: FinetuneConfig | Mapping | None) -> FinetuneConfig:
    """``config`` as a FinetuneConfig (None: the defaults; a dict: its fields, unknown keys refused)."""
    if config is None:
        return FinetuneConfig()
    if isinstance(config, FinetuneConfig):
        return config
    if isinstance(config, Mapping):
        return FinetuneConfig.from_dict(dict(config))
    raise FeatdiffError(f"finetune= must be a FinetuneConfig, a dict or None; got {type(config).__name__}.")


def _trainer(sae, cfg: FinetuneConfig, steps: int, batch_size: int, scale: float | None, key: str, hook, dev):
    """A sae-lens SAETrainer whose training SAE starts as ``sae`` (an inference TopK SAE in input units),
    unfolded into the units it trains in (inputs times ``scale``): the same function at step 0."""
    from sae_lens.config import SAETrainerConfig  # deferred: sae-lens ~10 s to import
    from sae_lens.training.sae_trainer import SAETrainer  # deferred: sae-lens ~10 s to import

    d_sae, d_in = sae.W_dec.shape
    train_cfg = SAETrainConfig(
        architecture="topk", d_sae=d_sae, k=int(sae.cfg.k), aux_loss_coefficient=cfg.aux_loss_coefficient,
        n_steps=steps, dead_feature_window=cfg.dead_feature_window,
    )  # fmt: skip
    tsae = _make_training_sae(train_cfg, d_in, d_sae, int(sae.cfg.k), key, 0, hook)
    s = 1.0 if scale is None else scale
    with torch.no_grad():
        for name in PARAMS:
            getattr(tsae, name).copy_(getattr(sae, name).detach().float())
        tsae.W_enc /= s
        tsae.W_dec *= s
        tsae.b_dec *= s
    tsae = tsae.to(dev)
    decay = int(cfg.lr_decay_fraction * steps)
    warm = min(cfg.lr_warm_up_steps, max(0, steps - decay - 1))
    warm = warm if warm >= 2 else 0  # sae-lens's linear warm-up needs at least 2 steps
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=cfg.lr,
        lr_end=cfg.lr, lr_scheduler_name="constant", lr_warm_up_steps=warm, lr_decay_steps=decay,
        dead_feature_window=cfg.dead_feature_window, feature_sampling_window=steps + 1, device=str(dev),
    )  # fmt: skip
    trainer = SAETrainer(cfg=trainer_cfg, sae=tsae, data_provider=iter(()))
    if scale is not None:
        tsae.cfg.normalize_activations = "expected_average_only_in"
        trainer.activation_scaler.scaling_factor = scale
    return trainer, steps - decay


def _resample(trainer, out, eligible: torch.Tensor, done: torch.Tensor, gen: torch.Generator) -> None:
    """Start again, once, each ``eligible`` latent that sae-lens now counts as dead: its decoder row along the
    residual of a token of this batch drawn in proportion to its squared error, its encoder column along it
    at 0.2 of the mean live encoder norm, its bias 0 and its Adam moments cleared (Bricken et al. 2023)."""
    dead = torch.nonzero(trainer.dead_neurons & eligible).flatten()
    if not len(dead):
        return
    sae = trainer.sae
    with torch.no_grad():
        residual = (out.sae_in - out.sae_out).detach().float()
        weight = residual.pow(2).sum(1).cpu()
        if not float(weight.sum()) > 0:
            return
        pick = torch.multinomial(weight, len(dead), replacement=True, generator=gen)
        direction = torch.nn.functional.normalize(residual[pick.to(residual.device)], dim=1)
        live = ~trainer.dead_neurons
        enc_norm = sae.W_enc[:, live].norm(dim=0).mean() if live.any() else sae.W_enc.norm(dim=0).mean()
        dec_norm = sae.W_dec[live].norm(dim=1).mean() if live.any() else sae.W_dec.norm(dim=1).mean()
        sae.W_dec[dead] = direction * dec_norm
        sae.W_enc[:, dead] = direction.T * 0.2 * enc_norm
        sae.b_enc[dead] = 0.0
        for param, index in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
            state = trainer.optimizer.state.get(param, {})
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in state:
                    state[moment][index] = 0.0
        trainer.n_forward_passes_since_fired[dead] = 0
        done[dead] = True


def finetune_saes(
    sae,
    acts: ActivationSet,
    jobs: Mapping[str, tuple[str, int]],
    config: FinetuneConfig | Mapping | None = None,
    reference: str = "base",
    progress: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, SAE]:
    """Fine-tune a copy of ``sae`` (an inference TopK SAE, e.g. from ``train_saes``) for each job.

    ``jobs`` maps output keys to ``(checkpoint, seed)``: the copy trains ``config.n_steps`` steps on that
    checkpoint's column of ``acts``, its batches in the order ``seed`` gives (``train_saes``'s order), so a
    copy fine-tuned on the reference's own activations with another seed is a replica of the same length.
    Jobs that share a seed are stepped on the same batches, in one pass. Inputs are rescaled to mean norm
    sqrt(d_in) while training (as ``train_saes`` does). With ``config.resample``, a latent that fires on
    ``reference``'s activations and dies on a job's checkpoint is started again once (``FinetuneConfig``). Returns
    ``{key: sae_lens.SAE}`` inference SAEs on the CPU in eval mode with unit decoder rows, each with its
    loss record in ``featdiff_train`` (read by featdiff.comparison.diagnostics).

    Examples
    --------
    >>> import torch
    >>> from featdiff.dictionaries.sae import train_saes
    >>> x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    >>> acts = ActivationSet.from_tensors({"base": x, "rl": x + 0.1})
    >>> base = train_saes(acts, k=2, n_steps=20, batch_size=128, names=["base"], progress=False)["base"]
    >>> out = finetune_saes(base, acts, {"rl": ("rl", 0), "base replica": ("base", 1)},
    ...                     FinetuneConfig(n_steps=10, batch_size=128), progress=False)
    >>> sorted(out), out["rl"].W_dec.shape == base.W_dec.shape
    (['base replica', 'rl'], True)
    """
    cfg = as_finetune_config(config)
    arch = sae.cfg.architecture() if callable(getattr(sae.cfg, "architecture", None)) else None
    if arch != "topk":
        raise FeatdiffError(
            f"finetune_saes fine-tunes topk SAEs; got a {arch!r} SAE. Train the reference with "
            "architecture='topk', or compare independently trained SAEs (method='saes')."
        )
    if sae.W_dec.shape[1] != acts.d_model:
        raise FeatdiffError(
            f"finetune_saes: the SAE has d_in={sae.W_dec.shape[1]} but the activations d_model={acts.d_model}."
        )
    for key, spec in jobs.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] in acts and isinstance(spec[1], int)):
            raise FeatdiffError(
                f"jobs[{key!r}] must be (checkpoint, seed) with a checkpoint among {acts.names} and an int "
                f"seed; got {spec!r}."
            )
    dev = torch.device("cpu" if device is None else device)
    batch_size = min(cfg.batch_size, acts.n_tokens)
    d_in = acts.d_model
    trainers, decay_start, history = {}, {}, {}
    for key, (ckpt, _) in jobs.items():
        scale = (d_in**0.5) / max(acts.row_norm_mean(ckpt), 1e-12)
        trainers[key], decay_start[key] = _trainer(sae, cfg, cfg.n_steps, batch_size, scale, key, acts.hook, dev)
        history[key] = _LossHistory()
    # latents that fire on the reference's activations: where one dies on a checkpoint, it is resampled
    eligible = None
    if cfg.resample and jobs:
        reference_column = acts.column(reference) if reference in acts else None
        if reference_column is not None:
            eligible = (firing_frequency(sae, reference_column) > 0).to(dev)
    resampled = {k: torch.zeros(sae.W_dec.shape[0], dtype=torch.bool, device=dev) for k in jobs}
    groups: dict[int, list[str]] = {}
    for key, (_, seed) in jobs.items():
        groups.setdefault(seed, []).append(key)
    total = cfg.n_steps * len(groups)
    with progress_bar(total=total, desc=f"finetune_saes ({len(jobs)} SAEs)", disable=not progress) as bar:
        for seed, keys in groups.items():
            ckpts = sorted({jobs[k][0] for k in keys})
            batches = _cycle_batches(acts, ckpts, batch_size, seed)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(cfg.n_steps):
                batch = next(batches)
                for k in keys:
                    out = trainers[k].step(batch[jobs[k][0]].to(dev))
                    trainers[k].n_training_steps += 1
                    history[k].add(out)
                    if eligible is not None:
                        _resample(trainers[k], out, eligible & ~resampled[k], resampled[k], gen)
                bar.update(1)
    result: dict[str, Any] = {}
    for key, trainer in trainers.items():
        tsae = trainer.sae
        if trainer.activation_scaler.scaling_factor is not None:
            tsae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
            trainer.activation_scaler.scaling_factor = None
        result[key] = _to_inference(tsae)
        record = history[key].record(trainer, cfg.n_steps, batch_size, decay_start[key])
        result[key].featdiff_train = {**record, "finetuned_from": "reference", "finetune": cfg.to_dict()}
    return result
