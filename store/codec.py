"""One cattrs converter for everything that leaves the process as JSON: the store and /status.

Decimals travel as strings (never floats), enums as their values, sets as sorted lists.
"""

from __future__ import annotations

import enum
import json
from decimal import Decimal
from typing import Any

import cattrs

converter = cattrs.Converter()
converter.register_unstructure_hook(Decimal, str)
converter.register_structure_hook(Decimal, lambda value, _: Decimal(str(value)))
converter.register_unstructure_hook(frozenset, lambda value: sorted(value))
converter.register_unstructure_hook(set, lambda value: sorted(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return converter.unstructure(value)


def payload_json(payload: dict[str, Any]) -> str:
    """An event's payload: already plain data, so it skips the converter (hot path)."""
    return json.dumps(payload, default=_json_default, separators=(",", ":"))


def to_json(value: Any) -> str:
    return json.dumps(converter.unstructure(value), default=_json_default, separators=(",", ":"))


def from_json(text: str, cls: type) -> Any:
    return converter.structure(json.loads(text), cls)
