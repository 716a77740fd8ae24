"""A feature edit: switch features of a dictionary off or amplify them inside one model's forward pass.

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

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from featdiff.dictionaries.crosscoder.model import is_crosscoder
from featdiff.errors import FeatdiffError, check_choice

MODES = ("ablate", "scale")
CODES = ("joint", "single")
EDIT_SITE = "hook_feature_edit"


def feature_edit_hook_name(hook: str) -> str:
    """The name featdiff gives its edit hook point, nested under the TransformerLens hook.

    Examples
    --------
    >>> feature_edit_hook_name("blocks.1.hook_resid_post")
    'blocks.1.hook_resid_post.hook_feature_edit'
    """
    return f"{hook}.{EDIT_SITE}"


# ------------------------------------------------------------------------------------------ dictionaries


def _is_sae(d: Any) -> bool:
    W = getattr(d, "W_dec", None)
    return (
        callable(getattr(d, "encode", None))
        and callable(getattr(d, "decode", None))
        and getattr(W, "ndim", 0) == 2
    )


def dictionary_kind(dictionary: Any) -> str:
    """``"sae"`` or ``"crosscoder"``; raises FeatdiffError for anything else."""
    if is_crosscoder(dictionary):
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
        >>> edit = FeatureEdit(StandardSAE(StandardSAEConfig(d_in=4, d_sae=8)), [0],
        ...                    hook="blocks.0.hook_resid_post")
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
