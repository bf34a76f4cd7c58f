"""The one exception type lorita raises for bad input (with one kind of it: a size out of reach), and the one
warning category it uses."""


class LoritaError(ValueError):
    """Bad argument, bad model or bad file: the message says what and how to fix it.

    Example:
        >>> try:
        ...     raise LoritaError("energy must be in (0, 1], got 1.5")
        ... except ValueError as err:
        ...     print(err)
        energy must be in (0, 1], got 1.5
    """


class BudgetOutOfReach(LoritaError):
    """A size no cut of the requested kind can meet (a size a sweep of budgets may simply skip).

    Example:
        >>> issubclass(BudgetOutOfReach, LoritaError)
        True
    """


class LoritaWarning(UserWarning):
    """What lorita warns about (layers left plain, ...): filter it without hiding other warnings.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", LoritaWarning)
        ...     warnings.warn("left 1 layer(s) plain", LoritaWarning)
    """
