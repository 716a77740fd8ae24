"""Training in the lab: pretraining on the task mixture, SFT and GRPO from the same base.

Every function is seeded from the lab configuration: the same config gives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from featdiff.core.output import dependency_warnings_once, progress_bar
from featdiff.lab.config import LabConfig
from featdiff.lab.decoding import generate
from featdiff.lab.suite import task_groups, task_list, tasks
from featdiff.lab.task import D_VOCAB, PAD, Task, pad_right

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# Callback at each intermediate checkpoint: (model, step, index of the checkpoint from 1).
CheckpointFn = Callable[["HookedTransformer", int, int], None]

_PRETRAIN, _SFT, _GRPO = 1, 2, 3  # seed offsets of the phases


def make_model(config: LabConfig) -> HookedTransformer:
    """A freshly initialised tiny HookedTransformer for the lab's vocabulary (seeded by ``config.seed``).

    Examples
    --------
    >>> m = make_model(LabConfig.small())
    >>> m.cfg.d_vocab, m.cfg.n_layers
    (22, 2)
    """
    from transformer_lens import (  # deferred: transformer-lens ~12 s to import
        HookedTransformer,
        HookedTransformerConfig,
    )

    mc = config.model
    longest = max(t.prompt_len + t.generation_len for t in task_list(config))
    cfg = HookedTransformerConfig(
        n_layers=mc.n_layers,
        d_model=mc.d_model,
        n_heads=mc.n_heads,
        d_head=mc.d_model // mc.n_heads,
        d_mlp=mc.d_mlp,
        d_vocab=D_VOCAB,
        n_ctx=longest,
        act_fn=mc.act_fn,
        normalization_type="LN",
        tokenizer_name=None,
        default_prepend_bos=False,
        device="cpu",
    )
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        with dependency_warnings_once():  # TransformerLens 3.9 warns on every model built
            model = HookedTransformer(cfg)
    return model


def clone_model(model: HookedTransformer) -> HookedTransformer:
    """An independent copy of a model (same config and weights)."""
    from transformer_lens import HookedTransformer  # deferred: transformer-lens ~12 s to import

    with torch.random.fork_rng(devices=[]), dependency_warnings_once():
        copy = HookedTransformer(model.cfg)
    copy.load_state_dict(model.state_dict())
    return copy


def answer_loss(
    model: HookedTransformer,
    prompts: list[Int[Tensor, "n prompt_len"]],
    targets: list[Int[Tensor, "n target_len"]],
) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy on the target tokens that follow each prompt (groups may differ in length)."""
    seqs, masks = [], []
    for p, t in zip(prompts, targets, strict=True):
        seqs.append(torch.cat([p, t], dim=1))
        mask = torch.zeros(p.shape[0], p.shape[1] + t.shape[1] - 1, dtype=torch.long)
        mask[:, p.shape[1] - 1 :] = 1  # position i predicts token i + 1
        masks.append(mask)
    seq = pad_right(seqs, PAD)
    mask = pad_right(masks, 0).bool()
    logits = model(seq[:, :-1])
    return F.cross_entropy(logits[mask], seq[:, 1:][mask])


def _mixture(config: LabConfig) -> tuple[list[Task], Tensor]:
    groups = task_groups(config)
    pc = config.pretrain
    all_tasks = task_list(config)
    n_ood = sum(g == "out_of_domain" for g in groups.values())
    fixed = pc.in_domain_weight + pc.near_domain_weight * len(config.tasks.near_domain)
    rest = max(1.0 - fixed, 0.0) / max(n_ood, 1)
    w = {"in_domain": pc.in_domain_weight, "near_domain": pc.near_domain_weight, "out_of_domain": rest}
    return all_tasks, torch.tensor([w[groups[t.name]] for t in all_tasks], dtype=torch.float)


def quick_accuracy(model: HookedTransformer, task_sets) -> dict[str, float]:
    """Greedy exact match per task, generating only the base-format answer length (for training checks)."""
    return {
        name: float(ts.check(generate(model, ts.prompts, ts.task.answer_len)).float().mean())
        for name, ts in task_sets.items()
    }


