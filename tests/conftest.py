"""Shared builders with small defaults; every test is seeded."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


def pytest_configure(config):
    # The suite's models and dictionaries are tiny: one thread is faster than two (less sync overhead).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_sae(W_dec: torch.Tensor | None = None, d_in: int = 16, d_sae: int = 64, k: int = 4, seed: int = 0):
    """A sae-lens TopK SAE built from a dictionary (random unit rows by default)."""
    from featdiff.dictionaries.sae import sae_from_dictionary

    if W_dec is None:
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    return sae_from_dictionary(W_dec, k=k)


def planted_saes(planted, k: int | None = None) -> dict:
    """SAEs built directly from the planted dictionaries (the known-answer upper bound)."""
    k = k or max(1, int(round(2 * planted.meta["k"])))
    return {n: make_sae(D, k=k) for n, D in planted.dictionaries.items()}


@pytest.fixture
def planted():
    from featdiff.synthetic import plant_checkpoints

    return plant_checkpoints(d_in=32, n_atoms=128, seed=0)


WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", *"the a cat dog sat ran on under mat log big small red blue and then it was".split()]


def make_word_tokenizer(words: list[str] | None = None, bos: bool = True):
    """A word-level Hugging Face tokenizer (whitespace split) over ``words`` (default WORDS), offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = WORDS if words is None else words
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"bos_token": "<bos>"} if bos else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>", **special
    )


def make_text_checkpoint(path, seed: int = 0, tokenizer=None, n_positions: int = 32, scale: float = 0.0):
    """A tiny GPT-2 Hugging Face folder with a word-level tokenizer saved beside it (``tokenizer=False``:
    none); ``scale`` perturbs its MLP input weights (a stand-in for post-training)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=len(WORDS), n_positions=n_positions,
                                              bos_token_id=1, eos_token_id=2))
    if scale:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block in model.transformer.h:
                w = block.mlp.c_fc.weight
                w.add_(scale * torch.randn(w.shape, generator=g))
    model.save_pretrained(path)
    if tokenizer is not False:
        (tokenizer or make_word_tokenizer()).save_pretrained(path)
    return path


def make_documents(n: int = 40, seed: int = 0) -> list[str]:
    """``n`` short documents of WORDS (3 to 12 words each), seeded."""
    g = random.Random(seed)
    return [" ".join(g.choice(WORDS[4:]) for _ in range(g.randint(3, 12))) for _ in range(n)]
