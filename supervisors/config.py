"""The YAML config: its shape (attrs classes structured by cattrs) and the checks that stop
the whole process.

:func:`load_config` returns a :class:`Config` or raises :class:`ConfigError` holding *every*
problem found, each as ``path: what is expected, got what``. Unknown keys are problems
too: a typo must not silently fall back to a default.

Two levels, on purpose: what makes the process impossible to build (a wrong type, an
unknown venue, a duplicate name, a bad venue setting, live mode not armed) is a config
error and exits with status 2. What concerns one strategy's parameters, or its market and
allocation, is a *pre-flight* failure (``actors/strategy/preflight.py``): that strategy
stays inactive with the message and every other one runs.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
import yaml
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from actors.strategy.rules import (
    Change,
    Combination,
    Grid,
    PriceCross,
    Rsi,
    SmaCross,
    TriggerSpec,
)
from actors.strategy.settings import ProtectionConfig, StrategySettings

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


#: The most problems a ConfigError lists (a generated or aliased config can repeat one
#: mistake thousands of times); the rest are counted.
PROBLEMS_SHOWN = 50


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, one per line (at most
    :data:`PROBLEMS_SHOWN`, then how many more)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        if len(problems) > PROBLEMS_SHOWN:
            problems = problems[:PROBLEMS_SHOWN] + [f"... and {len(problems) - PROBLEMS_SHOWN} more problems"]
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


@attrs.frozen
class MarketConfig:
    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    min_amount: Decimal
    min_notional: Decimal
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.002")
    #: ``received`` (Binance spot: a buy pays its fee in the coin bought), ``quote``, or a
    #: third currency (``BNB``) with ``fee_currency_price`` in quote per unit.
    fee_in: str = "received"
    fee_currency_price: Decimal | None = None
    #: Swap venues only: the leverage (1..125) and margin mode (``cross`` or ``isolated``)
    #: set on the market when the venue starts.
    leverage: int | None = None
    margin_mode: str | None = None


@attrs.frozen
class ReplayConfig:
    #: A CSV path, or ``bundled:<file>`` for data shipped with limitline.
    data: str = "bundled:btc_usd_1h_coinbase.csv"
    speed: float = 5.0
    start: datetime | None = None
    #: Release each candle only when every strategy on the venue is done with the previous
    #: one: as fast as the actors go, and the very decisions the Lab makes.
    lockstep: bool = False


@attrs.frozen
class SimulatedVenueConfig:
    name: str
    markets: list[MarketConfig]
    balances: dict[str, Decimal]
    replay: dict[str, ReplayConfig]
    kind: Literal["simulated"] = "simulated"
    #: The most a single candle can fill of our orders, as a share of its volume.
    volume_share: Decimal = Decimal("0.1")
    #: ``spot``, or ``swap``: a simulated USD-M perpetuals account (exchange.perpetuals),
    #: one-way position mode; ``balances`` is then its wallet in the settlement asset.
    market_type: str = "spot"
    #: Swap: the funding rate paid every 8 hours (a long pays a positive rate).
    funding_rate: Decimal = Decimal("0.0001")
    #: Swap: the maintenance margin rate of the liquidation approximation.
    maintenance_margin_rate: Decimal = Decimal("0.004")


@attrs.frozen
class CcxtMarketConfig:
    """A perpetual market of a ccxt ``swap`` venue: its leverage (1..125) and margin mode
    (``cross`` or ``isolated``), set on the account when the venue starts and read back
    before any strategy on it may trade."""

    symbol: str
    leverage: int
    margin_mode: str = "cross"


@attrs.frozen
class CcxtVenueConfig:
    """A real exchange account through ccxt. Credentials are *named* here, never written:
    environment variables (``api_key_env``, ``secret_env``, ``password_env``) or a secrets
    file readable only by its owner (YAML with ``api_key``, ``secret``, ``password``)."""

    name: str
    exchange: str
    kind: Literal["ccxt"] = "ccxt"
    #: Rewrites scheme and host of every REST URL (a testnet, a proxy, `limitline sandbox`).
    base_url: str | None = None
    #: ccxt's sandbox (testnet) mode.
    sandbox: bool = False
    #: ``spot``, or ``swap`` (linear perpetuals, e.g. ``binanceusdm``).
    market_type: str = "spot"
    #: Every HTTPS request through this proxy (http://HOST:PORT); the exchange's URLs stay
    #: its own, so its errors are recognised as the production host's.
    https_proxy: str | None = None
    #: PEM bundle of the CA that signs a TLS-intercepting proxy's certificates.
    ca_file: str | None = None
    api_key_env: str | None = None
    secret_env: str | None = None
    password_env: str | None = None
    secrets_file: str | None = None
    timeframe: str = "1h"
    poll_seconds: float = 2.0
    rate_limit_per_second: float = 10.0
    isolate_after_seconds: float = 30.0
    probe_max_seconds: float = 60.0
    timeout_seconds: float = 10.0
    #: An order whose submit outcome is unknown is declared never placed only after every
    #: source has lacked it this long.
    never_placed_after_seconds: float = 60.0
    #: ``swap`` only: the markets traded, each with its leverage and margin mode.
    markets: list[CcxtMarketConfig] = attrs.Factory(list)
    #: ``swap`` only: an open is sent only if the exchange's available margin, read at most
    #: this many seconds ago, covers its initial margin (an older reading is read again first).
    margin_max_age_seconds: float = 10.0


VenueConfig = SimulatedVenueConfig | CcxtVenueConfig
INLINE_SECRETS = ("api_key", "apiKey", "secret", "password", "token")


@attrs.frozen
class StatusConfig:
    host: str = "127.0.0.1"
    port: int = 8787


@attrs.frozen
class SupervisionConfig:
    max_restarts: int = 3
    period_seconds: float = 30.0


@attrs.frozen
class ReconcilerConfig:
    interval_seconds: float = 5.0
    #: How long a cycle waits for a venue's snapshot before it records the venue as slow
    #: (``reconcile_skipped``); not tied to the interval, since a perpetual account's
    #: snapshot is several calls at the venue's rate limit. A later answer is still used.
    snapshot_timeout_seconds: float = 30.0


#: What a webhook can be sent for, and the events each covers.
WEBHOOK_EVENTS: dict[str, tuple[str, ...]] = {
    "fill": ("fill",),
    "breaker": ("breaker_open", "breaker_half_open", "breaker_closed"),
    "pause": ("strategy_paused", "strategy_resumed"),
    "isolation": ("venue_isolated", "venue_recovered", "child_isolated"),
    "reconciliation": ("reconcile_difference",),
}


@attrs.frozen
class NotificationsConfig:
    """Webhooks: a URL per kind of event (see :data:`WEBHOOK_EVENTS`), or ``env:NAME`` to
    read it from an environment variable (a URL that holds a token is a secret)."""

    webhooks: dict[str, str] = attrs.Factory(dict)
    #: Each POST's time limit, and how many times one notification is tried in all.
    timeout_seconds: float = 5.0
    max_attempts: int = 5
    #: Seconds before the first retry; doubles up to ``max_backoff_seconds``.
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    #: Notifications waiting to be sent, at most; more are dropped and counted.
    queue: int = 1000


@attrs.frozen
class Config:
    venues: list[VenueConfig]
    strategies: list[StrategySettings]
    store: str = "limitline-data/limitline.sqlite"
    status: StatusConfig = StatusConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    reconciler: ReconcilerConfig = ReconcilerConfig()
    notifications: NotificationsConfig = NotificationsConfig()

    def venue(self, name: str) -> VenueConfig:
        return next(v for v in self.venues if v.name == name)


# --------------------------------------------------------------- structuring

_converter = cattrs.Converter(forbid_extra_keys=True)
_TRIGGERS: dict[str, type] = {
    "sma_cross": SmaCross, "ema_cross": SmaCross, "change": Change, "rsi": Rsi, "price_cross": PriceCross,
    "grid": Grid, "all": Combination, "any": Combination,
}


#: The most of a value (or an unknown key) a message repeats: a huge YAML value must not
#: make a huge error.
ECHO_MAX = 80


def _cut(text: str) -> str:
    return text if len(text) <= ECHO_MAX else text[: ECHO_MAX - 1] + "…"


def _shown(value: Any) -> str:
    """``value`` as a message repeats it: its repr, cut to ``ECHO_MAX`` characters.

    Built piece by piece and stopped once long enough, so the cost is bounded whatever the
    value: YAML aliases can make a small file hold a structure of millions of items (or
    one that contains itself), whose whole repr would take gigabytes."""
    pieces: list[str] = []
    length = 0
    for piece in _repr_pieces(value):
        pieces.append(piece)
        length += len(piece)
        if length > ECHO_MAX:
            break
    return _cut("".join(pieces))


def _repr_pieces(value: Any) -> Iterator[str]:
    """``repr(value)`` of YAML's plain data, lazily, in pieces."""
    if isinstance(value, (list, tuple)):
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        yield opening
        for i, item in enumerate(value):
            if i:
                yield ", "
            yield from _repr_pieces(item)
        yield closing
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            if i:
                yield ", "
            yield from _repr_pieces(key)
            yield ": "
            yield from _repr_pieces(item)
        yield "}"
    elif isinstance(value, (set, frozenset)):  # YAML's !!set
        yield "!!set {"
        for i, item in enumerate(sorted(itertools.islice(value, ECHO_MAX), key=str)):
            if i:
                yield ", "
            yield from _repr_pieces(item)
        yield "}"
    elif isinstance(value, str):
        yield repr(value[: ECHO_MAX + 1])  # long enough to be cut before its closing quote
    elif isinstance(value, bytes):  # YAML's !!binary: its bytes say nothing to a reader
        yield f"!!binary ({len(value)} bytes)"
    elif value is None or isinstance(value, bool):
        yield {None: "null", True: "true", False: "false"}[value]  # as YAML writes them
    elif isinstance(value, (datetime, date)):
        yield value.isoformat()  # a YAML timestamp, not datetime.date(2020, 1, 1)
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * ECHO_MAX:
        yield f"<a whole number of {value.bit_length()} bits>"  # str() of a huge int is slow
    else:
        yield repr(value)


