"""One sparse autoencoder per checkpoint, trained, stored and read with sae-lens.

``train_saes`` trains sae-lens training SAEs (``TopKTrainingSAE`` and friends) with sae-lens's own
``SAETrainer`` steps and losses; every SAE (one per checkpoint, plus any ``extra`` replicas with other
seeds) is stepped on each batch of paired rows, so the activations are read once. It returns sae-lens
inference ``SAE`` objects in eval mode whose decoder rows have unit norm (sae-lens's ``fold_W_dec_norm``
is applied), so feature activations are in the units of the input. ``save_sae`` / ``load_sae``
(``featdiff.dictionaries.formats``) use sae-lens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.activations.activations import ActivationSet
from featdiff.core.config import Config, check_int, check_number, run_steps
from featdiff.core.output import progress_bar
from featdiff.core.runstate import RunCheckpoint, data_fingerprint, load_run_state, save_run_state
from featdiff.dictionaries.batched import BatchedTopK
from featdiff.errors import FeatdiffError, check_choice

if TYPE_CHECKING:
    from sae_lens import SAE

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "standard")
"""Architectures ``train_saes`` trains (sae-lens names). batchtopk SAEs come back as jumprelu SAEs."""

DICTIONARY_ARCHITECTURES = ("topk", "standard", "jumprelu")
"""Architectures ``sae_from_dictionary`` builds."""

ENGINES = ("auto", "batched", "sae-lens")
"""How ``train_saes`` steps the SAEs: all topk SAEs as one module ("batched":
``featdiff.dictionaries.batched``, the same step with a sparse decode), or sae-lens's ``SAETrainer`` per SAE
("sae-lens", the reference); "auto" is "batched" for topk SAEs and "sae-lens" for the other architectures."""


def resolve_engine(engine: str, architecture: str) -> str:
    """The engine ``train_saes`` runs for an ``SAETrainConfig.engine`` and architecture ("auto" resolved).

    Examples
    --------
    >>> resolve_engine("auto", "topk"), resolve_engine("auto", "jumprelu"), resolve_engine("sae-lens", "topk")
    ('batched', 'sae-lens', 'sae-lens')
    """
    if engine == "auto":
        return "batched" if architecture == "topk" else "sae-lens"
    return engine


def default_k(d_in: int) -> int:
    """The default number of active latents of a (batch)TopK SAE: ``max(1, d_in // 8)``.

    Examples
    --------
    >>> default_k(64), default_k(512), default_k(4)
    (8, 64, 1)
    """
    return max(1, d_in // 8)


@dataclass
class SAETrainConfig(Config):
    """How ``train_saes`` trains: architecture, size, optimiser, run length and sparsity settings.

    Run length: ``n_steps`` if set, else ``n_epochs`` passes over the tokens if set, else ``n_samples``
    rows (the data is cycled, reshuffled each epoch). ``d_sae=None`` means ``4 * d_in``; ``k=None``
    means ``default_k(d_in)`` (topk, batchtopk; ignored by the others). ``l1_coefficient`` weighs the
    L1 penalty of "standard" SAEs, ``l0_coefficient`` the L0 penalty of "jumprelu" SAEs;
    ``aux_loss_coefficient`` weighs the AuxK loss that revives dead (batch)TopK latents; a latent is
    dead after ``dead_feature_window`` steps without firing. ``normalize_activations`` rescales the
    inputs to mean norm ``sqrt(d_in)`` while training (sae-lens's "expected_average_only_in"; folded
    into the weights afterwards). The learning rate warms up linearly for ``lr_warm_up_steps`` and
    decays linearly to 0 over the last ``lr_decay_fraction`` of the steps. ``engine`` is "batched" (topk
    only: every SAE in one module with a sparse decode; sae-lens's step up to the order of float sums, and
    faster: docs/scale.md), "sae-lens" (each SAE stepped by its sae-lens ``SAETrainer``: the reference) or
    "auto" (the default: "batched" for topk, "sae-lens" for the other architectures).

    Examples
    --------
    >>> cfg = SAETrainConfig(architecture="topk", k=4, n_samples=10_000)
    >>> SAETrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.n_steps_for(n_tokens=1000)
    10
    """

    architecture: str = "topk"
    d_sae: int | None = None
    k: float | None = None
    lr: float = 1e-2
    batch_size: int = 1024
    n_samples: int | None = 1_000_000
    n_epochs: float | None = None
    n_steps: int | None = None
    lr_warm_up_steps: int = 0
    lr_decay_fraction: float = 0.2
    l1_coefficient: float = 2.0
    l0_coefficient: float = 2.0
    aux_loss_coefficient: float = 1.0
    dead_feature_window: int = 100
    normalize_activations: bool = True
    decoder_init_norm: float | None = 0.1
    engine: str = "auto"

    def __post_init__(self) -> None:
        check_choice("architecture", self.architecture, ARCHITECTURES, "SAETrainConfig")
        check_choice("engine", self.engine, ENGINES, "SAETrainConfig")
        if self.engine == "batched" and self.architecture != "topk":
            raise FeatdiffError(
                f"engine='batched' trains topk SAEs; for architecture={self.architecture!r} use engine='sae-lens'."
            )
        where = "SAETrainConfig"
        for name in ("d_sae", "n_samples", "n_steps"):
            check_int(where, name, getattr(self, name), optional=True)
        for name in ("batch_size", "dead_feature_window"):
            check_int(where, name, getattr(self, name))
        check_int(where, "lr_warm_up_steps", self.lr_warm_up_steps, minimum=0)
        check_number(where, "lr", self.lr, 0, strict_low=True)
        for name in ("k", "n_epochs", "decoder_init_norm"):
            check_number(where, name, getattr(self, name), 0, strict_low=True, optional=True)
        for name in ("l1_coefficient", "l0_coefficient", "aux_loss_coefficient"):
            check_number(where, name, getattr(self, name), 0)
        check_number(where, "lr_decay_fraction", self.lr_decay_fraction, 0, 1, strict_high=True)
        if self.architecture == "topk" and self.k is not None and int(self.k) != self.k:
            raise FeatdiffError(f"A topk SAE needs an integer k; got {self.k!r} (batchtopk takes a mean k).")
        if self.n_samples is None and self.n_epochs is None and self.n_steps is None:
            raise FeatdiffError("SAETrainConfig needs a run length: set n_samples, n_epochs or n_steps.")

    def n_steps_for(self, n_tokens: int) -> int:
        """Optimiser steps this config runs on ``n_tokens`` training rows."""
        return run_steps(self.n_steps, self.n_epochs, self.n_samples, self.batch_size, n_tokens)


def _resolve_config(config, explicit: dict[str, Any], overrides: dict[str, Any]) -> SAETrainConfig:
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, SAETrainConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = SAETrainConfig.from_dict(config).to_dict()
    else:
        raise FeatdiffError(
            f"The 'config' parameter of train_saes must be an SAETrainConfig, a dict or None; got {type(config).__name__}."
        )
    allowed = [f.name for f in fields(SAETrainConfig)]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise FeatdiffError(f"Unknown train_saes options {unknown}; allowed options are {allowed}.")
    base.update(overrides)
    base.update({k: v for k, v in explicit.items() if v is not None})
    return SAETrainConfig(**base)


def _init_seed(checkpoint: str, seed: int) -> int:
    """A deterministic seed per (checkpoint, seed), so every SAE starts from its own initialisation."""
    digest = hashlib.sha256(f"featdiff-sae:{checkpoint}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def _make_training_sae(
    cfg: SAETrainConfig, d_in: int, d_sae: int, k: float, checkpoint: str, seed: int, hook
):
    from sae_lens.registry import get_sae_training_class  # deferred: sae-lens ~10 s to import
    from sae_lens.saes.sae import SAEMetadata  # deferred: sae-lens ~10 s to import

    sae_cls, cfg_cls = get_sae_training_class(cfg.architecture)
    arch: dict[str, Any] = {}
    if cfg.architecture in ("topk", "batchtopk"):
        arch = {
            "k": int(k) if cfg.architecture == "topk" else float(k),
            "aux_loss_coefficient": cfg.aux_loss_coefficient,
        }
    elif cfg.architecture == "standard":
        arch = {"l1_coefficient": cfg.l1_coefficient}
    elif cfg.architecture == "jumprelu":
        arch = {"l0_coefficient": cfg.l0_coefficient}
    meta = SAEMetadata(model_name=checkpoint, hook_name=hook, featdiff_seed=seed)
    sae_cfg = cfg_cls(d_in=d_in, d_sae=d_sae, decoder_init_norm=cfg.decoder_init_norm, metadata=meta, **arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_init_seed(checkpoint, seed))
        return sae_cls(sae_cfg)


def _to_inference(training_sae) -> SAE:
    """The inference SAE sae-lens would save (``save_inference_model``), in memory, with unit decoder rows."""
    from sae_lens import SAE  # deferred: sae-lens ~10 s to import

    state = {k: v.detach().clone() for k, v in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    cfg = {**training_sae.cfg.get_inference_sae_cfg_dict(), "device": "cpu"}
    sae = SAE.from_dict(cfg)
    sae.load_state_dict({k: v.cpu() for k, v in state.items()})
    sae.fold_W_dec_norm()
    return sae.eval()


def _cycle_batches(
    acts: ActivationSet, names: list[str], batch_size: int, seed: int, start: int = 0
) -> Iterator[dict[str, Tensor]]:
    """Full batches of paired rows forever, reshuffled every epoch (a short last batch is dropped); from
    batch ``start`` on (a resumed run: the order is a function of ``seed`` and the epoch)."""
    epoch, skip = divmod(start, acts.n_tokens // batch_size)
    while True:
        for batch in acts.batches(batch_size, shuffle=True, seed=seed + 1_000_003 * epoch, names=names):
            if next(iter(batch.values())).shape[0] == batch_size:
                if skip:
                    skip -= 1
                    continue
                yield batch
        epoch += 1


def train_saes(
    acts: ActivationSet,
    d_sae: int | None = None,
    architecture: str | None = None,
    k: float | None = None,
    seed: int = 0,
    names: list[str] | None = None,
    extra: Mapping[str, tuple[str, int]] | None = None,
    config: SAETrainConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    keep_checkpoint: bool = True,
    **overrides: Any,
) -> dict[str, SAE]:
    """Train one sae-lens SAE per checkpoint of ``acts``, all in one pass over the data.

    ``architecture`` is "topk" (default), "batchtopk", "jumprelu" or "standard" (ReLU + L1); ``d_sae``
    defaults to ``4 * d_in`` and ``k`` to ``default_k(d_in)``. ``config`` (an ``SAETrainConfig`` or its
    dict) and keyword ``overrides`` (its field names, e.g. ``lr=3e-3, n_samples=200_000``) set the rest;
    explicit arguments win over ``config``. ``names`` picks checkpoints (default: all). ``extra`` maps
    further output keys to ``(checkpoint, seed)``: ``{"base_seed1": ("base", 1)}`` trains a second base
    SAE from another initialisation in the same pass (the noise floor). Every SAE's initialisation is
    seeded by its (checkpoint, seed) and the data order by ``seed``, so the same call gives identical
    weights, and an SAE does not depend on which others are trained beside it (bit for bit with
    ``engine="sae-lens"``; up to the order of float sums, 1e-6 on tests/test_sae.py's run, with the batched
    engine).

    ``device`` (default the CPU) is where the SAEs train, e.g. "cuda"; the activations stay where they are
    and each batch is moved there. Returns ``{key: sae_lens.SAE}`` inference SAEs on the CPU in eval mode,
    decoder rows of unit norm (batchtopk SAEs come back as sae-lens "jumprelu" SAEs, as sae-lens saves
    them).

    ``checkpoint_dir`` makes the run resumable: every ``checkpoint_every`` steps (and at the end) it saves
    each SAE's weights and sae-lens trainer state (optimizer, lr scheduler, step counters, activation
    scaler, dead-latent counters), the loss history and the RNG state there (see ``featdiff.core.runstate``);
    the same call after a kill continues from the last save and gives the weights of an uninterrupted run.
    A checkpoint of a call with other settings is refused. ``keep_checkpoint=False`` removes featdiff's
    checkpoint files after success; nothing else in the folder is touched.

    Examples
    --------
    >>> import torch
    >>> from featdiff.activations import ActivationSet
    >>> acts = ActivationSet.from_tensors({"base": torch.randn(512, 8), "rl": torch.randn(512, 8)})
    >>> saes = train_saes(acts, k=2, n_steps=20, batch_size=128, extra={"base_seed1": ("base", 1)},
    ...                   progress=False)
    >>> sorted(saes), saes["rl"].cfg.d_sae, saes["rl"].cfg.architecture()
    (['base', 'base_seed1', 'rl'], 32, 'topk')
    >>> saes["rl"].W_dec.norm(dim=1).allclose(torch.ones(32))
    True
    """
    from sae_lens.config import SAETrainerConfig  # deferred: sae-lens ~10 s to import
    from sae_lens.training.sae_trainer import SAETrainer  # deferred: sae-lens ~10 s to import

    if not isinstance(acts, ActivationSet):
        raise FeatdiffError(
            f"train_saes needs an ActivationSet; got {type(acts).__name__}. "
            "Wrap tensors with ActivationSet.from_tensors({'base': X0, 'rl': X1})."
        )
    if acts.n_tokens < 2:
        raise FeatdiffError(f"train_saes needs at least 2 tokens; the ActivationSet has {acts.n_tokens}.")
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise FeatdiffError(f"train_saes: bad device {device!r} ({e}); use e.g. 'cpu' or 'cuda'.") from None
    cfg = _resolve_config(config, {"d_sae": d_sae, "architecture": architecture, "k": k}, overrides)
    names = acts.names if names is None else list(names)
    for n in names:
        if n not in acts:
            raise FeatdiffError(
                f"train_saes: no checkpoint named {n!r} in the activations; they have {acts.names}."
            )
    plan: dict[str, tuple[str, int]] = {n: (n, seed) for n in names}
    for key, spec in (extra or {}).items():
        if key in plan:
            raise FeatdiffError(
                f"The extra SAE key {key!r} clashes with a checkpoint name; pick another key."
            )
        if not (
            isinstance(spec, (tuple, list))
            and len(spec) == 2
            and spec[0] in acts
            and isinstance(spec[1], int)
        ):
            raise FeatdiffError(
                f"extra[{key!r}] must be (checkpoint, seed) with a checkpoint among {acts.names} and an int seed; "
                f"got {spec!r}."
            )
        plan[key] = (spec[0], spec[1])
    if not plan:
        raise FeatdiffError("train_saes has nothing to train: names is empty and extra is empty.")

    d_in = acts.d_model
    d_sae_ = cfg.d_sae or 4 * d_in
    k_ = cfg.k if cfg.k is not None else default_k(d_in)
    if cfg.architecture in ("topk", "batchtopk") and k_ > d_sae_:
        raise FeatdiffError(f"k={k_} active latents cannot exceed d_sae={d_sae_}; lower k or raise d_sae.")
    batch_size = min(cfg.batch_size, acts.n_tokens)
    steps = cfg.n_steps_for(acts.n_tokens)
    decay = int(cfg.lr_decay_fraction * steps)
    warm = min(cfg.lr_warm_up_steps, max(0, steps - decay - 1))
    warm = warm if warm >= 2 else 0  # sae-lens's linear warm-up needs at least 2 steps
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=warm,
        lr_decay_steps=decay,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=steps + 1,  # sparsity windows only feed wandb logs
        device=str(dev),
    )
    trainers = {}
    for key, (ckpt, s) in plan.items():
        tsae = _make_training_sae(cfg, d_in, d_sae_, k_, ckpt, s, acts.hook).to(dev)
        trainer = SAETrainer(cfg=trainer_cfg, sae=tsae, data_provider=iter(()))
        if cfg.normalize_activations:
            tsae.cfg.normalize_activations = "expected_average_only_in"
            mean_norm = acts.row_norm_mean(ckpt)  # streamed on an on-disk set
            trainer.activation_scaler.scaling_factor = (d_in**0.5) / max(mean_norm, 1e-12)
        trainers[key] = trainer

    ckpts = sorted({c for c, _ in plan.values()})
    history = {key: _LossHistory() for key in trainers}
    run_ckpt, start = None, 0
    if checkpoint_dir is not None:
        settings = {
            "config": cfg.to_dict(), "seed": seed, "plan": plan, "steps": steps, "batch_size": batch_size,
            "d_in": d_in, "n_tokens": acts.n_tokens, "hook": acts.hook, "data": data_fingerprint(acts, ckpts),
        }
        run_ckpt = RunCheckpoint(checkpoint_dir, "train_saes", settings, checkpoint_every, steps)
        start = run_ckpt.resume(lambda folder: _load_run_state(folder, trainers, history))
    batches = _cycle_batches(acts, ckpts, batch_size, seed, start)
    bar = progress_bar(
        total=steps, initial=start, desc=f"train_saes ({len(plan)} {cfg.architecture} SAEs)", disable=not progress
    )
    batched = resolve_engine(cfg.engine, cfg.architecture) == "batched"
    engine = BatchedTopK(list(trainers.values())) if batched else None

    def save(folder: Path) -> None:
        if engine is not None:
            engine.write_back()  # the sae-lens trainers hold the state a checkpoint saves
        _save_run_state(folder, trainers, history)

    with bar:
        for step in range(start, steps):
            batch = next(batches)
            if engine is not None:
                x = torch.stack([t.activation_scaler(batch[plan[key][0]].to(dev)) for key, t in trainers.items()])
                outs = dict(zip(trainers, engine.step(x), strict=True))
            for key, trainer in trainers.items():
                out = outs[key] if engine is not None else trainer.step(batch[plan[key][0]].to(dev))
                trainer.n_training_steps += 1
                history[key].add(out)
            if step % 25 == 0 or step == steps - 1:
                for h in history.values():
                    h.flush()
                if progress:
                    bar.set_postfix(_progress_postfix(history, trainers))
            bar.update(1)
            if run_ckpt is not None:
                run_ckpt.step_done(step + 1, save)
    if engine is not None:
        engine.write_back()

    out: dict[str, SAE] = {}
    for key, trainer in trainers.items():
        tsae = trainer.sae
        if trainer.activation_scaler.scaling_factor is not None:
            tsae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
            trainer.activation_scaler.scaling_factor = None
        trainer.set_final_sae_metadata()
        out[key] = _to_inference(tsae)
        out[key].featdiff_train = history[key].record(trainer, steps, batch_size, steps - decay)
    if run_ckpt is not None and not keep_checkpoint:
        run_ckpt.clear()
    return out


def _save_run_state(folder: Path, trainers: Mapping[str, Any], history: Mapping[str, _LossHistory]) -> None:
    """Each SAE's weights, sae-lens trainer state and loss history, and the RNG state (``train_saes``)."""
    for i, trainer in enumerate(trainers.values()):
        trainer.save_trainer_state(folder / f"sae{i}")  # sae-lens: optimizer, lr scheduler, counters, scaler
    for h in history.values():
        h.flush()
    weights = {f"sae{i}/sae": trainer.sae.state_dict() for i, trainer in enumerate(trainers.values())}
    save_run_state(folder, weights, {"keys": list(trainers), "history": {k: h.state() for k, h in history.items()}})


