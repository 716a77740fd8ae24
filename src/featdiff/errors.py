"""The one error type featdiff raises for bad input."""

from __future__ import annotations


class FeatdiffError(ValueError):
    """Bad input to a featdiff function: the message names the input and says what to do.

    Examples
    --------
    >>> try:
    ...     raise FeatdiffError("The 'metric' parameter must be one of ['drift']; got 'drfit'.")
    ... except ValueError as e:
    ...     print(type(e).__name__)
    FeatdiffError
    """


def check_choice(param: str, value: object, allowed, where: str = "") -> None:
    """Raise FeatdiffError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        of = f" of {where}" if where else ""
        raise FeatdiffError(f"The '{param}' parameter{of} must be one of {allowed}; got {value!r}.")


class FeatdiffWarning(UserWarning):
    """A reading that may mislead (many dead latents, a low noise floor, few tokens, an unsettled loss):
    the message says what was seen and what to change.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("60 % of the base SAE's latents are dead; lower d_sae.", FeatdiffWarning)
    >>> w[0].category.__name__
    'FeatdiffWarning'
    """