def _decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {_shown(value)}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected a number, got {_shown(value)}") from None
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {_shown(value)}")
    return result


def _trigger(value: Any, _: type) -> TriggerSpec:
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError(f"expected a mapping with a kind ({', '.join(_TRIGGERS)}), got {_shown(value)}")
    kind = value["kind"]
    cls = _TRIGGERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"kind must be one of {', '.join(_TRIGGERS)}, got {_shown(kind)}")
    if cls is Combination:
        parts = value.get("of")
        if not isinstance(parts, list):
            raise ValueError(f"{kind}: 'of' must be a list of triggers")
        extra = set(value) - {"kind", "of"}
        if extra:
            raise ValueError(f"{kind}: unknown field(s) {_shown(sorted(map(str, extra)))}")
        return Combination(tuple(_trigger(part, TriggerSpec) for part in parts), kind)
    return _converter.structure(value, cls)


def _datetime(value: Any, _: type) -> datetime:
    """A time; one without a zone is UTC (never the machine's local time)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    elif not isinstance(value, datetime):
        try:
            if not isinstance(value, str):
                raise ValueError
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO-8601 time, got {_shown(value)}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {_shown(value)}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_shown(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {_shown(value)}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"expected a finite number, got {_shown(value)}") from None
    if not math.isfinite(result):  # YAML's .inf and .nan
        raise ValueError(f"expected a finite number, got {_shown(value)}")
    return result


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {_shown(value)}")
    return value


def _venue(value: Any, _: type) -> VenueConfig:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_shown(value)}")
    kind = value.get("kind", "simulated")
    cls = {"simulated": SimulatedVenueConfig, "ccxt": CcxtVenueConfig}.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"kind must be simulated or ccxt, got {_shown(kind)}")
    return _converter.structure(value, cls)


def _literal(type_: Any, _: cattrs.Converter) -> Callable[[Any, type], Any]:
    """A hook for ``Literal[...]`` (all text in the config) that names the choices."""
    allowed = get_args(type_)

    def structure(value: Any, _: type) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        raise ValueError(f"must be one of {', '.join(map(str, allowed))}, got {_shown(value)}")

    return structure


def _shaped(
    shape: type | tuple[type, ...], expected: str, default: Callable[[Any, cattrs.Converter], Callable[[Any, Any], Any]]
) -> Callable[[Any, cattrs.Converter], Callable[[Any, Any], Any]]:
    """A hook factory that refuses a value of the wrong container type with ``expected ...,
    got ...`` before cattrs' own hook (``default``) sees it: given a list where a mapping
    belongs, cattrs would fail with Python's own words (``'list' object has no attribute
    'keys'``), and given a mapping or text where a list belongs, it would iterate it."""

    def factory(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
        structure = default(type_, converter)

        def checked(value: Any, _: Any) -> Any:
            if not isinstance(value, shape):
                raise ValueError(f"expected {expected}, got {_shown(value)}")
            return structure(value, type_)

        return checked

    return factory


_converter.register_structure_hook(Decimal, _decimal)
_converter.register_structure_hook(VenueConfig, _venue)
_converter.register_structure_hook(TriggerSpec, _trigger)
_converter.register_structure_hook(TriggerSpec | None, lambda v, t: None if v is None else _trigger(v, t))
_converter.register_structure_hook(datetime, _datetime)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal)
_converter.register_structure_hook_factory(
    attrs.has, _shaped(dict, "a mapping", lambda t, c: c.gen_structure_attrs_fromdict(t))
)
_converter.register_structure_hook_factory(
    lambda t: get_origin(t) is dict, _shaped(dict, "a mapping", mapping_structure_factory)
)
_converter.register_structure_hook_factory(
    lambda t: get_origin(t) is list, _shaped((list, tuple), "a list", list_structure_factory)
)


def _structure_problems(error: BaseException, path: str = "") -> list[str]:
    """cattrs' nested errors as ``path: message`` lines.

    :func:`cattrs.transform_error` walks the nesting and builds each path, but hands back
    only ``{message} @ {path}`` strings. So the ``message`` it is given for each error is
    that error's index in ``errors`` (no `` @ `` in it: the first one splits the line
    exactly), and the message proper is written here, where the path is known too: each
    unknown key becomes a line of its own, at its own path."""
    errors: list[tuple[BaseException, Any]] = []

    def remember(exc: BaseException, type_: Any) -> str:
        errors.append((exc, type_))
        return str(len(errors) - 1)

    problems = []
    for line in cattrs.transform_error(error, path=path, format_exception=remember):
        index, _, at = line.partition(" @ ")
        exc, type_ = errors[int(index)]
        at = at.removeprefix(".")
        if isinstance(exc, ForbiddenExtraKeysError):
            problems += [
                f"{_join(at, _cut(str(key)))}: unknown field (check its spelling)"
                for key in sorted(exc.extra_fields, key=str)  # YAML keys need not all be text
            ]
        elif isinstance(exc, (ClassValidationError, IterableValidationError)):
            problems += _structure_problems(exc, at)  # from inside a hook, with no note to place it
        elif isinstance(exc, KeyError):
            problems.append(f"{at}: is required")
        elif isinstance(exc, ValueError):
            problems.append(f"{at or 'config'}: {exc}")  # our hooks' words; they cap what they echo
        else:
            # Not expected, every hook above raising ValueError; still one short, clean line.
            expected = f"expected {getattr(type_, '__name__', type_)}, " if type_ is not None else ""
            problems.append(f"{at or 'config'}: {expected}cannot be read ({_cut(str(exc))})")
    return problems


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


# ------------------------------------------------------------------ checking


def check_config(config: Config, live: bool = False, lab: bool = False) -> list[str]:
    """Every semantic problem of a structurally valid config (``live``, ``lab``: see
    :func:`parse_config`)."""
    problems: list[str] = []

    def need(condition: bool, path: str, message: str) -> None:
        if not condition:
            problems.append(f"{path}: {message}")

    need(bool(config.venues), "venues", "at least one venue is required")
    need(bool(config.strategies), "strategies", "at least one strategy is required")
    need(0 <= config.status.port <= 65535, "status.port", f"must be between 0 (any free port) and 65535, got {config.status.port}")
    need(config.supervision.max_restarts >= 0, "supervision.max_restarts", f"must be 0 or more, got {config.supervision.max_restarts}")
    problems += _seconds_problems(config.supervision, "supervision", ("period_seconds",))
    problems += _seconds_problems(config.reconciler, "reconciler", ("interval_seconds", "snapshot_timeout_seconds"))
    problems += _notification_problems(config.notifications)

    venues: dict[str, VenueConfig] = {}
    for i, venue in enumerate(config.venues):
        at = f"venues[{i}]"
        need(bool(NAME.match(venue.name)), f"{at}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {_shown(venue.name)}")
        need(venue.name not in venues, f"{at}.name", f"another venue is already named {_shown(venue.name)}")
        venues[venue.name] = venue
        if isinstance(venue, CcxtVenueConfig):
            problems += _ccxt_problems(venue, at)
            continue
        problems += _swap_venue_problems(venue, at, lab)
        need(Decimal(0) < venue.volume_share <= 1, f"{at}.volume_share", f"must be greater than 0 and at most 1, got {venue.volume_share}")
        symbols = [m.symbol for m in venue.markets]
        need(bool(symbols), f"{at}.markets", "at least one market is required")
        for j, market in enumerate(venue.markets):
            problems += _market_problems(market, f"{at}.markets[{j}]")
        for asset, amount in venue.balances.items():
            need(amount >= 0, f"{at}.balances.{_cut(asset)}", f"must be 0 or more, got {amount}")
        for symbol, replay in venue.replay.items():
            where = f"{at}.replay.{_cut(symbol)}"
            need(symbol in symbols, where, f"is not one of the venue's markets {_shown(symbols)}")
            need(0 < replay.speed <= 10_000, f"{where}.speed", f"must be greater than 0 and at most 10000 candles per second, got {replay.speed:g}")
            problems += _replay_problems(replay, where)
        for symbol in symbols:
            need(symbol in venue.replay, f"{at}.replay", f"a simulated venue needs replay data for {_cut(symbol)}")

    names: set[str] = set()
    for i, s in enumerate(config.strategies):
        at = f"strategies[{i}]"
        # A venue whose market_type is invalid was reported once, above: its strategies are
        # not checked against spot's or swap's rules (either would contradict that line).
        if s.venue in venues and _market_type_known(venues[s.venue]):
            problems += _position_problems(s, venues[s.venue], at, config.strategies[:i])
        need(bool(NAME.match(s.name)), f"{at}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {_shown(s.name)}")
        need(s.name not in names, f"{at}.name", f"another strategy is already named {_shown(s.name)}")
        names.add(s.name)
        venue = venues.get(s.venue)
        if venue is None:
            problems.append(f"{at}.venue: no venue is named {_shown(s.venue)} (venues: {_shown(sorted(venues))})")
        elif s.mode == "live" and not isinstance(venue, CcxtVenueConfig):
            problems.append(f"{at}.mode: live trading needs a ccxt venue; venue {_shown(s.venue)} is simulated")
        elif s.mode == "live" and lab:
            pass  # backtested exactly as it will run; the Lab never places an order
        elif s.mode == "live" and not live:
            problems.append(
                f"{at}.mode: strategy {s.name} is set to live but limitline was started without --live; "
                "it will not place real orders. Start with `limitline run --live` to arm it"
            )
        elif s.mode == "live" and venue.secrets_file is None and (venue.api_key_env is None or venue.secret_env is None):
            problems.append(
                f"{at}.mode: live trading on venue {_shown(s.venue)} needs credentials: name api_key_env and secret_env "
                "(environment variables), or secrets_file"
            )
    return problems


def _notification_problems(notifications: NotificationsConfig) -> list[str]:
    at = "notifications"
    problems = _seconds_problems(notifications, at, ("timeout_seconds", "backoff_seconds", "max_backoff_seconds"))
    if not 1 <= notifications.max_attempts <= 100:
        problems.append(f"{at}.max_attempts: must be between 1 and 100, got {notifications.max_attempts}")
    if not 1 <= notifications.queue <= 1_000_000:
        problems.append(f"{at}.queue: must be between 1 and 1000000, got {notifications.queue}")
    if notifications.backoff_seconds > notifications.max_backoff_seconds:
        problems.append(f"{at}.backoff_seconds: must not exceed max_backoff_seconds ({notifications.max_backoff_seconds:g})")
    for kind, url in notifications.webhooks.items():
        where = f"{at}.webhooks.{_cut(kind)}"
        if kind not in WEBHOOK_EVENTS:
            problems.append(f"{where}: unknown kind; webhooks are sent for {', '.join(WEBHOOK_EVENTS)}")
            continue
        problem = webhook_url_problem(url)
        if problem is not None:
            problems.append(f"{where}: {problem}")
    return problems


def webhook_url(value: str) -> str:
    """The URL a webhook setting names: itself, or the environment variable's value for
    ``env:NAME`` (raises ``KeyError`` naming the variable if it is not set)."""
    import os

    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise KeyError(name)
        return os.environ[name]
    return value


def webhook_url_problem(value: str) -> str | None:
    """Why a webhook setting cannot be used, naming never more of the URL than its host."""
    from urllib.parse import urlsplit

    try:
        url = webhook_url(value)
    except KeyError as missing:
        return f"environment variable {missing.args[0]} is not set"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "from its environment variable" if value.startswith("env:") else f"{parts.scheme or 'no scheme'}://{parts.hostname or ''}"
        return f"must be an http:// or https:// URL with a host (got {shown}); or env:NAME to read it from a variable"
    return None


def _swap_venue_problems(venue: SimulatedVenueConfig, at: str, lab: bool) -> list[str]:
    """A simulated venue's market type, and the perpetual settings of its markets."""
    out = []
    if venue.market_type not in ("spot", "swap"):
        return [f"{at}.market_type: must be spot or swap (linear perpetuals), got {_shown(venue.market_type)}"]
    swap = venue.market_type == "swap"
    settles = set()
    for j, market in enumerate(venue.markets):
        where = f"{at}.markets[{j}]"
        pair, colon, settle = market.symbol.partition(":")
        quote = pair.partition("/")[2]
        if not swap:
            if colon:
                out.append(f"{where}.symbol: {_shown(market.symbol)} names a perpetual; set the venue's market_type: swap")
            for field in ("leverage", "margin_mode"):
                if getattr(market, field) is not None:
                    out.append(f"{where}.{field}: only a swap venue's markets have one (this venue's market_type is spot)")
            continue
        settles.add(settle)
        if not colon or settle != quote:
            out.append(
                f"{where}.symbol: a linear perpetual is named BASE/QUOTE:SETTLE with SETTLE the quote "
                f"(e.g. BTC/USDT:USDT), got {_shown(market.symbol)}"
            )
        if market.leverage is None or not 1 <= market.leverage <= 125:
            out.append(f"{where}.leverage: a swap market needs its leverage, a whole number from 1 to 125, got {_shown(market.leverage)}")
        if market.margin_mode not in (None, "cross", "isolated"):
            out.append(f"{where}.margin_mode: must be cross or isolated, got {_shown(market.margin_mode)}")
    if swap:
        extra = sorted(set(venue.balances) - settles)
        if extra or not venue.balances:
            out.append(
                f"{at}.balances: a swap venue's balance is its wallet in the settlement asset "
                f"({', '.join(sorted(settles)) or 'of its markets'}), got {_shown(sorted(venue.balances))}"
            )
        if not abs(venue.funding_rate) < Decimal("0.01"):
            out.append(f"{at}.funding_rate: a rate per 8 hours below 0.01 in size (0.0001 is 0.01 %), got {venue.funding_rate}")
        if not Decimal(0) <= venue.maintenance_margin_rate < Decimal("0.5"):
            out.append(f"{at}.maintenance_margin_rate: must be at least 0 and below 0.5, got {venue.maintenance_margin_rate}")
    return out


