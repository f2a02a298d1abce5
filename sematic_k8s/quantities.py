"""Resource quantities as Kubernetes writes them ('2', '500m', '512Mi', '4Gi'), checked in plain words by one rule
wherever they are given: where a func declares them (``@func(cpu=..., memory=...)``, so a mistake shows on the
line that made it) and where a pod's manifest takes them. Needs no Kubernetes client (the embedded resolver, which
has none, checks them too)."""

from __future__ import annotations

import re
from decimal import Decimal

MIN_MEMORY = 6 * 1024 * 1024  # container runtimes refuse a smaller memory limit (Docker: 6MB)
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_SCALE = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
          "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
          "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50,
          "Ei": Decimal(2) ** 60}


def quantity(value: str | float | int, what: str) -> str:
    """A quantity's text ('2', '500m', '4Gi'), or ValueError in plain words."""
    text = str(value).strip()
    if not _QUANTITY.match(text):
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity (like '2', '500m', '512Mi', '4Gi')")
    return text


def amount(text: str) -> Decimal:
    """The number a quantity's text stands for ('1.5Gi' -> 1610612736)."""
    found = _QUANTITY.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = found.groups()
    return Decimal(number) * _SCALE[suffix] if suffix else Decimal(number)


def memory_quantity(value: str | float | int, what: str = "memory") -> str:
    """A memory quantity in whole bytes, at least :data:`MIN_MEMORY`, or ValueError in plain words. The API server
    takes "512m" (0.512 bytes: 'm' is thousandths) with only a warning; no container runtime starts with it."""
    text = quantity(value, what)
    size = amount(text)
    if size != int(size):
        hint = f": did you mean '{text[:-1]}Mi'?" if text.endswith("m") else ""
        raise ValueError(f"{what} {value!r} is a fraction of a byte ('m' means thousandths){hint}")
    if size < MIN_MEMORY:
        raise ValueError(f"{what} {value!r} is {int(size)} bytes: a container needs at least 6Mi "
                         f"(write it like '512Mi' or '4Gi')")
    return text
