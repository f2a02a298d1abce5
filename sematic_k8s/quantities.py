"""Resource quantities as Kubernetes writes them ('2', '500m', '512Mi', '4Gi'), checked in plain words by one rule
wherever they are given: where a func declares them (``@func(cpu=..., memory=...)``, so a mistake shows on the
line that made it) and where a pod's manifest takes them. Needs no Kubernetes client (the embedded resolver, which
has none, checks them too)."""

from __future__ import annotations

import re

MIN_MEMORY = 6 * 1024 * 1024  # container runtimes refuse a smaller memory limit (Docker: 6MB)
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
# a suffix's factor as (multiplier, divisor): whole numbers throughout (no decimal module at import)
_SCALE = {"": (1, 1), "m": (1, 1000), "k": (10**3, 1), "M": (10**6, 1), "G": (10**9, 1), "T": (10**12, 1),
          "P": (10**15, 1), "E": (10**18, 1), "Ki": (2**10, 1), "Mi": (2**20, 1), "Gi": (2**30, 1),
          "Ti": (2**40, 1), "Pi": (2**50, 1), "Ei": (2**60, 1)}


def quantity(value: str | float | int, what: str) -> str:
    """A quantity's text ('2', '500m', '4Gi'), or ValueError in plain words."""
    text = str(value).strip()
    if not _QUANTITY.match(text):
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity (like '2', '500m', '512Mi', '4Gi')")
    return text


def amount(text: str) -> tuple[int, int]:
    """The number a quantity's text stands for, as a fraction (numerator, denominator): '1.5Gi' -> (15 * 2**30,
    10), '512m' -> (512, 1000)."""
    found = _QUANTITY.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = found.groups()
    whole, _, fraction = number.partition(".")
    multiplier, divisor = _SCALE[suffix or ""]
    return int(whole + fraction) * multiplier, 10 ** len(fraction) * divisor


def memory_quantity(value: str | float | int, what: str = "memory") -> str:
    """A memory quantity in whole bytes, at least :data:`MIN_MEMORY`, or ValueError in plain words. The API server
    takes "512m" (0.512 bytes: 'm' is thousandths) with only a warning; no container runtime starts with it."""
    text = quantity(value, what)
    numerator, denominator = amount(text)
    if numerator % denominator:
        hint = (f" ('m' means thousandths): did you mean '{text[:-1]}Mi'?" if text.endswith("m")
                else ": write whole bytes, like '512Mi' or '4Gi'")
        raise ValueError(f"{what} {value!r} is a fraction of a byte{hint}")
    if numerator // denominator < MIN_MEMORY:
        raise ValueError(f"{what} {value!r} is {numerator // denominator} bytes: a container needs at least 6Mi "
                         f"(write it like '512Mi' or '4Gi')")
    return text
