"""resource.Quantity as the API server parses and writes it back (k8s.io/apimachinery/pkg/api/resource:
ParseQuantity, Quantity.String / CanonicalizeBytes, parseQuantityString, the suffixer).

A quantity keeps its format: binary SI (``Ki`` ... ``Ei``), decimal SI (``n`` ... ``E``, none) or a decimal
exponent (``e3``). Parsing rounds a value up to the nearest nano (``0.9n`` is ``1n``) and caps a binary one at
2^63-1. Written back, the suffix is the largest one leaving a whole mantissa (``1000m`` -> ``1``, ``1024Mi`` ->
``1Gi``, ``0.5`` -> ``500m``, ``1000e0`` -> ``1e3``, ``2000Mi`` stays); a binary value below 1024 or not a
whole number is written in decimal SI (``0.5Gi`` -> ``512Mi``, ``0.5Ki`` -> ``512``, ``.001Ki`` -> ``1024m``).
A string already in that form is kept as it was given (ParseQuantity's fast path keeps it: ``+1`` and ``1E3``
stay as written). Quirks kept: a decimal SI value past ``E`` loses its suffix (``1000E`` -> ``1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

BINARY, DECIMAL, EXPONENT = "BinarySI", "DecimalSI", "DecimalExponent"
FORMAT_WRONG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
NUMERIC = "unable to parse numeric part of quantity"
SUFFIX = "unable to parse quantity's suffix"

_DEC = {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DEC_BY_EXP = {e: s for s, e in _DEC.items()}
_BIN = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BIN_BY_EXP = {0: "", **{e: s for s, e in _BIN.items()}}
_DIGITS = "0123456789"
_SUFFIX_CHARS = "eEinumkKMGTP"
MAX_INT64 = 2**63 - 1
NANO = -9
MAX_INT64_FACTORS = 18


@dataclass(frozen=True)
class Quantity:
    """``unscaled * 10**exp``, in ``format``; ``text``: the string given when it was kept (Quantity.s)."""

    unscaled: int
    exp: int
    format: str
    text: str = ""

    def __str__(self) -> str:
        return self.text or _canonical(self.unscaled, self.exp, self.format)

    @property
    def value(self) -> Decimal:
        return Decimal(f"{self.unscaled}E{self.exp}")


def _scan(s: str) -> tuple[bool, str, str, str, str]:
    """parseQuantityString: (positive, value, num, denom, suffix); ValueError(FORMAT_WRONG)."""
    positive, pos, end = True, 0, len(s)
    if pos < end and s[0] in "+-":
        positive, pos = s[0] == "+", pos + 1
    while True:  # leading zeros
        if pos >= end:
            return positive, "0", "0", "", ""
        if s[pos] != "0":
            break
        pos += 1
    i = pos
    while i < end and s[i] in _DIGITS:
        i += 1
    if i >= end:
        return positive, s, s[pos:], "", ""
    num, pos = s[pos:i] or "0", i
    denom = ""
    if pos < end and s[pos] == ".":
        pos += 1
        i = pos
        while i < end and s[i] in _DIGITS:
            i += 1
        if i >= end:
            return positive, s, num, s[pos:], ""
        denom, pos = s[pos:i], i
    value, start = s[:pos], pos
    while pos < end and s[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and s[pos] in "+-":
        pos += 1
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise ValueError(FORMAT_WRONG)
    return positive, value, num, denom, s[start:]


def _interpret(suffix: str) -> tuple[int, int, str]:
    """The suffixer's interpret: (base, exponent, format); ValueError(SUFFIX)."""
    if suffix in _DEC:
        return 10, _DEC[suffix], DECIMAL
    if suffix in _BIN:
        return 2, _BIN[suffix], BINARY
    digits = suffix[2:] if suffix[1:2] in ("+", "-") else suffix[1:]
    if len(suffix) > 1 and suffix[0] in "eE" and digits.isascii() and digits.isdigit():
        parsed = int(suffix[1:])
        if -(2**63) <= parsed <= MAX_INT64:
            return 10, (parsed + 2**31) % 2**32 - 2**31, EXPONENT  # int32(parsed), as Go converts it
    raise ValueError(SUFFIX)


