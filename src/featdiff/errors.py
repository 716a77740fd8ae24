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
    """A reading featdiff can give but does not trust (a run that had not settled, many dead latents...);
    the message says what to change.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("72 % of the latents are dead; lower d_sae.", FeatdiffWarning, stacklevel=1)
    >>> issubclass(caught[0].category, UserWarning)
    True
    """
