"""N sae-lens TopK training SAEs stepped as one module (``train_saes(engine="batched")``).

sae-lens steps one ``TopKTrainingSAE`` at a time with dense matrices: the decoder multiplies a (batch x
d_sae) matrix that is zero but for k entries per row, and the backward pass adds four more dense
(batch x d_in x d_sae) products. This engine does the same training step for N SAEs at once (written by
hand: sae-lens has no batched trainer; ``MultiSAETrainer`` loops over ``SAETrainer``s) and decodes
sparsely: only the k active decoder rows of each token enter the reconstruction (``embedding_bag``), and
the input bias enters the encoder as ``x @ W_enc - b_dec @ W_enc``, so the only dense products left are
the encoder's forward and its weight gradient. Everything else is sae-lens's step, read from its source
(sae-lens 6.54): ``rescale_acts_by_decoder_norm`` (pre-activations times the decoder row norms, codes
divided by them before decoding), top-k then ReLU, the summed-over-dims MSE, the AuxK loss on the dead
latents (the top ``d_in // 2`` dead pre-activations reconstruct the residual, scaled by
``min(n_dead / (d_in // 2), 1)``), gradient-norm clipping to 1 per SAE, Adam with sae-lens's betas, the
learning rate from each SAE's own sae-lens scheduler, and the dead-latent counters. The SAEs' sae-lens
``SAETrainer``s stay the owners of the state: ``write_back`` copies weights, Adam moments and counters
into them (for checkpoints and the end of the run), and a new engine starts from whatever they hold.

Results equal sae-lens's up to the order of float operations (the sums of the sparse decode, the bias
term). Where training is chaotic that order shows: at d_in 576, d_sae 2,304, k 32 and lr 1e-2 the two
engines' losses part by 1e-3 (relative) within 30 steps and most decoder rows by more than cosine 0.99,
and so do two sae-lens runs whose inputs differ by 2 ulp (x * (1 + 2^-22)); the SAEs' FVE agrees to
1e-4-1e-3. On smaller runs (tests/test_batched_sae.py: d_in 16, 200 steps, AuxK on) losses agree to 1e-5
relative at every step and weights to 1e-5.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")
SPARSE_RATIO = 16
"""The decode is sparse where d_sae >= SPARSE_RATIO x the active latents per token, else dense."""


class BatchedTopK:
    """The training state of N TopK SAEs (sae-lens ``SAETrainer``s with ``TopKTrainingSAE``s) as stacked
    tensors; ``step`` trains all N on one batch each."""

    def __init__(self, trainers: Sequence[Any]) -> None:
        self.trainers = list(trainers)
        saes = [t.sae for t in self.trainers]
        cfg0 = saes[0].cfg
        for s in saes:
            if type(s).__name__ != "TopKTrainingSAE" or not s.cfg.rescale_acts_by_decoder_norm:
                raise ValueError(
                    "BatchedTopK trains sae-lens TopKTrainingSAEs with rescale_acts_by_decoder_norm"
                )
            if (s.cfg.d_in, s.cfg.d_sae, s.cfg.k) != (cfg0.d_in, cfg0.d_sae, cfg0.k):
                raise ValueError("BatchedTopK needs SAEs of one shape and k")
        self.k = int(cfg0.k)
        self.aux_coefficient = [float(s.cfg.aux_loss_coefficient) for s in saes]
        self.params = {
            name: torch.nn.Parameter(torch.stack([getattr(s, name).detach() for s in saes]).clone())
            for name in PARAMS
        }
        t0 = self.trainers[0]
        self.optimizer = torch.optim.Adam(
            list(self.params.values()), lr=t0.cfg.lr, betas=(t0.cfg.adam_beta1, t0.cfg.adam_beta2)
        )
        self._load_optimizer_state()
        self.since_fired = torch.stack([t.n_forward_passes_since_fired for t in self.trainers]).clone()
        self.freq = torch.stack([t.act_freq_scores for t in self.trainers]).clone()
        self.window = torch.tensor([t.cfg.dead_feature_window for t in self.trainers]).unsqueeze(1)

    # --- state shared with the sae-lens trainers -------------------------------------------------------
    def _param_of(self, trainer) -> dict[str, Tensor]:
        return dict(trainer.sae.named_parameters())

    def _load_optimizer_state(self) -> None:
        """Adam's moments and step count from the sae-lens optimizers (zero state on a fresh run)."""
        for name, p in self.params.items():
            states = [t.optimizer.state.get(self._param_of(t)[name], {}) for t in self.trainers]
            if all(states):
                self.optimizer.state[p] = {
                    "step": states[0]["step"].clone(),
                    "exp_avg": torch.stack([s["exp_avg"] for s in states]).clone(),
                    "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in states]).clone(),
                }

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy weights and Adam state into the sae-lens trainers (their SAEs and optimizers); ``step`` keeps
        their counters current itself (the progress bar reads the dead share from them)."""
        for i, t in enumerate(self.trainers):
            own = self._param_of(t)
            for name, p in self.params.items():
                own[name].copy_(p[i])
                st = self.optimizer.state.get(p)
                if st:
                    t.optimizer.state[own[name]] = {
                        "step": st["step"].clone(),
                        "exp_avg": st["exp_avg"][i].clone(),
                        "exp_avg_sq": st["exp_avg_sq"][i].clone(),
                    }

    # --- the training step -----------------------------------------------------------------------------
    def _decode(self, idx: Tensor, weights: Tensor, W_dec: Tensor) -> Float[Tensor, "n batch d_in"]:
        """sum_j weights[n, b, j] * W_dec[n, idx[n, b, j]]. Sparse (only the chosen rows are read) where the
        codes are sparse enough for it to pay: measured on 2 CPU cores, the sparse decode's forward and
        backward take 0.2x the dense product's time at d_sae / k = 64 and 5x at d_sae / k = 8."""
        n, b, kk = idx.shape
        d_sae, d_in = W_dec.shape[1:]
        if d_sae < SPARSE_RATIO * kk:
            return torch.bmm(
                torch.zeros(n, b, d_sae, dtype=weights.dtype, device=weights.device).scatter(
                    -1, idx, weights
                ),
                W_dec,
            )
        offset = (torch.arange(n, device=idx.device) * d_sae).view(n, 1, 1)
        flat = (idx + offset).reshape(n * b, kk)
        out = F.embedding_bag(
            flat, W_dec.reshape(n * d_sae, d_in), per_sample_weights=weights.reshape(n * b, kk), mode="sum"
        )
        return out.view(n, b, d_in)

    def step(self, x: Float[Tensor, "n batch d_in"]) -> list[SimpleNamespace]:
        """One sae-lens training step of every SAE on its (already scaled) batch ``x[i]``; returns, per SAE,
        an object with ``loss`` and ``losses["mse_loss"]`` like sae-lens's ``TrainStepOutput``."""
        W_enc, b_enc, W_dec, b_dec = (self.params[n] for n in PARAMS)
        n, batch, d_in = x.shape
        norms = W_dec.norm(dim=-1)  # (n, d_sae)
        # (x - b_dec) @ W_enc + b_enc, with the bias folded so its gradient costs a vector product
        bias = b_enc - torch.bmm(b_dec.unsqueeze(1), W_enc).squeeze(1)
        hidden_pre = torch.baddbmm(bias.unsqueeze(1), x, W_enc) * norms.unsqueeze(1)
        vals, idx = hidden_pre.topk(self.k, dim=-1, sorted=False)
        vals = vals.relu()
        inv = (1 / norms).unsqueeze(1).expand(n, batch, -1)
        recon = self._decode(idx, vals * inv.gather(-1, idx), W_dec) + b_dec.unsqueeze(1)
        mse = (recon - x).pow(2).sum(-1).mean(-1)  # (n,)
        with torch.no_grad():
            dead = self.since_fired > self.window.to(x.device)
        aux = []
        residual = (x - recon).detach()
        k_aux_max = d_in // 2
        for i in range(n):
            n_dead = int(dead[i].sum())
            if n_dead == 0:
                aux.append(mse.new_zeros(()))
                continue
            scale = min(n_dead / k_aux_max, 1.0)
            k_aux = min(k_aux_max, n_dead)
            masked = torch.where(dead[i].unsqueeze(0), hidden_pre[i], -torch.inf)
            a_vals, a_idx = masked.topk(k_aux, dim=-1, sorted=False)
            a_rec = self._decode(
                a_idx.unsqueeze(0), (a_vals * inv[i].gather(-1, a_idx)).unsqueeze(0), W_dec[i : i + 1]
            )[0]
            loss = (a_rec - residual[i]).pow(2).sum(-1).mean()
            aux.append(self.aux_coefficient[i] * scale * loss)
        aux_t = torch.stack(aux)
        total = mse + aux_t
        total.sum().backward()  # the SAEs share no parameter: each gets its own gradient
        with torch.no_grad():
            grads = [self.params[name].grad for name in PARAMS]
            sq = sum(g.reshape(n, -1).pow(2).sum(-1) for g in grads)
            coef = (1.0 / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # torch's clip_grad_norm_(max_norm=1), per SAE
            for g in grads:
                g.mul_(coef.view(n, *([1] * (g.ndim - 1))))
            lr = self.trainers[0].optimizer.param_groups[0]["lr"]
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            fired = torch.zeros_like(self.since_fired)
            fired.scatter_add_(1, idx.reshape(n, -1), (vals > 0).reshape(n, -1).float())
            self.freq += fired
            self.since_fired += 1
            self.since_fired[fired > 0] = 0
        out = []
        for i, t in enumerate(self.trainers):
            t.n_training_samples += batch
            t.n_frac_active_samples += t.cfg.train_batch_size_samples
            t.n_forward_passes_since_fired.copy_(self.since_fired[i])
            t.act_freq_scores.copy_(self.freq[i])
            # each trainer's own sae-lens scheduler sets the next step's rate; torch warns (truly) that the
            # trainer's own optimizer never stepped
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                t.lr_scheduler.step()
            out.append(SimpleNamespace(loss=total[i].detach(), losses={"mse_loss": mse[i].detach()}))
        return out