def _load_run_state(folder: Path, trainers: Mapping[str, Any], history: Mapping[str, _LossHistory]) -> None:
    weights, state = load_run_state(folder, [f"sae{i}/sae" for i in range(len(trainers))])
    if state["keys"] != list(trainers):
        raise FeatdiffError(f"The checkpoint in {folder} holds other SAEs; pass another checkpoint_dir.")
    for i, (key, trainer) in enumerate(trainers.items()):
        trainer.sae.load_state_dict(weights[f"sae{i}/sae"])
        trainer.load_trainer_state(folder / f"sae{i}")
        history[key].load_state(state["history"][key])


class _LossHistory:
    """Per-step losses of one SAE: the reconstruction loss (sae-lens's "mse_loss", in the normalised units
    it trains in) and the rest (the AuxK loss that revives dead latents, or the sparsity penalty), plus an
    exponential moving average of each for the progress bar. Tensors are kept until ``flush`` so that a GPU
    run does not synchronise on every step."""

    EMA = 0.05  # weight of the newest step: a window of about 20 steps

    def __init__(self) -> None:
        self._pending: list[tuple[Tensor, Tensor]] = []
        self.mse: list[float] = []
        self.aux: list[float] = []
        self.ema_mse = self.ema_aux = float("nan")

    def add(self, out) -> None:
        mse = out.losses.get("mse_loss", out.loss).detach()
        self._pending.append((mse, out.loss.detach() - mse))

    def flush(self) -> None:
        if not self._pending:
            return
        vals = torch.stack([torch.stack(p) for p in self._pending]).float().cpu().tolist()
        self._pending = []
        for mse, aux in vals:
            self.mse.append(mse)
            self.aux.append(aux)
            first = len(self.mse) == 1
            self.ema_mse = mse if first else (1 - self.EMA) * self.ema_mse + self.EMA * mse
            self.ema_aux = aux if first else (1 - self.EMA) * self.ema_aux + self.EMA * aux

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (after ``flush``)."""
        return {"mse": self.mse, "aux": self.aux, "ema_mse": self.ema_mse, "ema_aux": self.ema_aux}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self._pending = []
        self.mse, self.aux = list(state["mse"]), list(state["aux"])
        self.ema_mse, self.ema_aux = float(state["ema_mse"]), float(state["ema_aux"])

    def record(self, trainer, n_steps: int, batch_size: int, lr_decay_start: int) -> dict[str, Any]:
        """What ``featdiff.comparison.diagnostics`` reads from ``sae.featdiff_train``."""
        self.flush()
        dead = getattr(trainer, "dead_neurons", None)
        return {
            "losses": list(self.mse),
            "aux_losses": list(self.aux),
            "n_steps": n_steps,
            "batch_size": batch_size,
            "lr_decay_start": lr_decay_start,
            "n_dead_at_end": None if dead is None else int(dead.sum()),
        }


def _progress_postfix(history: Mapping[str, _LossHistory], trainers: Mapping[str, Any]) -> dict[str, str]:
    """The progress bar's numbers: the smoothed (EMA) reconstruction loss and auxiliary loss, averaged over
    the SAEs, and the share of latents sae-lens counts as dead. The raw step loss adds the AuxK loss,
    which jumps when latents are first declared dead (after ``dead_feature_window`` steps); it is shown
    apart so a jump there is not read as the SAEs getting worse."""
    h = list(history.values())
    mse = sum(x.ema_mse for x in h) / len(h)
    aux = sum(x.ema_aux for x in h) / len(h)
    dead = [t.dead_neurons.float().mean() for t in trainers.values() if hasattr(t, "dead_neurons")]
    post = {"mse": f"{mse:.4g}", "aux": f"{aux:.3g}"}
    if dead:
        post["dead"] = f"{float(torch.stack(dead).mean()):.0%}"
    return post


def sae_from_dictionary(
    W_dec: Float[Tensor, "d_sae d_in"],
    W_enc: Float[Tensor, "d_in d_sae"] | None = None,
    b_dec: Float[Tensor, " d_in"] | None = None,
    k: int | None = None,
    architecture: str = "topk",
) -> SAE:
    """An inference sae-lens SAE with a given (e.g. planted) dictionary, for known-answer tests.

    ``W_enc`` defaults to ``W_dec.T`` (matched filters, right for unit-norm, nearly orthogonal atoms);
    ``b_dec`` to zeros, ``b_enc`` is zero. ``architecture``: "topk" (``k`` defaults to
    ``default_k(d_in)``), "standard" (ReLU) or "jumprelu" (threshold 0; set ``sae.threshold``).
    The rows of ``W_dec`` are used as given.

    Examples
    --------
    >>> import torch
    >>> sae = sae_from_dictionary(torch.eye(3), k=1)
    >>> from featdiff.dictionaries.stats import encode
    >>> codes = encode(sae, torch.tensor([[0.0, 2.0, 0.5]]))
    >>> codes
    tensor([[0., 2., 0.]])
    >>> sae.decode(codes).detach()
    tensor([[0., 2., 0.]])
    """
    from sae_lens.saes.jumprelu_sae import (  # deferred: sae-lens ~10 s to import
        JumpReLUSAE,
        JumpReLUSAEConfig,
    )
    from sae_lens.saes.standard_sae import (  # deferred: sae-lens ~10 s to import
        StandardSAE,
        StandardSAEConfig,
    )
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig  # deferred: sae-lens ~10 s to import

    check_choice("architecture", architecture, DICTIONARY_ARCHITECTURES, "sae_from_dictionary")
    if not isinstance(W_dec, Tensor) or W_dec.ndim != 2:
        raise FeatdiffError(
            f"W_dec must be a (d_sae, d_in) tensor; got {getattr(W_dec, 'shape', type(W_dec))}."
        )
    W_dec = W_dec.detach().float()
    d_sae, d_in = W_dec.shape
    W_enc = W_dec.T.clone() if W_enc is None else W_enc.detach().float()
    b_dec = torch.zeros(d_in) if b_dec is None else b_dec.detach().float()
    if tuple(W_enc.shape) != (d_in, d_sae) or tuple(b_dec.shape) != (d_in,):
        raise FeatdiffError(
            f"With W_dec of shape {(d_sae, d_in)}, W_enc must be {(d_in, d_sae)} and b_dec {(d_in,)}; "
            f"got {tuple(W_enc.shape)} and {tuple(b_dec.shape)}."
        )
    if not torch.isfinite(W_dec).all() or not torch.isfinite(W_enc).all():
        raise FeatdiffError("W_dec and W_enc must be finite (no NaN or inf).")
    if architecture == "topk":
        k = default_k(d_in) if k is None else k
        check_int("sae_from_dictionary", "k", k)
        if k > d_sae:
            raise FeatdiffError(f"k must be an integer in [1, d_sae={d_sae}]; got {k!r}.")
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    elif architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(W_enc)
        sae.b_dec.copy_(b_dec)
        sae.b_enc.zero_()
        if architecture == "jumprelu":
            sae.threshold.zero_()
    return sae.eval()


# ---- helpers on any sae-lens SAE (batched, no grads) ---------------------------------------------
