"""The one exception type lorita raises for bad input."""


class LoritaError(ValueError):
    """Bad argument, bad model or bad file: the message says what and how to fix it.

    Example:
        >>> try:
        ...     raise LoritaError("energy must be in (0, 1], got 1.5")
        ... except ValueError as err:
        ...     print(err)
        energy must be in (0, 1], got 1.5
    """
