"""The lab's synthetic tasks: a small token vocabulary, exactly checkable answers, prompts and answers.

Every sequence reads ``BOS OP d_1 .. d_L EQ a_1 .. a_A``: a task token, a list of ``L`` digits, an answer
marker, then ``A`` answer tokens (``A`` is fixed per task, so generation runs exactly ``A`` steps). The
"teacher" answer format that SFT learns writes the reversed answer, a separator ``SEP`` and then the answer;
whatever a model writes, its *final answer* is the ``A`` tokens after its first ``SEP``, or its first ``A``
tokens when it writes no ``SEP`` (one rule for every checkpoint).

A task is named by its operation (``"sort"``) or by operation and list length (``"sort_len6"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from featdiff.errors import FeatdiffError

N_DIGITS = 10
BOS, EQ, SEP, PAD = 10, 11, 12, 13
GROUPS = ("in_domain", "near_domain", "out_of_domain")


def _sort(d: Tensor) -> Tensor:
    return d.sort(dim=1).values


def _sort_desc(d: Tensor) -> Tensor:
    return d.sort(dim=1, descending=True).values


def _succ(d: Tensor) -> Tensor:
    return (d + 1) % N_DIGITS


def _min_first(d: Tensor) -> Tensor:
    return d.sort(dim=1).values[:, :3]


# name -> (answer, answer length as a function of the list length). The order fixes the task token ids,
# so only ever append to it.
OPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[int], int]]] = {
    "sort": (_sort, lambda n: n),
    "copy": (lambda d: d.clone(), lambda n: n),
    "rev": (lambda d: d.flip(1), lambda n: n),
    "max": (lambda d: d.max(dim=1, keepdim=True).values, lambda n: 1),
    "succ": (_succ, lambda n: n),
    "sort_desc": (_sort_desc, lambda n: n),
    "min": (lambda d: d.min(dim=1, keepdim=True).values, lambda n: 1),
    "smallest3": (_min_first, lambda n: 3),
}
_FIRST_OP_TOKEN = 14
D_VOCAB = _FIRST_OP_TOKEN + len(OPS)


def op_token(op: str) -> int:
    """The token id of an operation."""
    return _FIRST_OP_TOKEN + list(OPS).index(op)


def vocabulary() -> list[str]:
    """The text of every token id (the lab's models have no tokenizer; feature cards show this text).

    Examples
    --------
    >>> v = vocabulary()
    >>> [v[i] for i in (BOS, op_token("sort"), 3, 1, EQ, 1, 3, SEP, PAD)]
    ['<bos>', '[sort]', '3', '1', '=', '1', '3', '|', '<pad>']
    """
    special = {BOS: "<bos>", EQ: "=", SEP: "|", PAD: "<pad>"}
    digits = [str(i) for i in range(N_DIGITS)]
    return digits + [special[i] for i in range(N_DIGITS, _FIRST_OP_TOKEN)] + [f"[{op}]" for op in OPS]


@dataclass(frozen=True)
class Task:
    """One synthetic task: an operation on lists of ``length`` digits.

    Examples
    --------
    >>> t = Task.parse("sort_len4", default_length=8)
    >>> t.name, t.length, t.answer_len, t.prompt_len
    ('sort_len4', 4, 4, 7)
    >>> t.solve(torch.tensor([[3, 1, 2, 1]])).tolist()
    [[1, 1, 2, 3]]
    """

    op: str
    length: int
    name: str

    @classmethod
    def parse(cls, name: str, default_length: int) -> Task:
        """A task from its name: ``"op"`` (lists of ``default_length``) or ``"op_len<L>"``."""
        op, length = name, default_length
        if "_len" in name:
            op, _, tail = name.rpartition("_len")
            if not tail.isdigit():
                raise FeatdiffError(
                    f"Task name {name!r} must look like 'op' or 'op_len<L>' (e.g. 'sort_len6')."
                )
            length = int(tail)
        if op not in OPS:
            raise FeatdiffError(f"The operation of task {name!r} must be one of {list(OPS)}; got {op!r}.")
        if not 1 <= length <= 32:
            raise FeatdiffError(f"The list length of task {name!r} must be in [1, 32]; got {length}.")
        return cls(op=op, length=length, name=name)

    @property
    def answer_len(self) -> int:
        """Tokens in the base-format answer."""
        return OPS[self.op][1](self.length)

    @property
    def prompt_len(self) -> int:
        """Tokens in a prompt (BOS, task token, digits, EQ)."""
        return self.length + 3

    @property
    def generation_len(self) -> int:
        """Tokens generated at evaluation: room for a teacher-style answer (reversed answer, SEP, answer)."""
        return 2 * self.answer_len + 1

    def solve(self, digits: Int[Tensor, "n length"]) -> Int[Tensor, "n answer_len"]:
        """The true answers to lists of digits."""
        return OPS[self.op][0](digits)

    def sample(
        self, n: int, generator: torch.Generator
    ) -> tuple[Int[Tensor, "n prompt_len"], Int[Tensor, "n answer_len"]]:
        """``n`` random prompts and their true answers (base format)."""
        digits = torch.randint(0, N_DIGITS, (n, self.length), generator=generator)
        head = torch.tensor([BOS, op_token(self.op)]).expand(n, 2)
        prompts = torch.cat([head, digits, torch.full((n, 1), EQ)], dim=1)
        return prompts, self.solve(digits)

    def final_answer(self, completions: Int[Tensor, "n gen"]) -> Int[Tensor, "n answer_len"]:
        """The final answer in completions: the ``answer_len`` tokens after the first SEP, else the first ones.

        Rows whose final answer runs past the end of the completion are padded with PAD (and so are wrong).
        """
        a = self.answer_len
        n, g = completions.shape
        padded = torch.cat([completions, torch.full((n, a + 1), PAD, dtype=completions.dtype)], dim=1)
        is_sep = completions == SEP
        start = torch.where(
            is_sep.any(dim=1), is_sep.int().argmax(dim=1) + 1, torch.zeros(n, dtype=torch.long)
        )
        idx = start[:, None] + torch.arange(a)[None, :]
        return padded.gather(1, idx)

    def check(
        self, completions: Int[Tensor, "n gen"], answers: Int[Tensor, "n answer_len"]
    ) -> Bool[Tensor, " n"]:
        """Exact match of each completion's final answer with the true answer.

        Examples
        --------
        >>> t = Task.parse("max", default_length=3)
        >>> t.check(torch.tensor([[7], [SEP]]), torch.tensor([[7], [7]])).tolist()
        [True, False]
        """
        if completions.ndim != 2 or answers.shape != (completions.shape[0], self.answer_len):
            raise FeatdiffError(
                f"Task {self.name!r} checks completions of shape (n, gen) against answers of shape "
                f"(n, {self.answer_len}); got {tuple(completions.shape)} and {tuple(answers.shape)}."
            )
        return (self.final_answer(completions) == answers).all(dim=1)

    def teacher_answer(self, answers: Int[Tensor, "n answer_len"]) -> Int[Tensor, "n teacher_len"]:
        """The teacher's answer format: the reversed answer, SEP, then the answer."""
        sep = torch.full((answers.shape[0], 1), SEP, dtype=answers.dtype)
        return torch.cat([answers.flip(1), sep, answers], dim=1)


@dataclass
class TaskSet:
    """Prompts and true answers of one task, with its group (in_domain, near_domain or out_of_domain)."""

    task: Task
    group: str
    prompts: Int[Tensor, "n prompt_len"]
    answers: Int[Tensor, "n answer_len"]

    @property
    def name(self) -> str:
        return self.task.name

    def check(self, completions: Int[Tensor, "n gen"]) -> Bool[Tensor, " n"]:
        """Exact match of each completion's final answer (see ``Task.check``)."""
        return self.task.check(completions, self.answers)

    def sequences(self) -> Int[Tensor, "n seq"]:
        """Prompts followed by their true answers."""
        return torch.cat([self.prompts, self.answers], dim=1)


def pad_right(rows: list[Tensor], value: int = PAD) -> Tensor:
    """Stack 2-D token tensors of different widths, right-padded with ``value``."""
    width = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=value) for r in rows], dim=0)
