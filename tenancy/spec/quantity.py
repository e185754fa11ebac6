"""Kubernetes resource quantities ("500m", "2Gi") as exact numbers, for plan arithmetic."""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}
_QUANTITY = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<suffix>m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


@functools.lru_cache(maxsize=4096)  # every write checks the same few sizes against the plan
def parse_quantity(text: str) -> Decimal:
    """Return the value of a Kubernetes quantity; raise ValueError on anything else."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: '500m', '2', '512Mi', '10Gi')")
    return Decimal(match["number"]) * _SUFFIXES[match["suffix"] or ""]


def _check_cpu(text: str) -> str:
    if parse_quantity(text) <= 0:
        raise ValueError("CPU must be greater than zero")
    if text.endswith(("Ki", "Mi", "Gi", "Ti")):
        raise ValueError(f"{text!r} is a memory unit; CPU is given in cores ('2') or millicores ('500m')")
    return text


def _check_bytes(text: str) -> str:
    value = parse_quantity(text)
    if value < 1024 * 1024:
        raise ValueError(f"{text!r} is below 1Mi; write sizes with a unit such as '512Mi' or '10Gi'")
    if text.endswith("m"):
        raise ValueError(f"{text!r} uses the milli suffix; sizes are given as '512Mi' or '10Gi'")
    return text


Cpu = Annotated[str, AfterValidator(_check_cpu)]
"""CPU quantity, e.g. ``"500m"`` or ``"2"``."""

Bytes = Annotated[str, AfterValidator(_check_bytes)]
"""Memory or storage quantity, e.g. ``"512Mi"`` or ``"10Gi"``."""