def _position_problems(
    s: StrategySettings, venue: VenueConfig, at: str, before: list[StrategySettings]
) -> list[str]:
    """A strategy of positions on a swap venue, or settings of one on a spot venue."""
    swap = getattr(venue, "market_type", "spot") == "swap"
    if not swap:
        out = [
            f"{at}.{field}: only a strategy on a swap venue has one (venue {_shown(venue.name)} is spot)"
            for field in ("on_buy", "on_sell") if getattr(s, field) is not None
        ]
        if s.protection is not None:
            out += _spot_protection_problems(s, venue, at)
        return out
    out = []
    if isinstance(venue, CcxtVenueConfig):
        if s.symbol not in {m.symbol for m in venue.markets}:
            out.append(f"{at}.symbol: {_shown(s.symbol)} is not among the markets of venue {_shown(venue.name)}; add "
                       f"{{symbol: {s.symbol}, leverage: N, margin_mode: cross}} to its markets")
    for field in ("on_buy", "on_sell"):
        if getattr(s, field) is None:
            out.append(
                f"{at}.{field}: a strategy on swap venue {_shown(venue.name)} says which position a "
                f"{field[3:]} signal asks for: long, short or flat (e.g. on_buy: long, on_sell: flat or short)"
            )
    if s.sizing.percent is not None:
        out.append(f"{at}.sizing.percent: a position is sized by base (sizing.base) or by notional (sizing.quote), not percent")
    for field in ("take_profit_pct", "stop_loss_pct"):
        if getattr(s, field) is not None:
            out.append(f"{at}.{field}: on a swap venue protection rests on the exchange: use protection.{field}")
    if s.protection is not None:
        out += _swap_protection_problems(s.protection, at)
        out += _protection_value_problems(s.protection, at)
        out += [problem for problem, certain in _stop_past_liquidation(s, venue, at) if certain]
    # One-way position mode: the account has one position per symbol, so two strategies on
    # it could not tell their positions apart.
    for other in before:
        if other.venue == s.venue and other.symbol == s.symbol:
            out.append(
                f"{at}.symbol: strategies {other.name} and {s.name} both trade {s.symbol} on venue {s.venue}, "
                "a one-way account with one position per symbol; give each its own symbol or venue"
            )
    return out


