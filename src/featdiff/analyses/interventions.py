"""Switch features off or amplify them inside one model's forward pass, and measure the task effect.

An edit is *error-preserving*: at the dictionary's hook, with codes ``f`` of the activation ``h`` and the
edited codes ``f'`` (selected features set to 0, or multiplied by ``alpha``),

    h' = h + sum_k (f'_k - f_k) d_k

where ``d_k`` is feature k's decoder row of the edited model in raw activation units. Only the change is
added, so the dictionary's reconstruction error stays in ``h'``: an edit that changes nothing gives
``h' == h`` exactly. featdiff names this hook point ``f"{hook}.hook_feature_edit"`` in docs and tables.

Dictionaries: a sae-lens SAE (codes ``sae.encode(h)``), or a crosscoder and the name of the edited model.
A crosscoder's codes depend on every checkpoint's activation of the same token:

- ``codes="joint"`` (exact): the other checkpoints (``others``) run on the same tokens up to the hook's
  layer (``stop_at_layer``), and the codes come from all of them, as in training.
- ``codes="single"`` (cheaper, approximate): only the edited model's encoder term is used, i.e. the other
  checkpoints' inputs are set to zero: ``f = sparse(W_enc^m h + b_enc)``. This is exact only where the
  other checkpoints' encoder terms are small for the edited features; use it when the other checkpoints
  are not at hand or are too costly to run.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from featdiff.core.output import progress_bar
from featdiff.errors import FeatdiffError, check_choice
from featdiff.models.models import stop_layer

MODES = ("ablate", "scale")
CODES = ("joint", "single")
EDIT_SITE = "hook_feature_edit"
EVAL_COLUMNS = [
    "condition",
    "subset",
    "task",
    "accuracy",
    "n",
    "n_controls",
    "p_min",
    "p_value",
    "p_holm",
    "n_tests",
]
ALTERNATIVES = ("less", "greater")
N_CONTROLS = 20


def feature_edit_hook_name(hook: str) -> str:
    """The name featdiff gives its edit hook point, nested under the TransformerLens hook.

    Examples
    --------
    >>> feature_edit_hook_name("blocks.1.hook_resid_post")
    'blocks.1.hook_resid_post.hook_feature_edit'
    """
    return f"{hook}.{EDIT_SITE}"


# ------------------------------------------------------------------------------------------ dictionaries


def _is_crosscoder(d: Any) -> bool:
    W = getattr(d, "W_dec", None)
    return callable(getattr(d, "decoder", None)) and hasattr(d, "names") and getattr(W, "ndim", 0) == 3


def _is_sae(d: Any) -> bool:
    W = getattr(d, "W_dec", None)
    return (
        callable(getattr(d, "encode", None))
        and callable(getattr(d, "decode", None))
        and getattr(W, "ndim", 0) == 2
    )


def dictionary_kind(dictionary: Any) -> str:
    """``"sae"`` or ``"crosscoder"``; raises FeatdiffError for anything else."""
    if _is_crosscoder(dictionary):
        return "crosscoder"
    if _is_sae(dictionary):
        return "sae"
    raise FeatdiffError(
        f"The 'dictionary' must be a sae-lens SAE or a featdiff Crosscoder; got {type(dictionary).__name__}."
    )


def dictionary_d_sae(dictionary: Any) -> int:
    """Number of features of an SAE or a crosscoder."""
    W = dictionary.W_dec
    return int(W.shape[0] if dictionary_kind(dictionary) == "sae" else W.shape[1])


def dictionary_hook(dictionary: Any) -> str | None:
    """The hook a dictionary was trained on, when it records one (sae-lens metadata or crosscoder cfg)."""
    for owner in (
        dictionary,
        getattr(dictionary, "cfg", None),
        getattr(getattr(dictionary, "cfg", None), "metadata", None),
    ):
        for attr in ("hook", "hook_name"):
            value = getattr(owner, attr, None) if owner is not None else None
            if isinstance(value, str) and value:
                return value
    return None


def _crosscoder_single_input(
    cc: Any, model_name: str, h: Float[Tensor, "n d_in"]
) -> Float[Tensor, "n n_models d_in"]:
    names = list(cc.names)
    x = h.new_zeros(h.shape[0], len(names), h.shape[-1])
    x[:, names.index(model_name)] = h
    return x


def _crosscoder_joint_input(
    cc: Any, model_name: str, h: Float[Tensor, "n d_in"], others: Mapping[str, Tensor]
) -> Float[Tensor, "n n_models d_in"]:
    rows = [h if name == model_name else others[name].reshape(h.shape).to(h) for name in cc.names]
    return torch.stack(rows, dim=-2)


# -------------------------------------------------------------------------------------------- the edit


@dataclasses.dataclass
class FeatureEdit:
    """Which features of which dictionary to switch off (``"ablate"``) or multiply by ``alpha`` (``"scale"``).

    Parameters
    ----------
    dictionary: a sae-lens SAE or a featdiff Crosscoder.
    features: feature indices to edit (an empty list edits nothing).
    mode: ``"ablate"`` (f'_k = 0) or ``"scale"`` (f'_k = alpha * f_k).
    alpha: the factor of ``"scale"`` (ignored by ``"ablate"``).
    model_name: the crosscoder name of the edited model (required for a crosscoder).
    others: ``{name: HookedTransformer}`` of the crosscoder's other checkpoints (needed by ``codes="joint"``).
    codes: ``"joint"`` (exact crosscoder codes) or ``"single"`` (edited model's encoder term only).
    hook: the TransformerLens hook to edit; defaults to the hook the dictionary records.

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> edit = FeatureEdit(sae, [1, 2], mode="scale", alpha=1.0, hook="blocks.0.hook_resid_post")
    >>> h = torch.randn(3, 4)
    >>> bool(torch.equal(edit.apply(h), h))  # alpha=1 changes nothing, exactly
    True
    >>> edit.hook_point
    'blocks.0.hook_resid_post.hook_feature_edit'
    """

    dictionary: Any
    features: Sequence[int]
    mode: str = "ablate"
    alpha: float = 0.0
    model_name: str | None = None
    others: Mapping[str, Any] | None = None
    codes: str = "joint"
    hook: str | None = None

    def __post_init__(self) -> None:
        self.kind = dictionary_kind(self.dictionary)
        check_choice("mode", self.mode, MODES, where="FeatureEdit")
        check_choice("codes", self.codes, CODES, where="FeatureEdit")
        d_sae = dictionary_d_sae(self.dictionary)
        try:
            feats = [int(k) for k in self.features]
        except (TypeError, ValueError):
            raise FeatdiffError(
                f"The 'features' of FeatureEdit must be a list of ints; got {self.features!r}."
            ) from None
        bad = [k for k in feats if not 0 <= k < d_sae]
        if bad:
            raise FeatdiffError(
                f"Feature indices {bad[:10]} are out of range for a dictionary of d_sae={d_sae}; "
                f"pass indices in [0, {d_sae})."
            )
        if len(set(feats)) != len(feats):
            raise FeatdiffError(f"The 'features' of FeatureEdit contain duplicates: {feats}.")
        self.features = feats
        if self.mode == "scale" and not isinstance(self.alpha, (int, float)):
            raise FeatdiffError(f"The 'alpha' of FeatureEdit must be a number; got {self.alpha!r}.")
        if self.hook is None:
            self.hook = dictionary_hook(self.dictionary)
        if self.hook is None:
            raise FeatdiffError(
                "The dictionary does not record its hook; pass hook=..., e.g. hook='blocks.1.hook_resid_post'."
            )
        if self.kind == "crosscoder":
            names = list(self.dictionary.names)
            if self.model_name not in names:
                raise FeatdiffError(
                    f"A crosscoder edit needs model_name, one of the crosscoder's names {names}; "
                    f"got {self.model_name!r}."
                )
            if self.codes == "joint":
                missing = [n for n in names if n != self.model_name and n not in (self.others or {})]
                if missing:
                    raise FeatdiffError(
                        f"codes='joint' needs the other checkpoints of the crosscoder; 'others' lacks {missing}. "
                        "Pass others={name: model}, or codes='single' for the cheaper approximation."
                    )

    @property
    def hook_point(self) -> str:
        """``f"{hook}.hook_feature_edit"``, the name of this edit in docs and tables."""
        return feature_edit_hook_name(self.hook)

    @property
    def is_identity(self) -> bool:
        """True when the edit changes nothing (no features, or scaling by 1)."""
        return not self.features or (self.mode == "scale" and float(self.alpha) == 1.0)

    @property
    def needs_others(self) -> bool:
        """True when codes need the other checkpoints' activations (a crosscoder with ``codes="joint"``)."""
        return self.kind == "crosscoder" and self.codes == "joint"

    def with_features(self, features: Sequence[int]) -> FeatureEdit:
        """The same edit on other features (e.g. a random control)."""
        return dataclasses.replace(self, features=list(features))

    def on_device(self, device: torch.device | str) -> Any:
        """The dictionary on ``device`` (where the model's activations are): the dictionary itself when it is
        there already, else a copy moved there once and kept by this edit; the caller's dictionary stays put.

        Examples
        --------
        >>> import torch
        >>> from sae_lens import StandardSAE, StandardSAEConfig
        >>> edit = FeatureEdit(StandardSAE(StandardSAEConfig(d_in=4, d_sae=8)), [0], hook="blocks.0.hook_resid_post")
        >>> edit.on_device("meta").W_dec.device, edit.dictionary.W_dec.device
        (device(type='meta'), device(type='cpu'))
        """
        device = torch.device(device)
        param = next(iter(self.dictionary.parameters()), None) if hasattr(self.dictionary, "parameters") else None
        if param is None or param.device == device:
            return self.dictionary
        placed = self.__dict__.setdefault("_placed", {})
        if device not in placed:
            placed[device] = copy.deepcopy(self.dictionary).to(device)
        return placed[device]

    def encode(
        self, h: Float[Tensor, "... d_in"], others: Mapping[str, Tensor] | None = None
    ) -> Float[Tensor, "... d_sae"]:
        """Codes of the edited model's activations ``h`` (``others``: the other checkpoints' activations),
        computed on ``h``'s device (``on_device``)."""
        dictionary = self.on_device(h.device)
        if self.kind == "sae":
            return dictionary.encode(h)
        flat = h.reshape(-1, h.shape[-1])
        if self.needs_others:
            if others is None:
                raise FeatdiffError(
                    "codes='joint' needs the other checkpoints' activations of the same tokens."
                )
            x = _crosscoder_joint_input(
                dictionary, self.model_name, flat, {n: v.reshape(flat.shape) for n, v in others.items()}
            )
        else:
            x = _crosscoder_single_input(dictionary, self.model_name, flat)
        f = dictionary.encode(x)
        return f.reshape(*h.shape[:-1], f.shape[-1])

    def apply(
        self, h: Float[Tensor, "... d_in"], others: Mapping[str, Tensor] | None = None
    ) -> Float[Tensor, "... d_in"]:
        """``h + sum_k (f'_k - f_k) d_k`` over the edited features (``h`` itself when nothing changes)."""
        if self.is_identity:
            return h
        with torch.no_grad():
            f = self.encode(h, others)
            idx = torch.tensor(self.features, device=f.device)
            fk = f[..., idx]
            diff = -fk if self.mode == "ablate" else (float(self.alpha) - 1.0) * fk
            if self.kind == "crosscoder":
                d = self.on_device(h.device).decoder(self.model_name)[idx]
                delta = diff @ d.to(diff)
            else:
                delta = self._sae_delta(f, idx, diff, self.on_device(h.device))
        return h + delta.to(h.dtype)

    def _sae_delta(self, f: Tensor, idx: Tensor, diff: Tensor, sae: Any) -> Tensor:
        norm = getattr(sae.cfg, "normalize_activations", "none")
        if norm in (None, "none"):
            return diff @ sae.W_dec[idx].to(diff)
        # normalised SAEs: decoder rows are not in raw units; take the difference of raw-unit decodes
        f_new = f.clone()
        f_new[..., idx] = f[..., idx] + diff
        return sae.decode(f_new) - sae.decode(f)


# ------------------------------------------------------------------------------------------------ hooks


def _check_model_hook(model: Any, hook: str) -> None:
    if hook not in getattr(model, "hook_dict", {}):
        valid = [h for h in getattr(model, "hook_dict", {}) if h.endswith("hook_resid_post")]
        raise FeatdiffError(
            f"Hook {hook!r} does not exist in the model; valid residual hooks: {valid[:8]}. "
            "Build one with featdiff.hook_name(layer, site)."
        )


def other_activations(
    edit: FeatureEdit, tokens: Int[Tensor, "batch pos"]
) -> dict[str, Float[Tensor, "batch pos d_in"]]:
    """The other checkpoints' activations at the edit's hook on ``tokens`` (run up to the hook's layer)."""
    out = {}
    stop = stop_layer(edit.hook)
    memo = _OTHERS_MEMO.get("active")
    for name, other in (edit.others or {}).items():
        if name == edit.model_name or name not in edit.dictionary.names:
            continue
        _check_model_hook(other, edit.hook)
        key = None
        if memo is not None:
            key = (id(other), edit.hook, tuple(tokens.shape), tokens.detach().cpu().numpy().tobytes())
            if key in memo:
                out[name] = memo[key]
                continue
        with torch.no_grad():
            _, cache = other.run_with_cache(tokens, names_filter=edit.hook, stop_at_layer=stop)
        out[name] = cache[edit.hook]
        if memo is not None:
            if len(memo) >= _OTHERS_MEMO_SIZE:
                memo.clear()
            memo[key] = out[name]
    return out


# The other checkpoints run unedited: within one evaluate_intervention call the edit and its random
# controls feed them the same token sequences again and again (controls seldom change a generated token),
# so their activations are remembered by token content for the duration of that call only.
_OTHERS_MEMO: dict[str, dict] = {}
_OTHERS_MEMO_SIZE = 512


@contextlib.contextmanager
def _remember_others() -> Iterator[None]:
    outer = _OTHERS_MEMO.get("active")
    _OTHERS_MEMO["active"] = {} if outer is None else outer
    try:
        yield
    finally:
        if outer is None:
            _OTHERS_MEMO.pop("active", None)


def _edit_hook_fn(edit: FeatureEdit, state: dict) -> Callable:
    def hook_fn(h: Tensor, hook: Any) -> Tensor:
        others = None
        if edit.needs_others and not edit.is_identity:
            tokens = state.get("tokens")
            if tokens is None or tuple(tokens.shape) != tuple(h.shape[:2]):
                raise FeatdiffError(
                    f"codes='joint' needs the token ids of the whole sequence at {edit.hook_point}; got "
                    f"activations of shape {tuple(h.shape)} and tokens "
                    f"{None if tokens is None else tuple(tokens.shape)}. Use edit_features(...) or "
                    "generate_greedy(...), which run without a KV cache."
                )
            others = other_activations(edit, tokens)
        return edit.apply(h, others)

    return hook_fn


def hooks(model: Any, edit: FeatureEdit) -> list[tuple[str, Callable]]:
    """``fwd_hooks`` for ``model.run_with_hooks`` / ``model.hooks`` that apply ``edit``.

    ``codes="joint"`` needs the token ids: use ``edit_features`` (or a model with ``use_hook_tokens``).

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> fwd = hooks(model, FeatureEdit(sae, [0], hook="blocks.0.hook_resid_post"))
    >>> model.run_with_hooks(torch.tensor([[1, 2, 3]]), fwd_hooks=fwd).shape
    torch.Size([1, 3, 7])
    """
    _check_model_hook(model, edit.hook)
    state: dict = {}
    out = []
    if edit.needs_others:
        if "hook_tokens" not in model.hook_dict:
            raise FeatdiffError(
                "codes='joint' needs the token ids; use `with edit_features(model, edit):` instead of hooks(), "
                "or codes='single'."
            )

        def capture(tokens: Tensor, hook: Any) -> Tensor:
            state["tokens"] = tokens
            return tokens

        out.append(("hook_tokens", capture))
    out.append((edit.hook, _edit_hook_fn(edit, state)))
    return out


@contextlib.contextmanager
def edit_features(model: Any, edit: FeatureEdit | Sequence[FeatureEdit]) -> Iterator[Any]:
    """Apply one edit (or several, in order) to every forward pass of ``model`` inside the block.

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> tokens = torch.tensor([[1, 2, 3]])
    >>> with edit_features(model, FeatureEdit(sae, [], hook="blocks.0.hook_resid_post")):
    ...     edited = model(tokens)
    >>> bool(torch.equal(edited, model(tokens)))
    True
    """
    edits = [edit] if isinstance(edit, FeatureEdit) else list(edit)
    for e in edits:
        if not isinstance(e, FeatureEdit):
            raise FeatdiffError(f"edit_features takes FeatureEdit objects; got {type(e).__name__}.")
        _check_model_hook(model, e.hook)
    state: dict = {}
    handle = None
    if any(e.needs_others for e in edits):

        def capture(module: Any, args: tuple) -> None:
            state["tokens"] = args[0] if args else None

        handle = model.embed.register_forward_pre_hook(capture)
    try:
        with model.hooks(fwd_hooks=[(e.hook, _edit_hook_fn(e, state)) for e in edits]):
            yield model
    finally:
        if handle is not None:
            handle.remove()


# ------------------------------------------------------------------------------------------- generation


def _as_prompt_groups(prompts: Any) -> list[tuple[list[int], Tensor]]:
    """Group prompts by length: [(row indices, tokens of that length)]."""
    if isinstance(prompts, Tensor):
        if prompts.ndim != 2 or prompts.dtype.is_floating_point:
            raise FeatdiffError(
                f"prompts must be token ids of shape (n_prompts, pos); got {tuple(prompts.shape)}."
            )
        return [(list(range(prompts.shape[0])), prompts)]
    rows = [torch.as_tensor(p) for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(rows):
        if p.ndim != 1:
            raise FeatdiffError(
                f"Each prompt must be a 1-D tensor of token ids; prompt {i} has shape {tuple(p.shape)}."
            )
        groups.setdefault(len(p), []).append(i)
    return [(idx, torch.stack([rows[i] for i in idx])) for idx in groups.values()]


def generate_greedy(
    model: Any,
    prompts: Int[Tensor, "n_prompts pos"] | Sequence[Int[Tensor, " pos"]],
    n_new_tokens: int,
    fwd_hooks: list[tuple[str, Callable]] | None = None,
    edit: FeatureEdit | Sequence[FeatureEdit] | None = None,
    batch_size: int = 64,
) -> Int[Tensor, "n_prompts n_new_tokens"]:
    """Greedy decoding of exactly ``n_new_tokens`` tokens, with hooks / an edit active on every step.

    Every step runs the whole sequence (no KV cache), so hooks see full sequences (as ``codes="joint"``
    needs); for the short fixed-length answers of the lab's tasks that costs little.

    Examples
    --------
    >>> import torch
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> generate_greedy(model, torch.tensor([[1, 2], [3, 4]]), 3).shape
    torch.Size([2, 3])
    """
    if isinstance(n_new_tokens, bool) or not isinstance(n_new_tokens, int) or n_new_tokens < 1:
        raise FeatdiffError(f"n_new_tokens must be a positive int; got {n_new_tokens!r}.")
    groups = _as_prompt_groups(prompts)
    n = sum(len(idx) for idx, _ in groups)
    device = next(model.parameters()).device
    out = torch.zeros(n, n_new_tokens, dtype=torch.long)
    ctx = edit_features(model, edit) if edit is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx, model.hooks(fwd_hooks=list(fwd_hooks or [])):
        for idx, toks in groups:
            for start in range(0, len(idx), batch_size):
                seq = toks[start : start + batch_size].to(device)
                for step in range(n_new_tokens):
                    nxt = model(seq)[:, -1].argmax(-1)
                    out[idx[start : start + batch_size], step] = nxt.cpu()
                    seq = torch.cat([seq, nxt[:, None]], dim=1)
    return out


def exact_match(
    predictions: Int[Tensor, "n n_answer"], answers: Int[Tensor, "n n_answer"]
) -> Bool[Tensor, " n"]:
    """Whether every answer token was generated (the lab's exact-match criterion)."""
    return (predictions.to(answers.device) == answers).all(dim=-1)


# ------------------------------------------------------------------------------------------- evaluation


def feature_codes(
    model: Any, edit: FeatureEdit, tokens: Int[Tensor, "batch pos"], batch_size: int = 64
) -> Float[Tensor, "batch pos d_sae"]:
    """Codes of the edit's dictionary on ``model``'s activations at the edit's hook (no edit applied)."""
    _check_model_hook(model, edit.hook)
    stop = stop_layer(edit.hook)
    chunks = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            t = tokens[start : start + batch_size]
            _, cache = model.run_with_cache(t, names_filter=edit.hook, stop_at_layer=stop)
            others = other_activations(edit, t) if edit.needs_others else None
            chunks.append(edit.encode(cache[edit.hook], others))
    return torch.cat(chunks)


def live_features(model: Any, edit: FeatureEdit, tokens: Int[Tensor, "batch pos"]) -> list[int]:
    """Features of the edit's dictionary that fire at least once on ``tokens`` (in ``model``)."""
    f = feature_codes(model, edit, tokens)
    return torch.nonzero((f.reshape(-1, f.shape[-1]) != 0).any(0)).flatten().tolist()


def random_features(pool: Sequence[int], n: int, exclude: Sequence[int] = (), seed: int = 0) -> list[int]:
    """``n`` features drawn without replacement from ``pool`` minus ``exclude`` (seeded).

    Examples
    --------
    >>> random_features(range(10), 3, exclude=[0, 1], seed=0) == random_features(range(10), 3, exclude=[0, 1], seed=0)
    True
    """
    ex = set(int(k) for k in exclude)
    cand = sorted(set(int(k) for k in pool) - ex)
    if len(cand) < n:
        raise FeatdiffError(
            f"Cannot draw {n} random control features from {len(cand)} live features outside the edit; "
            "pass more evaluation prompts or a smaller feature set."
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(cand), generator=g)[:n]
    return sorted(cand[i] for i in perm.tolist())


def matched_controls(
    features: Sequence[int],
    frequency: Sequence[float] | Tensor,
    pool: Sequence[int],
    n_controls: int = N_CONTROLS,
    width: int = 10,
    seed: int = 0,
) -> list[list[int]]:
    """``n_controls`` random feature sets of ``len(features)`` features that fire as often as ``features``.

    Each edited feature k gets, in every control set, a partner drawn uniformly from the ``width`` features
    of ``pool`` (minus ``features``) whose firing frequency is nearest to k's on a log scale (the next
    nearest when those are taken by the set's other partners). So a control set removes about as much
    activity as the edit, feature for feature. ``frequency``: the firing frequency of every feature
    (indexed by feature id). Seeded; set i is the same for the same inputs and seed.

    Examples
    --------
    >>> freq = [0.5, 0.4, 0.01, 0.02, 0.45, 0.011, 0.6, 0.009]
    >>> sets = matched_controls([0, 2], freq, pool=range(8), n_controls=3, width=2, seed=0)
    >>> [len(c) for c in sets], all(0 not in c and 2 not in c for c in sets)
    ([2, 2, 2], True)
    >>> all(sorted(freq[k] > 0.1 for k in c) == [False, True] for c in sets)  # one frequent, one rare
    True
    """
    import numpy as np

    feats = [int(k) for k in features]
    if isinstance(frequency, Tensor):
        freq = frequency.detach().cpu().double().numpy()
    else:
        freq = np.asarray(frequency, dtype=float)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise FeatdiffError(f"The 'width' of matched_controls must be a positive int; got {width!r}.")
    if isinstance(n_controls, bool) or not isinstance(n_controls, int) or n_controls < 0:
        raise FeatdiffError(f"n_controls must be an int >= 0; got {n_controls!r}.")
    bad = [k for k in [*feats, *pool] if not 0 <= int(k) < len(freq)]
    if bad:
        raise FeatdiffError(
            f"Features {bad[:5]} have no firing frequency; 'frequency' has {len(freq)} entries."
        )
    cand = np.array(sorted(set(int(k) for k in pool) - set(feats)), dtype=np.int64)
    if len(cand) < len(feats):
        raise FeatdiffError(
            f"Cannot draw {len(feats)} matched control features from {len(cand)} live features outside "
            "the edit; pass more evaluation prompts or a smaller feature set."
        )
    logf = np.log(np.clip(freq, 1e-12, None))
    order = {k: cand[np.argsort(np.abs(logf[cand] - logf[k]), kind="stable")] for k in feats}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_controls):
        taken: set[int] = set()
        for k in rng.permutation(feats):
            free = [int(j) for j in order[int(k)] if int(j) not in taken][:width]
            taken.add(free[int(rng.integers(len(free)))])
        out.append(sorted(taken))
    return out


def empirical_p_value(observed: float, controls: Sequence[float], alternative: str = "greater") -> float:
    """Empirical p-value of ``observed`` against control draws: (1 + #as extreme) / (1 + n_controls).

    ``alternative="greater"``: the effect is that ``observed`` is larger than chance (a control is as
    extreme when it is >= observed); ``"less"``: smaller (control <= observed). Ties count against the
    effect, so the p-value is conservative; its smallest value is 1 / (1 + n_controls). NaN without
    controls.

    Examples
    --------
    >>> empirical_p_value(0.9, [0.1] * 19)
    0.05
    >>> empirical_p_value(0.2, [0.1, 0.3, 0.2, 0.5], alternative="less")
    0.6
    """
    check_choice("alternative", alternative, ALTERNATIVES, where="empirical_p_value")
    c = [float(x) for x in controls]
    if not c:
        return float("nan")
    obs = float(observed)
    hits = sum(x >= obs for x in c) if alternative == "greater" else sum(x <= obs for x in c)
    return (1 + hits) / (1 + len(c))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (Holm 1979: step-down Bonferroni, family-wise error rate at any dependence).

    The m finite p-values sorted ascending, p_(1) <= ... <= p_(m), are adjusted to
    ``min(1, max_{j <= i} (m - j + 1) p_(j))`` and returned in the input's order; NaN stays NaN and is
    not counted in m. Written by hand: scipy.stats.false_discovery_control is Benjamini-Hochberg (false
    discovery rate), not Holm, and statsmodels is not a dependency.

    Examples
    --------
    By hand: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 give 0.04, 0.09, 0.08, 0.20; the running
    maximum makes the third 0.09.

    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03, 0.20])]
    [0.04, 0.09, 0.09, 0.2]
    >>> holm([0.5, float("nan"), 0.3])  # two tests: 0.3 * 2 = 0.6, then max(0.6, 0.5 * 1)
    [0.6, nan, 0.6]
    """
    p = [float(x) for x in p_values]
    finite = sorted((x, i) for i, x in enumerate(p) if math.isfinite(x))
    m, out, running = len(finite), [math.nan] * len(p), 0.0
    for rank, (x, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * x))
        out[i] = running
    return out


def add_holm(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` with ``p_holm`` (Holm-adjusted ``p_value``, ``holm``) and ``n_tests`` (the number of
    finite p-values in the row's family) set; a family is all rows with one value of the ``by`` columns
    (``()``: the whole table). Rows without a p-value get NaN and 0. Returns a copy.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"subset": ["a", "a", "b", "a"], "p_value": [0.01, 0.04, 0.3, float("nan")]})
    >>> r = add_holm(t, by=["subset"])
    >>> r.p_holm.tolist(), r.n_tests.tolist()
    ([0.02, 0.04, 0.3, nan], [2, 2, 1, 0])
    """
    out = table.copy()
    out["p_holm"] = math.nan
    out["n_tests"] = 0
    groups = out.groupby(list(by), sort=False, dropna=False).groups if by else {None: out.index}
    for idx in groups.values():
        p = out.loc[idx, "p_value"]
        out.loc[idx, "p_holm"] = holm(p.tolist())
        out.loc[idx, "n_tests"] = int(p.notna().sum())
    out.loc[out["p_value"].isna(), "n_tests"] = 0
    return out.astype({"p_holm": "float64", "n_tests": "int64"})