def pretrain(config: LabConfig, progress: bool = True) -> tuple[HookedTransformer, list[dict]]:
    """Train a base model from scratch on the mixture of all tasks (loss on answer tokens).

    Stops at the first check (every ``eval_every`` steps) where the in-domain task reaches
    ``stop_in_domain`` and every out-of-domain task ``stop_out_of_domain``, or after ``max_steps``.
    Returns the model and the history of checks (one dict per check: step, loss, accuracy per task).
    """
    pc = config.pretrain
    groups = task_groups(config)
    model = make_model(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, weight_decay=0.01)
    all_tasks, weights = _mixture(config)
    g = torch.Generator().manual_seed(config.seed * 1000 + _PRETRAIN)
    dev = tasks(config, split="dev", n=config.tasks.n_eval_checkpoint)
    history: list[dict] = []
    bar = progress_bar(range(1, pc.max_steps + 1), desc="lab: pretrain", disable=not progress, leave=False)
    for step in bar:
        counts = torch.multinomial(weights, pc.batch_size, replacement=True, generator=g).bincount(
            minlength=len(all_tasks)
        )
        prompts, answers = [], []
        for task, n in zip(all_tasks, counts.tolist(), strict=True):
            if n:
                p, a = task.sample(n, g)
                prompts.append(p)
                answers.append(a)
        loss = answer_loss(model, prompts, answers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % pc.eval_every == 0 or step == pc.max_steps:
            acc = quick_accuracy(model, dev)
            model.train()
            history.append({"step": step, "loss": loss.item(), **acc})
            ind = acc[config.tasks.in_domain]
            ood = min((a for n, a in acc.items() if groups[n] == "out_of_domain"), default=1.0)
            bar.set_postfix(loss=f"{loss.item():.3f}", in_domain=f"{ind:.2f}", ood_min=f"{ood:.2f}")
            if ind >= pc.stop_in_domain and ood >= pc.stop_out_of_domain:
                break
    bar.close()
    model.eval()
    return model, history


def _checkpoint_steps(n_steps: int, n_checkpoints: int) -> list[int]:
    """``n_checkpoints`` evenly spaced steps ending at ``n_steps`` (distinct when there are enough steps)."""
    return sorted({max(1, round(n_steps * k / n_checkpoints)) for k in range(1, n_checkpoints + 1)})


def _in_domain_train(config: LabConfig):
    return tasks(config, split="train")[config.tasks.in_domain]


def sft(
    base: HookedTransformer,
    config: LabConfig,
    progress: bool = True,
    on_checkpoint: CheckpointFn | None = None,
) -> tuple[HookedTransformer, list[dict]]:
    """Supervised fine-tuning of a copy of ``base`` on the in-domain training prompts.

    With ``config.sft.answer_format == "teacher"`` the targets are written in the teacher's format (the
    reversed answer, SEP, the answer), which the base never produced; with ``"base"`` they are the base's
    own format. Returns the model and one history row per step (step, loss).
    """
    sc = config.sft
    model = clone_model(base)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=sc.lr, weight_decay=0.0)
    data = _in_domain_train(config)
    targets = data.task.teacher_answer(data.answers) if sc.answer_format == "teacher" else data.answers
    g = torch.Generator().manual_seed(config.seed * 1000 + _SFT)
    per_epoch = max(1, data.prompts.shape[0] // sc.batch_size)
    n_steps = per_epoch * sc.epochs
    saves = _checkpoint_steps(n_steps, config.n_checkpoints)
    history = []
    bar = progress_bar(total=n_steps, desc="lab: sft", disable=not progress, leave=False)
    step = 0
    for _ in range(sc.epochs):
        order = torch.randperm(data.prompts.shape[0], generator=g)
        for b in range(per_epoch):
            idx = order[b * sc.batch_size : (b + 1) * sc.batch_size]
            loss = answer_loss(model, [data.prompts[idx]], [targets[idx]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            history.append({"step": step, "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_checkpoint is not None and step in saves:
                model.eval()
                on_checkpoint(model, step, saves.index(step) + 1)
                model.train()
    bar.close()
    model.eval()
    return model, history


def grpo_advantages(
    rewards: Float[Tensor, "n_groups group_size"], eps: float = 1e-4
) -> Float[Tensor, "n_groups group_size"]:
    """Group-normalised advantages: (reward - group mean) / (group std + eps), std with Bessel's correction.

    A group whose samples all get the same reward has zero advantage (it carries no signal).

    Examples
    --------
    >>> grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), eps=0.0).round(decimals=4)
    tensor([[ 1.5000, -0.5000, -0.5000, -0.5000],
            [ 0.0000,  0.0000,  0.0000,  0.0000]])
    """
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    centred = rewards - mean
    return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))


def _answer_logprobs(model, prompts: Tensor, completions: Tensor, temperature: float) -> Tensor:
    seq = torch.cat([prompts, completions], dim=1)
    p, a = prompts.shape[1], completions.shape[1]
    logits = model(seq[:, :-1])[:, p - 1 : p - 1 + a] / temperature
    return logits.log_softmax(dim=-1).gather(2, completions[..., None]).squeeze(-1)


def grpo(
    base: HookedTransformer,
    config: LabConfig,
    progress: bool = True,
    on_checkpoint: CheckpointFn | None = None,
    n_steps: int | None = None,
) -> tuple[HookedTransformer, list[dict]]:
    """GRPO on a copy of ``base`` over the in-domain training prompts.

    Each step takes ``prompts_per_step`` prompts, samples ``group_size`` completions of the answer length
    per prompt at ``temperature``, rewards 1 for a correct final answer and 0 otherwise, normalises the
    rewards within each group and takes one policy-gradient step on the mean token log-probability weighted
    by the advantage (on-policy, so the PPO ratio is 1 and clipping never acts), plus ``kl_coef`` times the
    k3 estimate of KL(policy || base). ``n_steps`` overrides the number of steps set by ``epochs``.
    Returns the model and one history row per step (step, reward, loss, kl).
    """
    gc = config.grpo
    model = clone_model(base)
    ref = clone_model(base).eval() if gc.kl_coef > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=gc.lr, weight_decay=0.0)
    data = _in_domain_train(config)
    task = data.task
    g = torch.Generator().manual_seed(config.seed * 1000 + _GRPO)
    per_epoch = max(1, data.prompts.shape[0] // gc.prompts_per_step)
    total = n_steps if n_steps is not None else per_epoch * gc.epochs
    saves = _checkpoint_steps(total, config.n_checkpoints)
    history = []
    bar = progress_bar(total=total, desc="lab: grpo", disable=not progress, leave=False)
    order = torch.empty(0, dtype=torch.long)
    for step in range(1, total + 1):
        b = (step - 1) % per_epoch
        if b == 0:
            order = torch.randperm(data.prompts.shape[0], generator=g)
        idx = order[b * gc.prompts_per_step : (b + 1) * gc.prompts_per_step]
        prompts = data.prompts[idx].repeat_interleave(gc.group_size, dim=0)
        answers = data.answers[idx].repeat_interleave(gc.group_size, dim=0)
        completions = generate(model, prompts, task.answer_len, temperature=gc.temperature, generator=g)
        rewards = task.check(completions, answers).float()
        adv = grpo_advantages(rewards.view(-1, gc.group_size)).view(-1)
        model.train()
        logp = _answer_logprobs(model, prompts, completions, gc.temperature)
        loss = -(adv * logp.mean(dim=1)).mean()
        kl = torch.zeros(())
        if ref is not None:
            with torch.no_grad():
                ref_logp = _answer_logprobs(ref, prompts, completions, gc.temperature)
            diff = ref_logp - logp
            kl = (diff.exp() - diff - 1).mean()
            loss = loss + gc.kl_coef * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step, "reward": float(rewards.mean()), "loss": loss.item(), "kl": float(kl)})
        bar.update(1)
        bar.set_postfix(reward=f"{float(rewards.mean()):.2f}")
        if on_checkpoint is not None and step in saves:
            model.eval()
            on_checkpoint(model, step, saves.index(step) + 1)
    bar.close()
    model.eval()
    return model, history