def _swap_protection_problems(p: ProtectionConfig, at: str) -> list[str]:
    """A swap position's protection must protect: a stop-loss, unless the config says in so
    many words that the take-profit rests alone (``without_stop_loss: true``)."""
    if p.take_profit_pct is None and p.stop_loss_pct is None:
        return [f"{at}.protection: protects nothing: set protection.stop_loss_pct (and protection.take_profit_pct), "
                "or remove protection"]
    if p.stop_loss_pct is None and not p.without_stop_loss:
        return [f"{at}.protection.stop_loss_pct: a position's protection has a stop-loss: set protection.stop_loss_pct, "
                "or protection.without_stop_loss: true to rest the take-profit alone (the position then has no stop "
                "on the exchange)"]
    if p.stop_loss_pct is not None and p.without_stop_loss:
        return [f"{at}.protection.without_stop_loss: true contradicts protection.stop_loss_pct "
                f"({p.stop_loss_pct}); remove one"]
    return []


#: The maintenance margin rate assumed for a ccxt venue's liquidation distance: Binance
#: USD-M's lowest bracket (BTCUSDT, 0.4 %). A larger position, or another symbol, has a
#: higher rate and its liquidation lies nearer: the check errs on the side of passing.
ASSUMED_MAINTENANCE_MARGIN_RATE = Decimal("0.004")


