"""JSON has no NaN or Infinity: the one codec that writes them as "nan", "inf", "-inf" and reads them back.

Used by the JSONL sink, the worker's HTTP sink and the API's metric store, so a value survives every hop.
"""

from __future__ import annotations

import math
from typing import Any

_NAMES = {
    "nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
}


def encode(value: Any) -> Any:
    """Non-finite floats become "nan"/"inf"/"-inf", recursively through dicts, lists and numpy/torch scalars."""
    if isinstance(value, float):
        return (
            value
            if math.isfinite(value)
            else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
        )
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, str | bytes):
        return encode(value.item())
    return value


def encode_number(value: float | None) -> float | str:
    """A stored number as JSON: itself, or "nan" (None stands for NaN) / "inf" / "-inf"."""
    return "nan" if value is None else encode(float(value))


def decode(value: float | int | str | None) -> float:
    """A number from JSON: numbers as they are, "nan"/"inf"/"-inf" (any case) and null (NaN); other text must
    parse as a float (ValueError otherwise)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip().lower()
        return _NAMES[text] if text in _NAMES else float(text)
    return float(value)