def parse(text: str) -> Quantity:
    """ParseQuantity: ValueError in the API server's words when malformed."""
    if not text:
        raise ValueError(FORMAT_WRONG)
    if text == "0":
        return Quantity(0, 0, DECIMAL, text)
    positive, value, num, denom, suffix = _scan(text)
    base, exponent, fmt = _interpret(suffix)
    scale, mantissa = 0, 1
    if fmt != BINARY:
        scale, precision = exponent, MAX_INT64_FACTORS - len(num) - len(denom)
    elif exponent >= 0 and not denom:
        mantissa, precision = 1 << exponent, 15 - len(num) - exponent * 3 // 10 - 1
    else:
        precision = -1
    if precision >= 0 and scale - len(denom) >= NANO:  # the int64 fast path
        scale -= len(denom)
        shifted = num + denom
        number = int(shifted)
        if number * mantissa <= MAX_INT64:
            result = number * mantissa if positive else -number * mantissa
            kept = (number & 7 != 0) if fmt == BINARY else (
                scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0")
            return Quantity(result, scale, fmt, text if kept else "")
    whole, _, fraction = value.lstrip("+-").partition(".")
    if not (whole + fraction):
        raise ValueError(NUMERIC)
    magnitude, exp = int(whole + fraction), -len(fraction)
    if base == 10:
        exp += exponent
    else:
        magnitude <<= exponent
    if magnitude and exp < NANO:  # rounded up to the nearest nano
        step = 10 ** (NANO - exp)
        magnitude, exp = -(-magnitude // step), NANO
    if fmt == BINARY and Decimal(f"{magnitude}E{exp}") > MAX_INT64:
        magnitude, exp = MAX_INT64, 0
    if fmt == BINARY and 0 < Decimal(f"{magnitude}E{exp}") < 1:
        fmt = DECIMAL
    return Quantity(magnitude if positive else -magnitude, exp, fmt)


def _remove(n: int, factor: int) -> tuple[int, int]:
    """removeInt64Factors: n without its factors of ``factor``, and how many there were."""
    times = 0
    while n and n % factor == 0:
        n, times = n // factor, times + 1
    return n, times


def _canonical(unscaled: int, exp: int, fmt: str) -> str:
    """CanonicalizeBytes with its suffix."""
    if unscaled == 0:
        return "0"
    sign, magnitude = ("-" if unscaled < 0 else ""), abs(unscaled)
    if fmt == BINARY:
        value = Decimal(f"{magnitude}E{exp}")
        if value < 1024 or value != value.to_integral_value():
            fmt = DECIMAL  # below 1024, or not whole: no binary suffix without rounding
        else:
            n, times = _remove(int(value), 1024)
            return f"{sign}{n}{_BIN_BY_EXP[times * 10]}"
    n, times = _remove(magnitude, 10)
    exp += times
    n, exp = n * 10 ** (exp % 3), exp - exp % 3
    if fmt == EXPONENT:
        return f"{sign}{n}" + (f"e{exp}" if exp else "")
    return f"{sign}{n}{_DEC_BY_EXP.get(exp, '')}"  # past "E" no suffix: the suffixer has none (Go's quirk)


class Number(float):
    """A JSON number with a fraction or exponent, keeping its text (``json.loads(raw, parse_float=Number)``):
    Quantity.UnmarshalJSON parses a number from its bytes as written (``1e3`` is ``1e3``, kept in exponent form;
    ``0.1`` exactly a tenth), never through a float (which would read ``1e3`` as ``1000.0``, written back ``1k``)."""

    text: str

    def __new__(cls, text: str) -> Number:
        number = super().__new__(cls, text)
        number.text = str(text)
        return number


def decode(value: Any) -> Quantity:
    """A quantity from JSON as UnmarshalJSON reads it: a string trimmed, or a number from its text; ValueError when
    malformed."""
    text = value.text if isinstance(value, Number) else repr(value) if isinstance(value, float) else str(value)
    return parse(text.strip())


def canonical(value: Any) -> str:
    """A quantity from JSON as the API server writes it back; ValueError when malformed."""
    return str(decode(value))


def of(value: Decimal, fmt: str) -> str:
    """A computed amount (a sum) written in ``fmt``, as Quantity.String writes it."""
    sign, digits, exp = value.as_tuple()
    if not isinstance(exp, int):
        raise ValueError(f"{value} is not a finite amount")
    magnitude = int("".join(map(str, digits)) or "0")
    return _canonical(-magnitude if sign else magnitude, exp, fmt)