def liquidation_distance_pct(leverage: int, maintenance_margin_rate: Decimal) -> Decimal:
    """Approximately how far, in percent of the entry price, the price moves against an
    isolated position before it is liquidated: ``100 / leverage`` minus the maintenance
    margin rate in percent (the margin is 1/leverage of the notional; liquidation comes when
    what is left of it is the maintenance margin; fees ignored). A cross position draws on
    the whole wallet and lasts longer, by an amount only the wallet at the time knows."""
    return Decimal(100) / leverage - maintenance_margin_rate * 100


def _stop_past_liquidation(s: StrategySettings, venue: VenueConfig, at: str) -> list[tuple[str, bool]]:
    """A stop-loss at or beyond the approximate liquidation distance, with whether that is
    certain (isolated margin: refused) or not (cross: a warning)."""
    p = s.protection
    market = next((m for m in getattr(venue, "markets", ()) if m.symbol == s.symbol), None)
    if p is None or p.stop_loss_pct is None or market is None or not isinstance(market.leverage, int) or market.leverage < 1:
        return []
    rate = getattr(venue, "maintenance_margin_rate", ASSUMED_MAINTENANCE_MARGIN_RATE)
    distance = liquidation_distance_pct(market.leverage, rate)
    if p.stop_loss_pct < distance:
        return []
    isolated = market.margin_mode == "isolated"
    mode = "isolated" if isolated else "cross"
    figure = f"about {distance.quantize(Decimal('0.01'))} % (100 / leverage {market.leverage} minus the maintenance margin rate {(rate * 100).normalize()} %)"
    if isolated:
        return [(f"{at}.protection.stop_loss_pct: a stop {p.stop_loss_pct} % from the entry lies beyond the liquidation "
                 f"of an isolated position at leverage {market.leverage} on venue {venue.name}, {figure}: the exchange "
                 f"would liquidate the position before the stop could act; set stop_loss_pct below {distance.quantize(Decimal('0.01'))} "
                 "or lower the market's leverage", True)]
    return [(f"{at}.protection.stop_loss_pct: a stop {p.stop_loss_pct} % from the entry lies beyond the liquidation "
             f"distance of a position's own margin at leverage {market.leverage} ({mode} margin) on venue {venue.name}, "
             f"{figure}; the rest of the wallet may hold it longer, or not: lower the stop or the leverage", False)]


