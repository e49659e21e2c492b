"""CSV cells that a spreadsheet shows as text, never runs as a formula (OWASP "CSV
injection"): a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return gets a leading apostrophe. Numbers stay numbers (``-1.5e-05`` is not a formula).
Every CSV the library writes goes through :func:`cell` (names, tags and materials are
typed by users; run names come from uploaded file names)."""

from __future__ import annotations

import csv
import io
import numbers
import re

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan)", re.I)


def cell(value):
    """``value`` as a safe CSV cell: numbers and None unchanged, formula-like text quoted with ``'``."""
    if value is None or isinstance(value, (bool, numbers.Number)):
        return value
    text = str(value)
    if text.startswith(FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def writer(buf: io.StringIO):
    """A ``csv.writer`` whose rows pass through :func:`cell`."""
    w = csv.writer(buf)

    class _Safe:
        @staticmethod
        def writerow(row):
            return w.writerow([cell(v) for v in row])

    return _Safe()
