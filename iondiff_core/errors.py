"""Errors raised for bad input: each says what is wrong and where."""


class InputError(ValueError):
    """A trajectory or parameter that cannot be analysed.

    The message is meant for the user as it is: one line naming the problem and,
    for files, the path and line number.
    """