def config_warnings(config: Config) -> list[str]:
    """What is allowed but likely not meant (printed by ``limitline check`` and at start):
    today, a cross-margin stop-loss beyond the position's own margin."""
    venues = {v.name: v for v in config.venues}
    out = []
    for i, s in enumerate(config.strategies):
        venue = venues.get(s.venue)
        if venue is not None and getattr(venue, "market_type", "spot") == "swap":
            out += [problem for problem, certain in _stop_past_liquidation(s, venue, f"strategies[{i}]") if not certain]
    return out


def _protection_value_problems(p: ProtectionConfig, at: str) -> list[str]:
    """The distances of ``protection``, each above 0 and below its bound (percent)."""
    from actors.strategy.protection_core import ProtectionSettings

    out = []
    settings = ProtectionSettings(
        take_profit=None if p.take_profit_pct is None else p.take_profit_pct / 100,
        stop_loss=None if p.stop_loss_pct is None else p.stop_loss_pct / 100,
        stop_limit_offset=p.stop_limit_slippage_pct / 100, gap_slippage=p.gap_slippage_pct / 100,
    )
    names = {"take_profit": "take_profit_pct", "stop_loss": "stop_loss_pct",
             "stop_limit_offset": "stop_limit_slippage_pct", "gap_slippage": "gap_slippage_pct"}
    for problem in settings.problems():
        field = problem.split(" ", 1)[0].removeprefix("protection.")
        out.append(f"{at}.protection.{names.get(field, field)}: must be above 0 and below "
                   f"{'100' if field in ('take_profit', 'stop_loss') else '50'} (percent), got "
                   f"{getattr(p, names.get(field, field))}")
    return out


#: The ccxt exchanges whose spot API offers an OCO order list limitline places (Binance's
#: ``POST /api/v3/orderList/oco``, through ccxt 4.5's ``binance``).
SPOT_OCO_EXCHANGES = frozenset({"binance"})


def _spot_protection_problems(s: StrategySettings, venue: VenueConfig, at: str) -> list[str]:
    """Protection of a spot strategy: one OCO order list (a limit-maker take-profit and a
    stop-loss-limit, both selling the same coins once), so the venue must offer OCO and both
    distances are required; the strategy's own client-side exits would sell the same coins."""
    out = []
    if isinstance(venue, CcxtVenueConfig) and venue.exchange not in SPOT_OCO_EXCHANGES:
        return [
            f"{at}.protection: on spot, protection is one OCO order list (two separate sells would each lock "
            f"the same coins), and limitline places one only on {', '.join(sorted(SPOT_OCO_EXCHANGES))} "
            f"spot and simulated venues; venue {_shown(venue.name)} is ccxt {_shown(venue.exchange)}: remove "
            "protection (take_profit_pct / stop_loss_pct exit from limitline instead)"
        ]
    for field in ("take_profit_pct", "stop_loss_pct"):
        if getattr(s.protection, field) is None:
            out.append(f"{at}.protection.{field}: an OCO order list on spot has both legs, a take-profit and a "
                       f"stop-loss: set protection.{field}")
        if getattr(s, field) is not None:
            out.append(f"{at}.{field}: with protection the exits rest on the exchange as one OCO order list; "
                       f"a second, client-side exit would sell the same coins: use protection.{field} alone")
    return out + _protection_value_problems(s.protection, at)


def _ccxt_problems(venue: CcxtVenueConfig, at: str) -> list[str]:
    from exchange.ccxt_adapter import (
        MARKET_TYPES,
        ca_file_problem,
        exchange_exists,
        proxy_problem,
        timeframe_seconds,
    )

    out = []
    if not exchange_exists(venue.exchange):
        out.append(f"{at}.exchange: ccxt has no exchange {_shown(venue.exchange)}")
    if venue.base_url is not None and not re.match(r"^https?://[^/]+", venue.base_url):
        out.append(f"{at}.base_url: must look like http://HOST:PORT, got {_shown(venue.base_url)}")
    if venue.market_type not in MARKET_TYPES:
        out.append(f"{at}.market_type: must be one of {', '.join(MARKET_TYPES)}, got {_shown(venue.market_type)}")
    if proxy_problem(venue.https_proxy) is not None:
        out.append(f"{at}.https_proxy: must look like http://HOST:PORT, got {_shown(venue.https_proxy)}")
    if venue.ca_file is not None and ca_file_problem(venue.ca_file) is not None:
        out.append(f"{at}.ca_file: {ca_file_problem(venue.ca_file)}")
    try:
        if exchange_exists(venue.exchange):
            timeframe_seconds(venue.timeframe, venue.exchange)
    except ValueError as problem:
        out.append(f"{at}.timeframe: {problem}; got {_shown(venue.timeframe)}")
    out += _seconds_problems(
        venue, at, ("poll_seconds", "isolate_after_seconds", "probe_max_seconds", "timeout_seconds", "never_placed_after_seconds")
    )
    out += _ccxt_market_problems(venue, at)
    rate = venue.rate_limit_per_second
    if not 0 < rate <= 1 / MIN_SECONDS:
        out.append(f"{at}.rate_limit_per_second: must be greater than 0 and at most {1 / MIN_SECONDS:g} (one request a millisecond), got {rate:g}")
    return out


