"""Argument checks shared by the constructors: each names the argument, says what it
must be and what it got, so that a bad value fails where it is given (a constructor, a
TOML file, a `--set` flag) and never deep inside Python or XLA."""

import math
import numbers
from collections.abc import Sequence
from typing import Literal, TypeGuard, overload


def describe(value) -> str:
    """`value` as an error message shows it, with a hint for the common mistakes."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"the string {value!r}"
        return f"the string {value!r} (write numbers without quotes)"
    if isinstance(value, bool):
        return f"the boolean {value!r}"
    if isinstance(value, (numbers.Number, type(None))):
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def _prefix(owner: str) -> str:
    return f"{owner}: " if owner else ""


def is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> TypeGuard[numbers.Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_integer(value, name: str, *, minimum: int | None = 1, owner: str = "") -> int:
    """An integer (not a bool, not a float such as 6.7) at least `minimum`."""
    if not is_integer(value) or (minimum is not None and value < minimum):
        need = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{_prefix(owner)}{name} must be {need}, got {describe(value)}.")
    return int(value)


@overload
def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    optional: Literal[False] = False,
    owner: str = "",
) -> float: ...


@overload
def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    optional: bool,
    owner: str = "",
) -> float | None: ...


def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    optional: bool = False,
    owner: str = "",
) -> float | None:
    """A finite real number in `[minimum, maximum]` (`(minimum, ...]` when `strict`),
    or `None` when `optional`."""
    if value is None and optional:
        return None
    number = float(value) if is_real(value) else math.nan
    ok = math.isfinite(number)
    if ok and minimum is not None:
        ok = number > minimum if strict else number >= minimum
    if ok and maximum is not None:
        ok = number <= maximum
    if not ok:
        if minimum is not None and maximum is not None:
            need = f"in {'(' if strict else '['}{minimum:g}, {maximum:g}]"
        elif minimum == 0:
            need = "a finite positive number" if strict else "a finite non-negative number"
        elif minimum is not None:
            need = f"a finite number {'>' if strict else '>='} {minimum:g}"
        elif maximum is not None:
            need = f"a finite number <= {maximum:g}"
        else:
            need = "a finite number"
        if optional:
            need += " or None"
        raise ValueError(f"{_prefix(owner)}{name} must be {need}, got {describe(value)}.")
    return number


def check_sizes(value, name: str, *, minimum_length: int = 1, owner: str = "") -> tuple[int, ...]:
    """A sequence of positive integers (layer sizes, channel counts)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"{_prefix(owner)}{name} must be a sequence of positive integers, e.g. "
            f"(784, 256, 10), got {describe(value)}."
        )
    for i, n in enumerate(value):
        if not is_integer(n) or n < 1:
            raise ValueError(
                f"{_prefix(owner)}{name}[{i}] must be a positive integer, got {describe(n)} "
                f"(in {tuple(value)!r})."
            )
    if len(value) < minimum_length:
        raise ValueError(
            f"{_prefix(owner)}{name} needs at least {minimum_length} entries, got {tuple(value)!r}."
        )
    return tuple(int(n) for n in value)


def check_flag(value, name: str, *, owner: str = "") -> bool:
    """A boolean (not `0`/`1` or the string `"true"`, which TOML and `--set` spell `true`)."""
    if not isinstance(value, bool):
        raise ValueError(f"{_prefix(owner)}{name} must be true or false, got {describe(value)}.")
    return value