def default_alternative(edit: FeatureEdit) -> str:
    """The direction an edit of carrier features is expected to move accuracy: ``"less"`` for an
    ablation or a scale below 1, ``"greater"`` for amplification."""
    return "less" if edit.mode == "ablate" or float(edit.alpha) < 1 else "greater"


def _correct(
    model: Any,
    prompts: Tensor,
    answers: Tensor,
    edit: FeatureEdit | None,
    eval_fn,
    checker,
    n_new: int,
    batch_size: int,
) -> Tensor:
    if eval_fn is not None:
        ctx = edit_features(model, edit) if edit is not None else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            res = torch.as_tensor(eval_fn(model, prompts, answers)).bool().flatten()
    else:
        pred = generate_greedy(model, prompts, n_new, edit=edit, batch_size=batch_size)
        res = torch.as_tensor((checker or exact_match)(pred, answers)).bool().flatten()
    if res.shape[0] != len(prompts):
        raise FeatdiffError(f"The evaluation returned {res.shape[0]} results for {len(prompts)} samples.")
    return res


def evaluate_intervention(
    model: Any,
    edit: FeatureEdit,
    tasks: Mapping[str, tuple[Int[Tensor, "n pos"], Int[Tensor, "n n_answer"]]],
    critical: Mapping[str, Sequence[int]] | None = None,
    eval_fn: Callable[[Any, Tensor, Tensor], Tensor] | None = None,
    checker: Callable[[Tensor, Tensor], Tensor] | Mapping[str, Callable] | None = None,
    n_new_tokens: int | Mapping[str, int] | None = None,
    n_random: int = N_CONTROLS,
    live: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    frequency: Sequence[float] | Tensor | None = None,
    alternative: str | None = None,
    match_width: int = 10,
) -> pd.DataFrame:
    """Task accuracy without the edit, with it, and with equal-size random-feature edits (the controls).

    ``tasks``: ``{task: (prompts, answers)}``; by default a sample is correct when greedy decoding of
    ``n_new_tokens`` tokens (default ``answers.shape[1]``; an int or ``{task: int}``) reproduces
    ``answers`` exactly. ``checker(pred, answers) -> per-sample bool`` (or ``{task: checker}``, e.g.
    ``{name: ts.task.check}`` for the lab) replaces exact match; ``eval_fn(model, prompts, answers) ->
    per-sample bool`` replaces generation and checking (it runs with the edit active). ``critical``: ``{task: sample
    indices}`` for the critical subset. Score an edit on samples that took no part in choosing its
    features (e.g. ``GeneralizationFeatures.heldout(task)``): on the selection samples the effect is
    biased upward.

    Controls: ``n_random`` seeded sets of ``len(edit.features)`` features from the live features
    (``live``, or those that fire on the tasks' prompts) outside the edit; with ``frequency`` (every
    feature's firing frequency) each set is matched to the edit's firing frequencies feature by feature
    (``matched_controls``, ``match_width``), else drawn uniformly (``random_features``). The edit's
    empirical p-value per (task, subset) is ``(1 + #controls whose accuracy is at least as extreme) /
    (1 + n_random)`` (``empirical_p_value``) in the direction ``alternative`` (``"less"``: the edit lowers
    accuracy; ``"greater"``: it raises it; default: ``"less"`` for an ablation or alpha < 1, else
    ``"greater"``). With 20 controls the smallest possible p is 1/21 = 0.048 (``p_min``).

    Several tasks give several tests: ``p_holm`` is ``p_value`` Holm-adjusted (``holm``) within its
    subset, one family per subset (the critical subset tests the features, the full subset their side
    effects), and ``n_tests`` is the family's size. The smallest attainable ``p_holm`` is
    ``n_tests * p_min``: with 4 tests a Holm-adjusted p below 0.05 needs ``n_random >= 80``.

    Returns a DataFrame with columns condition (``none`` | ``edit`` | ``random``), subset (``critical`` |
    ``full``), task, accuracy (float; ``random``: the mean over the controls), n (samples, int),
    n_controls (int), p_min (float: 1 / (1 + n_controls), the smallest p the controls allow), p_value
    (float), p_holm (float) and n_tests (int); the last four on the ``edit`` rows only (NaN or 0 elsewhere
    and without controls).

    Examples
    --------
    >>> import torch
    >>> from sae_lens import StandardSAE, StandardSAEConfig
    >>> from transformer_lens import HookedTransformer
    >>> model = HookedTransformer(dict(n_layers=1, d_model=4, n_ctx=8, d_head=2, d_vocab=7, act_fn="relu"))
    >>> sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8))
    >>> edit = FeatureEdit(sae, [0], hook="blocks.0.hook_resid_post")
    >>> tasks = {"copy": (torch.tensor([[1, 2], [3, 4]]), torch.tensor([[2], [4]]))}
    >>> table = evaluate_intervention(model, edit, tasks, n_random=0, progress=False)
    >>> list(table.condition), table.columns[-4:].tolist()
    (['none', 'edit'], ['p_min', 'p_value', 'p_holm', 'n_tests'])
    """

    if not isinstance(edit, FeatureEdit):
        raise FeatdiffError(f"evaluate_intervention needs a FeatureEdit; got {type(edit).__name__}.")
    if not isinstance(tasks, Mapping) or not tasks:
        raise FeatdiffError(
            "The 'tasks' of evaluate_intervention must be a non-empty dict {task: (prompts, answers)}."
        )
    _check_model_hook(model, edit.hook)
    critical = dict(critical or {})
    unknown = sorted(set(critical) - set(tasks))
    if unknown:
        raise FeatdiffError(f"critical names tasks {unknown} that are not in tasks {list(tasks)}.")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise FeatdiffError(
            f"The 'n_random' parameter of evaluate_intervention must be an int >= 0; got {n_random!r}."
        )
    alternative = default_alternative(edit) if alternative is None else alternative
    check_choice("alternative", alternative, ALTERNATIVES, where="evaluate_intervention")
    controls: list[list[int]] = []
    if n_random > 0 and edit.features:
        if live is None:
            live_set: set[int] = set()
            for prompts, _ in tasks.values():
                for _, toks in _as_prompt_groups(prompts):
                    live_set.update(live_features(model, edit, toks))
            live = sorted(live_set)
        if frequency is not None:
            controls = matched_controls(
                edit.features, frequency, live, n_random, width=match_width, seed=seed
            )
        else:
            controls = [
                random_features(live, len(edit.features), edit.features, seed=seed + i)
                for i in range(n_random)
            ]
    conditions: list[tuple[str, FeatureEdit | None]] = [("none", None), ("edit", edit)]
    conditions += [("random", edit.with_features(c)) for c in controls]
    bar = progress_bar(total=len(tasks) * len(conditions), disable=not progress, desc="evaluate_intervention")
    with _remember_others():
        table = _evaluate_conditions(
            model,
            tasks,
            critical,
            conditions,
            controls,
            alternative,
            eval_fn,
            checker,
            n_new_tokens,
            batch_size,
            bar,
        )
    bar.close()
    return table