def _market_type_known(venue: VenueConfig) -> bool:
    """Whether the venue's ``market_type`` is one limitline trades (else it is one config error)."""
    if isinstance(venue, CcxtVenueConfig):
        from exchange.ccxt_adapter import MARKET_TYPES

        return venue.market_type in MARKET_TYPES
    return venue.market_type in ("spot", "swap")


def _ccxt_market_problems(venue: CcxtVenueConfig, at: str) -> list[str]:
    """The markets of a ccxt swap venue (their leverage and margin mode), and the margin age."""
    if not _market_type_known(venue):
        return []  # the market_type's own error says it all
    if venue.market_type != "swap":
        return [f"{at}.markets: only a swap venue's markets are listed (leverage, margin mode); this venue's market_type is "
                f"{_shown(venue.market_type)}"] if venue.markets else []
    out = _seconds_problems(venue, at, ("margin_max_age_seconds",))
    seen: set[str] = set()
    for j, market in enumerate(venue.markets):
        where = f"{at}.markets[{j}]"
        pair, colon, settle = market.symbol.partition(":")
        if not colon or settle != pair.partition("/")[2]:
            out.append(f"{where}.symbol: a linear perpetual is named BASE/QUOTE:SETTLE with SETTLE the quote "
                       f"(e.g. BTC/USDT:USDT), got {_shown(market.symbol)}")
        if market.symbol in seen:
            out.append(f"{where}.symbol: {_shown(market.symbol)} is listed twice")
        seen.add(market.symbol)
        if not isinstance(market.leverage, int) or not 1 <= market.leverage <= 125:
            out.append(f"{where}.leverage: a whole number from 1 to 125, got {_shown(market.leverage)}")
        if market.margin_mode not in ("cross", "isolated"):
            out.append(f"{where}.margin_mode: must be cross or isolated, got {_shown(market.margin_mode)}")
    return out


#: Every duration in the config (seconds) lies within these: shorter than a millisecond is
#: a busy loop (and almost always a typo), longer than 30 days is never meant.
MIN_SECONDS, MAX_SECONDS = 0.001, 2_592_000


def _seconds_problems(section: Any, at: str, fields: tuple[str, ...]) -> list[str]:
    out = []
    for field in fields:
        value = getattr(section, field)
        if not MIN_SECONDS <= value <= MAX_SECONDS:
            out.append(
                f"{at}.{field}: must be between {MIN_SECONDS:g} (1 ms) and {MAX_SECONDS} (30 days) seconds, got {value:g}"
            )
    return out


def _replay_problems(replay: ReplayConfig, at: str) -> list[str]:
    """The replay's data file must be readable candles, and its start inside them."""
    from exchange.candles import CandleDataError, load_candles_cached

    try:
        candles = load_candles_cached(data_path(replay.data))
    except FileNotFoundError as error:
        return [f"{at}.data: {error}"]
    except CandleDataError as error:
        return [f"{at}.data: {error}"]
    if replay.start is not None and int(replay.start.timestamp()) > candles[-1].ts:
        start, last = replay.start.astimezone(timezone.utc), datetime.fromtimestamp(candles[-1].ts, timezone.utc)
        return [
            f"{at}.start: {start.isoformat().replace('+00:00', 'Z')} is after the data ends "
            f"(last candle {last.isoformat().replace('+00:00', 'Z')}); set an earlier start, or data that covers it"
        ]
    return []


def _market_problems(market: MarketConfig, at: str) -> list[str]:
    out = []
    base, slash, quote = market.symbol.partition("/")
    if not (base and slash and quote):
        out.append(f"{at}.symbol: must look like BASE/QUOTE (ccxt's unified form), got {_shown(market.symbol)}")
    for field in ("tick_size", "lot_size"):
        value = getattr(market, field)
        if value <= 0:
            out.append(f"{at}.{field}: must be greater than 0, got {value}")
    for field in ("min_amount", "min_notional", "maker_fee", "taker_fee"):
        value = getattr(market, field)
        if value < 0:
            out.append(f"{at}.{field}: must be 0 or more, got {value}")
    for field in ("maker_fee", "taker_fee"):
        value = getattr(market, field)
        if value >= Decimal("0.1"):
            out.append(f"{at}.{field}: is a rate (0.001 is 0.1 %); must be below 0.1, got {value}")
    if market.fee_in not in ("received", "quote") and (market.fee_currency_price is None or market.fee_currency_price <= 0):
        out.append(
            f"{at}.fee_currency_price: fees in {_shown(market.fee_in)} need its price in {quote or 'quote'} per unit "
            "(greater than 0); or set fee_in to received or quote"
        )
    return out


def allocated_on(config: Config, venue: str, mode: str | None = None) -> dict[str, Decimal]:
    """The allocations on ``venue`` (of the strategies in ``mode``, if given), per asset.

    Live and shadow strategies on one ccxt venue draw on different accounts (the real one,
    and the simulated one their orders go to), so each is checked against its own."""
    totals: dict[str, Decimal] = {}
    for s in config.strategies:
        if s.venue != venue or (mode is not None and s.mode != mode):
            continue
        base, _, quote = s.symbol.partition("/")
        quote = quote.partition(":")[0]  # a perpetual's collateral is in its settlement asset
        totals[quote] = totals.get(quote, Decimal(0)) + s.allocation.quote
        totals[base] = totals.get(base, Decimal(0)) + s.allocation.base
    return totals


