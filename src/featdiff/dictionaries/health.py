"""Whether a dictionary trained well: did its loss settle before the learning rate decayed, and how many of
its latents are dead. One rule for SAEs and crosscoders: ``loss_settling`` over the last ``SETTLE_WINDOW``
(20 %) of the steps before the lr decay, settled when the loss fell by at most ``SETTLE_TOLERANCE`` (2 %)
across it. The crosscoder's training reads its run through these (``cc.diagnostics``); ``diagnose`` reads
the SAEs' records through them (featdiff.comparison.diagnostics; docs/diagnostics.md has the measurements).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from featdiff.errors import warn

SETTLE_WINDOW = 0.2
SETTLE_TOLERANCE = 0.02
MAX_DEAD_FRACTION = 0.5


def loss_settling(
    losses: Float[Tensor, " n_steps"], window: float = SETTLE_WINDOW, end: int | None = None
) -> float:
    """Relative fall of a training loss over its last ``window`` fraction of steps before step ``end``
    (default: the last step): (a - b) / a, with a and b the mean loss of the window's first and second
    halves (at least 10 steps in all; NaN when there are fewer, or when the losses are not finite). A
    settled run gives about 0 (minibatch noise); a run still learning gives > 0.

    Examples
    --------
    >>> round(loss_settling(torch.linspace(2.0, 1.0, 100)), 3)  # still falling: last 20 steps drop 9 %
    0.088
    >>> loss_settling(torch.ones(100)), math.isnan(loss_settling(torch.ones(5)))
    (0.0, True)
    """
    losses = torch.as_tensor(losses)
    losses = losses[: len(losses) if end is None else end]
    n = len(losses)
    w = max(10, int(round(window * n)))
    if n < w:
        return float("nan")
    tail = losses[n - w :].double()
    a, b = tail[: w // 2].mean(), tail[w // 2 :].mean()
    return float((a - b) / a.clamp(min=1e-12))



@torch.no_grad()
def dead_latents(codes: Iterable[Float[Tensor, "batch d_sae"]], d_sae: int) -> Bool[Tensor, " d_sae"]:
    """True for the latents that are zero on every row of every batch of ``codes``.

    Examples
    --------
    >>> dead_latents([torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 2.0]])], 3).tolist()
    [True, False, False]
    """
    fired = torch.zeros(d_sae, dtype=torch.bool)
    for f in codes:
        fired |= (f != 0).any(0).cpu()
    return ~fired


def training_health(
    losses: Float[Tensor, " n_steps"],
    dead: Bool[Tensor, " d_sae"],
    *,
    batch_size: int,
    lr_decay_fraction: float,
    settle_window: float,
    settle_tolerance: float,
    n_eval_tokens: int,
) -> dict:
    """How a run went: ``n_steps``, ``n_samples`` (steps x ``batch_size``), ``final_loss`` (mean of the last
    10 % of steps), ``loss_settling`` (``loss_settling`` over the last ``settle_window`` of the steps before
    the final ``lr_decay_fraction``), ``loss_settled`` (at most ``settle_tolerance``; NaN, too short to
    tell, is not settled), ``dead_fraction``, ``n_dead`` and ``n_eval_tokens`` (the tokens ``dead`` was
    counted on).

    Examples
    --------
    >>> h = training_health(torch.ones(100), torch.tensor([True, False]), batch_size=8, lr_decay_fraction=0.2,
    ...                     settle_window=0.1, settle_tolerance=0.02, n_eval_tokens=64)
    >>> h["loss_settled"], h["dead_fraction"], h["n_samples"]
    (True, 0.5, 800)
    """
    n = len(losses)
    decay_start = int(n * (1 - lr_decay_fraction))
    drop = loss_settling(losses, settle_window, end=decay_start if decay_start >= 10 else None)
    return {
        "n_steps": n,
        "n_samples": n * batch_size,
        "final_loss": float(losses[n - max(1, n // 10) :].mean()),
        "loss_settling": drop,
        "loss_settled": bool(drop <= settle_tolerance),  # NaN (too short to tell) is not settled
        "dead_fraction": float(dead.float().mean()),
        "n_dead": int(dead.sum()),
        "n_eval_tokens": n_eval_tokens,
    }


def warn_training_health(
    health: Mapping,
    who: str,
    *,
    settle_window: float,
    settle_tolerance: float,
    max_dead_fraction: float,
    d_sae: int,
    revive: str,
) -> None:
    """A ``FeatdiffWarning`` (from ``who``'s caller) when ``training_health`` found an unsettled loss or
    more than ``max_dead_fraction`` dead latents; ``revive`` is the advice that revives dead latents."""
    if not health["loss_settled"]:
        if math.isnan(health["loss_settling"]):
            how = f"ran only {health['n_steps']} steps, too few to tell whether its loss settled"
        else:
            how = (
                f"had not settled: its reconstruction loss still fell by {100 * health['loss_settling']:.1f} % "
                f"over the last {100 * settle_window:.0f} % of its steps before the lr decay "
                f"({health['n_steps']} steps in all; tolerance {100 * settle_tolerance:.1f} %)"
            )
        warn(
            f"{who} {how}. Train longer (raise n_samples, now {health['n_samples']} rows, "
            "or n_steps) before reading its features.",
        )
    if health["dead_fraction"] > max_dead_fraction:
        warn(
            f"{who} left {health['n_dead']} of {d_sae} latents "
            f"({100 * health['dead_fraction']:.0f} %) dead on {health['n_eval_tokens']} training tokens "
            f"(more than max_dead_fraction={max_dead_fraction}). Lower d_sae (the data may hold fewer "
            f"features), train longer, or {revive}; dead latents are counted, not scored.",
        )
