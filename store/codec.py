"""JSON for everything that leaves the process: event payloads in the store, and /status.

One rule: Decimals travel as strings (never floats), enums as their values, sets as sorted
lists, attrs objects through cattrs.
"""

from __future__ import annotations

import enum
import json
from decimal import Decimal
from typing import Any

import cattrs

converter = cattrs.Converter()
converter.register_unstructure_hook(Decimal, str)
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


def dumps(value: Any) -> str:
    """``value`` (plain data, possibly holding Decimals, enums, sets or attrs objects) as JSON."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


#: The simulated perpetuals account's parts, to and from JSON (Decimals as text).
_state_converter = cattrs.Converter()
_state_converter.register_unstructure_hook(Decimal, str)
_state_converter.register_structure_hook(Decimal, lambda value, _: Decimal(value))


def state_json(value: Any) -> str:
    """An attrs record of the simulated perpetuals account as JSON."""
    return json.dumps(_state_converter.unstructure(value), separators=(",", ":"))


def state_of(text: str, cls: type) -> Any:
    return _state_converter.structure(json.loads(text), cls)