def data_path(data: str) -> Path:
    """The file behind a replay ``data`` value; FileNotFoundError says which and why."""
    from exchange.candles import bundled_path

    path = bundled_path(data.removeprefix("bundled:")) if data.startswith("bundled:") else Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"no candle file at {path}")
    return path


# ------------------------------------------------------------------- loading


def _inline_secrets(raw: dict[str, Any]) -> list[str]:
    """A secret written in the config is refused (its value is never repeated)."""
    out = []
    for i, venue in enumerate(raw.get("venues") or []):
        if isinstance(venue, dict):
            for key in INLINE_SECRETS:
                if key in venue:
                    out.append(
                        f"venues[{i}].{key}: secrets are never written in the config; put it in an environment "
                        f"variable and name that variable in {key.lower().replace('apikey', 'api_key')}_env, or use secrets_file"
                    )
    return out


#: A config is a few kilobytes. These bounds keep a broken or hostile file from taking the
#: machine's memory and time: the file's size, and how many values it holds once YAML
#: aliases are expanded (600 bytes of nested aliases can stand for hundreds of millions).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000


class YamlTooLarge(ValueError):
    """A YAML document bigger than a config can be, or one that contains itself."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document whose aliases expand beyond
    :data:`MAX_CONFIG_VALUES` values (or into themselves) before anything is built from it.
    PyYAML shares an aliased value rather than copying it, so loading such a file is cheap;
    it is everything after (structuring, checking, echoing a value) that would expand it."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
            repeated = _repeated_keys(node, "", set())
            if repeated:
                raise RepeatedKeys(repeated)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python reads at most 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, "a whole number too long to read (more than 4300 digits)", node.start_mark
            ) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


class RepeatedKeys(ValueError):
    """Keys given twice in one mapping: YAML says a key is unique, PyYAML keeps the last
    silently, so a second ``allocation:`` would replace the first without a word."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _repeated_keys(node: yaml.Node, path: str, seen_nodes: set[int]) -> list[str]:
    """``path.key: given twice (lines A and B); keep one`` for each key repeated in a mapping
    of ``node`` (each node visited once: aliases share theirs). A merge key (``<<``) is not
    a repetition: the keys written beside it override the merged ones, as YAML means."""
    if id(node) in seen_nodes:
        return []
    seen_nodes.add(id(node))
    out: list[str] = []
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _repeated_keys(item, f"{path}[{i}]", seen_nodes)
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = _cut(str(key.value)) if isinstance(key, yaml.ScalarNode) else None
            where = path if name is None else f"{path}.{name}" if path else name
            if name is not None and key.tag != "tag:yaml.org,2002:merge":
                if name in lines:
                    out.append(f"{where}: given twice (lines {lines[name]} and {key.start_mark.line + 1}); "
                               "YAML would keep only the last, silently; remove one")
                else:
                    lines[name] = key.start_mark.line + 1
            out += _repeated_keys(value, where, seen_nodes)
    return out


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (memoised per node, so
    linear in the size of the file)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YamlTooLarge("an alias (*name) refers to a value that contains it; a config value cannot contain itself")
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(item, sizes, open_nodes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes) for k, v in node.value)
    open_nodes.discard(key)
    if total > MAX_CONFIG_VALUES:
        raise YamlTooLarge(
            f"holds more than {MAX_CONFIG_VALUES:,} values once its aliases (*name) are expanded; a config is far "
            "smaller: check its anchors (&name) and aliases"
        )
    sizes[key] = total
    return total


def read_yaml(text: str) -> Any:
    """``text`` as plain data, like ``yaml.safe_load``, within the bounds above. Raises
    ``yaml.YAMLError`` (not YAML), :class:`YamlTooLarge`, or ``ValueError`` (a value YAML
    cannot build, such as a whole number of more than 4300 digits)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: plain data only
    except RecursionError:
        raise YamlTooLarge("is nested too deeply; a config has a few levels") from None


def load_config(path: str | Path | None = None, live: bool = False, lab: bool = False) -> Config:
    """Read, structure and check the config at ``path`` (the embedded default if None).
    ``live`` and ``lab``: see :func:`parse_config`."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        with source.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(str(source), ["the config file does not exist"]) from None
    except OSError as error:
        raise ConfigError(str(source), [f"the config file cannot be read: {error.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(source), [f"config: the file is larger than {MAX_CONFIG_BYTES:,} bytes; a config is a few kilobytes"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            str(source), [f"config: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}); save the config as UTF-8"]
        ) from None
    try:
        raw = read_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(str(source), [f"config: not valid YAML: {where}{_cut(problem)}"]) from None
    except YamlTooLarge as error:
        raise ConfigError(str(source), [f"config: {error}"]) from None
    except RepeatedKeys as error:
        raise ConfigError(str(source), error.problems) from None
    except ValueError as error:  # e.g. a whole number too long to convert
        raise ConfigError(str(source), [f"config: a value cannot be read: {_cut(str(error))}"]) from None
    return parse_config(raw, str(source), live, lab)


def parse_config(raw: Any, source: str = "config", live: bool = False, lab: bool = False) -> Config:
    """``live``: the process was started with ``--live`` (live strategies may be armed).
    ``lab``: the config is to be backtested in the Lab, which never trades: a strategy with
    ``mode: live`` needs neither ``--live`` nor credentials there."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["config: must be a mapping with venues and strategies"])
    secrets = _inline_secrets(raw)
    if secrets:
        raise ConfigError(source, secrets)
    try:
        config = _converter.structure(raw, Config)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as error:
        raise ConfigError(source, _structure_problems(error)) from None
    problems = check_config(config, live, lab)
    if problems:
        raise ConfigError(source, problems)
    return config