def _evaluate_conditions(
    model, tasks, critical, conditions, controls, alternative, eval_fn, checker, n_new_tokens, batch_size, bar
) -> pd.DataFrame:
    """The rows of ``evaluate_intervention``: each condition on each task, then the p-values."""
    rows = []
    for task, (prompts, answers) in tasks.items():
        answers = torch.as_tensor(answers)
        if len(prompts) != len(answers):
            raise FeatdiffError(f"Task {task!r} has {len(prompts)} prompts but {len(answers)} answers.")
        crit = torch.as_tensor(list(critical.get(task, [])), dtype=torch.long)
        if len(crit) and (crit.min() < 0 or crit.max() >= len(prompts)):
            raise FeatdiffError(f"critical samples of task {task!r} must be indices in [0, {len(prompts)}).")
        n_new = n_new_tokens.get(task) if isinstance(n_new_tokens, Mapping) else n_new_tokens
        n_new = answers.shape[1] if n_new is None else n_new
        task_checker = checker.get(task) if isinstance(checker, Mapping) else checker
        acc: dict[str, list[tuple[float, float]]] = {}
        for cond, e in conditions:
            ok = _correct(model, prompts, answers, e, eval_fn, task_checker, n_new, batch_size).float()
            crit_acc = float(ok[crit].mean()) if len(crit) else float("nan")
            acc.setdefault(cond, []).append((crit_acc, float(ok.mean())))
            bar.update()
        nc = len(controls)
        for cond, vals in acc.items():
            mean = torch.tensor(vals).mean(0)
            for j, subset, n in ((0, "critical", len(crit)), (1, "full", len(prompts))):
                if subset == "critical" and task not in critical:
                    continue
                p = p_min = math.nan
                if cond == "edit" and nc:
                    p = empirical_p_value(vals[0][j], [v[j] for v in acc["random"]], alternative)
                    p_min = 1 / (1 + nc)
                rows.append((cond, subset, task, float(mean[j]), n, nc, p_min, p))
    table = pd.DataFrame(rows, columns=EVAL_COLUMNS[:-2])
    table = table.astype(
        {"n": "int64", "accuracy": "float64", "n_controls": "int64", "p_min": "float64", "p_value": "float64"}
    )
    return add_holm(table, by=["subset"])[EVAL_COLUMNS]
