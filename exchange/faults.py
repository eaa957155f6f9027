"""Fault injection for the sandbox exchange: what goes wrong, how often, reproducibly.

Kinds, each with the effect a real exchange has on its client:

- ``server_error``: HTTP 503 before the request is processed (nothing happened);
- ``rate_limit``: HTTP 429 with ``Retry-After`` (nothing happened);
- ``timeout``: the answer is held past the client's timeout, before processing (nothing
  happened, but the client cannot know);
- ``timeout_after_accept``: the request *is* processed (an order is placed or cancelled),
  then the answer is held past the client's timeout: the client must not assume failure;
- ``server_error_after_accept``: the request *is* processed, then answered with HTTP 503
  (Binance documents a 5xx as "execution status UNKNOWN");
- ``reject``: an order or cancel refused with Binance's -2010 (USD-M: -2019) / -2011 (nothing happened);
- ``invalid_timestamp``: a signed request refused with Binance's -1021 ("Timestamp for this
  request is outside of the recvWindow"), whatever its timestamp (nothing happened);
- ``fill_before_answer``: a create is placed and at once filled whole by a counterparty,
  then its answer is held for ``hold_seconds``: the trade can be listed before the client
  hears of its order (held past the client's timeout, the order's outcome is unknown);
- ``fill_before_cancel``: the order fills whole just before the cancel reaches it, which is
  then refused with -2011 ("Unknown order sent."): the cancel lost the race with a fill;
- ``overloaded``: a create or cancel answered with HTTP 503 and Binance's -1008 ("Server is
  currently overloaded with other requests"), before processing (nothing happened, but
  Binance does not promise it: the client must treat the outcome as unknown).

The same kinds apply to Binance spot (``/api/...``) and USD-M futures (``/fapi/...``); the
write-only kinds apply to the order endpoints of both, conditional (algo) orders included.

Besides the kinds, drawn per request:

- ``clock_offset_ms``: the exchange's clock runs this far ahead of the host's (negative:
  behind). Its time endpoint, its timestamps and its check of signed requests' timestamps
  (Binance's ``recvWindow``) all use it, so a client that does not measure it is refused;
- ``late_ms``: per path prefix, answers are held this long *after* the exchange computed
  them (klines answered late: the answer describes the moment it was asked).

A seeded random generator decides, so a failing run can be replayed.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

KINDS = (
    "server_error", "rate_limit", "timeout", "timeout_after_accept", "server_error_after_accept", "reject",
    "invalid_timestamp", "fill_before_answer", "fill_before_cancel", "overloaded",
)
#: The REST paths a fault may apply to (Binance spot and USD-M futures).
API_PREFIXES = ("/api/", "/fapi/")
#: The paths of a create or a cancel of a regular limit order.
ORDER_PATHS = ("/api/v3/order", "/fapi/v1/order")
#: Paths of a create or a cancel of any order, conditional (algo) orders included.
WRITE_PATHS = ORDER_PATHS + ("/fapi/v1/algoOrder",)
#: Kinds that only apply to a create or a cancel (POST or DELETE of WRITE_PATHS).
WRITE_ONLY = ("timeout_after_accept", "server_error_after_accept", "reject", "overloaded")
#: Kinds that apply to one method of ORDER_PATHS only.
CREATE_ONLY = ("fill_before_answer",)
CANCEL_ONLY = ("fill_before_cancel",)
#: Kinds that apply to signed requests only (they carry a timestamp).
SIGNED_ONLY = ("invalid_timestamp",)


@attrs.define
class FaultSettings:
    seed: int = 0
    #: Probability per request of each kind, e.g. {"server_error": 0.05}.
    error_rates: dict[str, float] = attrs.Factory(dict)
    #: Added to every answer.
    latency_ms: float = 0.0
    retry_after_seconds: int = 2
    #: How long a timed-out answer is held (longer than the client waits).
    hold_seconds: float = 30.0
    #: The next N requests get HTTP 429.
    burst_429: int = 0
    #: Only these paths are subject to faults (prefix match); empty: every /api/ path.
    paths: list[str] = attrs.Factory(list)
    #: Only these HTTP methods are subject to faults (e.g. ["DELETE"]: cancels only); empty: all.
    methods: list[str] = attrs.Factory(list)
    #: The exchange's clock minus the host's, in milliseconds.
    clock_offset_ms: int = 0
    #: Path prefix -> milliseconds each answer is held after it was computed.
    late_ms: dict[str, float] = attrs.Factory(dict)

    def problems(self) -> list[str]:
        out = [f"error_rates.{k}: unknown kind (kinds: {', '.join(KINDS)})" for k in self.error_rates if k not in KINDS]
        out += [f"error_rates.{k}: must be between 0 and 1, got {v}" for k, v in self.error_rates.items() if not 0 <= v <= 1]
        if self.latency_ms < 0:
            out.append(f"latency_ms: must be 0 or more, got {self.latency_ms}")
        out += [f"late_ms.{p}: must be 0 or more, got {v}" for p, v in self.late_ms.items() if v < 0]
        out += [f"methods: {m!r} is not an HTTP method (GET, POST, DELETE ...)" for m in self.methods if not m.isupper()]
        return out

    def late(self, path: str) -> float:
        """Seconds an answer on ``path`` is held after it was computed."""
        return max((ms for prefix, ms in self.late_ms.items() if path.startswith(prefix)), default=0.0) / 1000


class FaultPlan:
    def __init__(self, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()
        self._random = random.Random(self.settings.seed)
        self.injected: dict[str, int] = {kind: 0 for kind in KINDS}

    def update(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._random = random.Random(settings.seed)

    def decide(self, method: str, path: str, signed: bool = False) -> str | None:
        """The fault for this request, or None. ``signed``: the request carries a timestamp."""
        if not path.startswith(API_PREFIXES):
            return None
        settings = self.settings
        if settings.paths and not any(path.startswith(p) for p in settings.paths):
            return None
        if settings.methods and method not in settings.methods:
            return None
        if settings.burst_429 > 0:
            settings.burst_429 -= 1
            return self._count("rate_limit")
        order, write = path in ORDER_PATHS, path in WRITE_PATHS
        for kind in KINDS:
            rate = settings.error_rates.get(kind, 0.0)
            if not rate:
                continue  # no draw: a seed replays the same faults whatever kinds exist
            if kind in WRITE_ONLY and not (write and method in ("POST", "DELETE")):
                continue
            if (kind in CREATE_ONLY and not (order and method == "POST")) or (kind in CANCEL_ONLY and not (order and method == "DELETE")):
                continue
            if kind in SIGNED_ONLY and not signed:
                continue
            if self._random.random() < rate:
                return self._count(kind)
        return None

    def _count(self, kind: str) -> str:
        self.injected[kind] += 1
        return kind

    def status(self) -> dict[str, Any]:
        return {"settings": attrs.asdict(self.settings), "injected": dict(self.injected)}
