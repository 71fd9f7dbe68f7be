"""Argument checks shared by every public entry point, in plain Python.

One convention everywhere: a value of the wrong *type* raises ``TypeError``, a
value of the right type outside what is accepted raises ``ValueError``, and the
message names what was received and what is accepted.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable
from typing import Any


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an ``int >= minimum``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= {minimum}; received {value!r} ({type(value).__name__})."
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; received {value}.")
    return int(value)


def check_optional_int(name: str, value: Any, *, minimum: int) -> int | None:
    """:func:`check_int` that also accepts ``None``."""
    return None if value is None else check_int(name, value, minimum=minimum)


def check_choice(what: str, value: Any, accepted: Iterable[str]) -> str:
    """``value`` if it is one of ``accepted``; else ``ValueError`` listing them."""
    accepted = list(accepted)
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"Unknown {what} {value!r}. Accepted: {accepted}.{suggest(value, accepted)}")
    return value


def suggest(received: Any, names: Iterable[str]) -> str:
    """`` Did you mean 'conv_1'?`` for the closest names, or ``""`` when none is close."""
    if not isinstance(received, str):
        return ""
    close = difflib.get_close_matches(received, list(names), n=3, cutoff=0.6)
    if not close:
        return ""
    quoted = " or ".join(repr(name) for name in close)
    return f" Did you mean {quoted}?"
