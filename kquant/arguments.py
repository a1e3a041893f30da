"""The argument gate: each public function checks its parameters here on entry, so a wrong type or value is a
ConfigurationError naming the parameter, the value given and what is expected, never a TypeError from deep inside."""

from __future__ import annotations

import math
import numbers

from kquant.errors import ConfigurationError


def invalid(name: str, value, expected: str) -> ConfigurationError:
    return ConfigurationError(f"{name}={_shown(value)} is not valid; expected {expected}")


def check_type(name: str, value, types, expected: str, *, optional: bool = False):
    if (value is None and optional) or (isinstance(value, types) and not (isinstance(value, bool) and bool not in _tuple(types))):
        return value
    raise invalid(name, value, expected)


def check_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    raise invalid(name, value, "True or False")


def check_int(name: str, value, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """An int (not a bool, not a float, not a string) of at least ``minimum``."""
    if value is None and optional:
        return None
    floor = "" if minimum is None else f" of at least {minimum}"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise invalid(name, value, f"an integer{floor}" + (" or None" if optional else ""))
    return int(value)


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (not a bool, not a string) within ``[minimum, maximum]``."""
    bounds = "" if minimum is None and maximum is None else f" in [{minimum}, {maximum}]".replace("None", "...")
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        raise invalid(name, value, f"a number{bounds}")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    if isinstance(value, str) and value in choices:
        return value
    raise invalid(name, value, "one of " + ", ".join(repr(c) for c in choices))


def check_callable(name: str, value, expected: str, *, optional: bool = False):
    if (value is None and optional) or callable(value):
        return value
    raise invalid(name, value, expected)


def names_list(name: str, value, *, optional: bool = False) -> list[str] | None:
    """Node or op names: one string is one name (``excluded_ops="MatMul"`` means MatMul, not M, a, t, ...);
    otherwise a list or tuple of strings. None (when ``optional``) stays None."""
    if value is None:
        if optional:
            return None
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise invalid(name, value, "a name or a list of names (strings)")


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
