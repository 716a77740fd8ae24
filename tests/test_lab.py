"""featdiff.lab: tasks, configs, GRPO advantages, and a small lab built once per module."""

from __future__ import annotations

import time

import pytest
import torch

from featdiff.errors import FeatdiffError
from featdiff.lab import (
    LabConfig,
    Task,
    accuracy,
    build,
    checkpoints,
    evaluate,
    grpo,
    grpo_advantages,
    load,
    tasks,
)
from featdiff.lab.task import OPS, SEP

TABLE_COLUMNS = [
    "checkpoint",
    "sort",
    "sort_desc",
    "copy",
    "max",
    "in_domain",
    "near_domain",
    "out_of_domain",
]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    return build(LabConfig.small(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


# ---- tasks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(OPS))
def test_checker_accepts_true_answer_and_rejects_wrong_one(op):
    task = Task.parse(op, default_length=6)
    prompts, answers = task.sample(50, torch.Generator().manual_seed(0))
    assert prompts.shape == (50, task.prompt_len)
    assert answers.shape == (50, task.answer_len)
    assert task.check(answers, answers).all()
    wrong = answers.clone()
    wrong[:, -1] = (wrong[:, -1] + 1) % 10
    assert not task.check(wrong, answers).any()
    # the teacher format (reversed answer, SEP, answer) is read by its final answer
    teacher = task.teacher_answer(answers)
    assert (teacher[:, task.answer_len] == SEP).all()
    assert task.check(teacher, answers).all()
    assert not task.check(task.teacher_answer(wrong), answers).any()


def test_task_answers_are_the_operations():
    digits = torch.tensor([[3, 1, 4, 1]])
    solve = {
        op: Task.parse(op, 4).solve(digits).tolist() for op in ("sort", "rev", "max", "succ", "sort_desc")
    }
    assert solve == {
        "sort": [[1, 1, 3, 4]],
        "rev": [[1, 4, 1, 3]],
        "max": [[4]],
        "succ": [[4, 2, 5, 2]],
        "sort_desc": [[4, 3, 1, 1]],
    }


def test_tasks_are_seeded_and_grouped():
    cfg = LabConfig.small()
    a, b = tasks(cfg, n=8), tasks(cfg, n=8)
    assert list(a) == ["sort", "sort_desc", "copy", "max"]
    assert {n: ts.group for n, ts in a.items()} == {
        "sort": "in_domain",
        "sort_desc": "near_domain",
        "copy": "out_of_domain",
        "max": "out_of_domain",
    }
    assert all(torch.equal(a[n].prompts, b[n].prompts) for n in a)
    assert not torch.equal(tasks(cfg, split="train", n=8)["sort"].prompts, a["sort"].prompts)


def test_bad_task_name_raises():
    with pytest.raises(FeatdiffError, match="must be one of"):
        Task.parse("sorting", 4)
    with pytest.raises(FeatdiffError, match="distinct"):
        LabConfig.small().tasks.replace(out_of_domain=("copy", "copy"))


# ---- config ----------------------------------------------------------------------------------------


def test_config_round_trip_and_unknown_keys():
    cfg = LabConfig.small()
    assert LabConfig.from_dict(cfg.to_dict()) == cfg
    assert LabConfig.from_dict(cfg.to_dict()).key() == cfg.key()
    assert cfg.key() != LabConfig().key()
    with pytest.raises(FeatdiffError, match="Unknown GRPOConfig keys"):
        LabConfig.from_dict({"grpo": {"lr": 1e-4, "clip": 0.2}})
    with pytest.raises(FeatdiffError, match="answer_format"):
        LabConfig.from_dict({"sft": {"answer_format": "chat"}})


# ---- GRPO ------------------------------------------------------------------------------------------


def test_grpo_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    adv = grpo_advantages(rewards, eps=0.0)
    # group 1: mean 1/4, unbiased std 1/2; group 2: mean 1/2, std sqrt(1/3); group 3: no signal
    s = 0.5 / (1 / 3) ** 0.5
    expected = torch.tensor([[1.5, -0.5, -0.5, -0.5], [s, s, -s, -s], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(3), atol=1e-6)


def test_grpo_raises_in_domain_reward(lab_dir):
    base, _, _ = load(lab_dir)
    cfg = LabConfig.small()
    cfg = cfg.replace(grpo=cfg.grpo.replace(lr=1e-3, prompts_per_step=16, group_size=8))
    _, history = grpo(base, cfg, progress=False, n_steps=24)
    rewards = [h["reward"] for h in history]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert sum(rewards[-6:]) / 6 > sum(rewards[:6]) / 6


# ---- the built lab ---------------------------------------------------------------------------------


def test_build_is_cached(lab_dir):
    t = time.perf_counter()
    again = build(LabConfig.small(), cache_dir=lab_dir.parent.parent, progress=False)
    assert again == lab_dir
    assert time.perf_counter() - t < 1.0


def test_build_is_reproducible(tmp_path):
    cfg = LabConfig.small()
    cfg = cfg.replace(pretrain=cfg.pretrain.replace(max_steps=20))  # a shorter build, twice
    first = build(cfg, cache_dir=tmp_path / "a", progress=False)
    second = build(cfg, cache_dir=tmp_path / "b", progress=False)
    assert first != second and first.name == second.name == cfg.key()
    for a, b in zip(load(first), load(second), strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_gives_three_models_with_prompts(lab_dir):
    from transformer_lens import HookedTransformer

    cfg = LabConfig.small()
    models = load(lab_dir)
    assert len(models) == 3
    n_tasks = 4
    for role, m in zip(("base", "rl", "sft"), models, strict=True):
        assert isinstance(m, HookedTransformer)
        assert m.featdiff_prompts.shape[0] == n_tasks * cfg.tasks.n_store
        assert m.featdiff_prompts.dtype == torch.long
        assert int(m.featdiff_prompts.max()) < m.cfg.d_vocab
        assert m.featdiff_meta["role"] == role
        assert LabConfig.from_dict(m.featdiff_meta["lab"]) == cfg
        assert 0.0 <= m.featdiff_meta["accuracy"]["in_domain"] <= 1.0
    base, rl, sft = models
    assert torch.equal(base.featdiff_prompts, rl.featdiff_prompts)
    assert not torch.equal(base.W_E, rl.W_E) and not torch.equal(base.W_E, sft.W_E)


def test_accuracy_table(lab_dir):
    table = accuracy(lab_dir)
    assert list(table.columns) == TABLE_COLUMNS
    assert table["checkpoint"].tolist() == ["base", "rl", "sft"]
    values = table.drop(columns="checkpoint")
    assert ((values >= 0) & (values <= 1)).all().all()
    assert table.attrs["groups"]["sort_desc"] == "near_domain"
    torch.testing.assert_close(
        torch.tensor(table["out_of_domain"].to_numpy()),
        torch.tensor(table[["copy", "max"]].mean(axis=1).to_numpy()),
    )

    samples = accuracy(lab_dir, which="samples")
    assert list(samples.columns) == ["checkpoint", "task", "group", "sample", "correct"]
    assert len(samples) == 3 * 4 * LabConfig.small().tasks.n_eval
    mean = samples.groupby(["checkpoint", "task"])["correct"].mean()
    assert abs(mean[("rl", "sort")] - table.set_index("checkpoint").loc["rl", "sort"]) < 1e-9

    traj = accuracy(lab_dir, which="trajectory")
    assert traj["run"].tolist() == ["base"] + ["sft"] * 5 + ["rl"] * 5


def test_evaluate_matches_stored_accuracy(lab_dir):
    base, rl, sft = load(lab_dir)
    table = evaluate({"base": base, "rl": rl, "sft": sft}, progress=False)  # tasks from the lab config
    stored = accuracy(lab_dir)
    torch.testing.assert_close(
        torch.tensor(table.drop(columns="checkpoint").to_numpy()),
        torch.tensor(stored.drop(columns="checkpoint").to_numpy()),
    )


def test_checkpoints_in_order(lab_dir):
    from featdiff.models.folder import load_featdiff_dir

    for run, final in (("rl", 1), ("sft", 2)):
        paths = checkpoints(lab_dir, run=run)
        assert len(paths) == 5 and all(p.is_dir() for p in paths)
        steps = [load_featdiff_dir(p).featdiff_meta["step"] for p in paths]
        assert steps == sorted(steps) and len(set(steps)) == 5
        last = load_featdiff_dir(paths[-1])
        assert torch.equal(last.W_U, load(lab_dir)[final].W_U)
    with pytest.raises(FeatdiffError, match="must be one of"):
        checkpoints(lab_dir, run="ppo")


def test_load_rejects_a_folder_that_is_not_a_lab(tmp_path):
    with pytest.raises(FeatdiffError, match="not a lab folder"):
        load(tmp_path)
