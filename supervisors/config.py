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

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import yaml
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
from actors.strategy.settings import StrategySettings

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
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


@attrs.frozen
class Config:
    venues: list[VenueConfig]
    strategies: list[StrategySettings]
    store: str = "limitline-data/limitline.sqlite"
    status: StatusConfig = StatusConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    reconciler: ReconcilerConfig = ReconcilerConfig()

    def venue(self, name: str) -> VenueConfig:
        return next(v for v in self.venues if v.name == name)


# --------------------------------------------------------------- structuring

_converter = cattrs.Converter(forbid_extra_keys=True)
_TRIGGERS: dict[str, type] = {
    "sma_cross": SmaCross, "ema_cross": SmaCross, "change": Change, "rsi": Rsi, "price_cross": PriceCross,
    "grid": Grid, "all": Combination, "any": Combination,
}


def _decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def _trigger(value: Any, _: type) -> TriggerSpec:
    if not isinstance(value, dict) or "kind" not in value:
        raise ValueError(f"expected a mapping with a kind ({', '.join(_TRIGGERS)}), got {value!r}")
    cls = _TRIGGERS.get(value["kind"])
    if cls is None:
        raise ValueError(f"kind must be one of {', '.join(_TRIGGERS)}, got {value['kind']!r}")
    if cls is Combination:
        parts = value.get("of")
        if not isinstance(parts, list):
            raise ValueError(f"{value['kind']}: 'of' must be a list of triggers")
        extra = set(value) - {"kind", "of"}
        if extra:
            raise ValueError(f"{value['kind']}: unknown field(s) {sorted(extra)}")
        return Combination(tuple(_trigger(part, TriggerSpec) for part in parts), value["kind"])
    return _converter.structure(value, cls)


def _datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO-8601 time, got {value!r}") from None


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _venue(value: Any, _: type) -> VenueConfig:
    kind = value.get("kind", "simulated") if isinstance(value, dict) else None
    cls = {"simulated": SimulatedVenueConfig, "ccxt": CcxtVenueConfig}.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"kind must be simulated or ccxt, got {kind!r}")
    return _converter.structure(value, cls)


_converter.register_structure_hook(Decimal, _decimal)
_converter.register_structure_hook(VenueConfig, _venue)
_converter.register_structure_hook(TriggerSpec, _trigger)
_converter.register_structure_hook(TriggerSpec | None, lambda v, t: None if v is None else _trigger(v, t))
_converter.register_structure_hook(datetime, _datetime)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)


def _structure_problems(error: BaseException, path: str = "") -> list[str]:
    """Flatten cattrs' nested errors into ``path: message`` lines."""
    if isinstance(error, ForbiddenExtraKeysError):
        return [f"{_join(path, key)}: unknown field (check its spelling)" for key in sorted(error.extra_fields)]
    if isinstance(error, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in error.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if hasattr(n, "name") or hasattr(n, "index")), None)
            if note is None:
                out += _structure_problems(sub, path)
            elif hasattr(note, "name"):
                out += _structure_problems(sub, _join(path, note.name))
            else:
                out += _structure_problems(sub, f"{path}[{note.index}]")
        return out
    if isinstance(error, KeyError):
        return [f"{path}: is required"]
    message = str(error)
    if isinstance(error, TypeError) and "missing" in message and "required" in message:
        fields = re.findall(r"'(\w+)'", message)
        return [f"{_join(path, field)}: is required" for field in fields] or [f"{path}: {message}"]
    return [f"{path or 'config'}: {message}"]


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


# ------------------------------------------------------------------ checking


def check_config(config: Config, live: bool = False) -> list[str]:
    """Every semantic problem of a structurally valid config."""
    problems: list[str] = []

    def need(condition: bool, path: str, message: str) -> None:
        if not condition:
            problems.append(f"{path}: {message}")

    need(bool(config.venues), "venues", "at least one venue is required")
    need(bool(config.strategies), "strategies", "at least one strategy is required")
    need(0 <= config.status.port <= 65535, "status.port", f"must be between 0 (any free port) and 65535, got {config.status.port}")
    need(config.supervision.max_restarts >= 0, "supervision.max_restarts", f"must be 0 or more, got {config.supervision.max_restarts}")
    need(config.supervision.period_seconds > 0, "supervision.period_seconds", f"must be greater than 0, got {config.supervision.period_seconds}")
    need(config.reconciler.interval_seconds > 0, "reconciler.interval_seconds", f"must be greater than 0, got {config.reconciler.interval_seconds}")

    venues: dict[str, VenueConfig] = {}
    for i, venue in enumerate(config.venues):
        at = f"venues[{i}]"
        need(bool(NAME.match(venue.name)), f"{at}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {venue.name!r}")
        need(venue.name not in venues, f"{at}.name", f"another venue is already named {venue.name!r}")
        venues[venue.name] = venue
        if isinstance(venue, CcxtVenueConfig):
            problems += _ccxt_problems(venue, at)
            continue
        need(Decimal(0) < venue.volume_share <= 1, f"{at}.volume_share", f"must be greater than 0 and at most 1, got {venue.volume_share}")
        symbols = [m.symbol for m in venue.markets]
        need(bool(symbols), f"{at}.markets", "at least one market is required")
        for j, market in enumerate(venue.markets):
            problems += _market_problems(market, f"{at}.markets[{j}]")
        for asset, amount in venue.balances.items():
            need(amount >= 0, f"{at}.balances.{asset}", f"must be 0 or more, got {amount}")
        for symbol, replay in venue.replay.items():
            need(symbol in symbols, f"{at}.replay.{symbol}", f"is not one of the venue's markets {symbols}")
            need(0 < replay.speed <= 10_000, f"{at}.replay.{symbol}.speed", f"must be greater than 0 and at most 10000 candles per second, got {replay.speed:g}")
            try:
                data_path(replay.data)
            except FileNotFoundError as error:
                problems.append(f"{at}.replay.{symbol}.data: {error}")
        for symbol in symbols:
            need(symbol in venue.replay, f"{at}.replay", f"a simulated venue needs replay data for {symbol}")

    names: set[str] = set()
    for i, s in enumerate(config.strategies):
        at = f"strategies[{i}]"
        need(bool(NAME.match(s.name)), f"{at}.name", f"must be 1-64 letters, digits, '_', '.' or '-', got {s.name!r}")
        need(s.name not in names, f"{at}.name", f"another strategy is already named {s.name!r}")
        names.add(s.name)
        venue = venues.get(s.venue)
        if venue is None:
            problems.append(f"{at}.venue: no venue is named {s.venue!r} (venues: {sorted(venues)})")
        elif s.mode == "live" and not isinstance(venue, CcxtVenueConfig):
            problems.append(f"{at}.mode: live trading needs a ccxt venue; venue {s.venue!r} is simulated")
        elif s.mode == "live" and not live:
            problems.append(
                f"{at}.mode: strategy {s.name} is set to live but limitline was started without --live; "
                "it will not place real orders. Start with `limitline run --live` to arm it"
            )
        elif s.mode == "live" and venue.secrets_file is None and (venue.api_key_env is None or venue.secret_env is None):
            problems.append(
                f"{at}.mode: live trading on venue {s.venue!r} needs credentials: name api_key_env and secret_env "
                "(environment variables), or secrets_file"
            )
    return problems


def _ccxt_problems(venue: CcxtVenueConfig, at: str) -> list[str]:
    from exchange.ccxt_adapter import exchange_exists, timeframe_seconds

    out = []
    if not exchange_exists(venue.exchange):
        out.append(f"{at}.exchange: ccxt has no exchange {venue.exchange!r}")
    if venue.base_url is not None and not re.match(r"^https?://[^/]+", venue.base_url):
        out.append(f"{at}.base_url: must look like http://HOST:PORT, got {venue.base_url!r}")
    try:
        timeframe_seconds(venue.timeframe)
    except ValueError as problem:
        out.append(f"{at}.timeframe: {problem}")
    for field in ("poll_seconds", "rate_limit_per_second", "isolate_after_seconds", "probe_max_seconds", "timeout_seconds",
                  "never_placed_after_seconds"):
        if getattr(venue, field) <= 0:
            out.append(f"{at}.{field}: must be greater than 0, got {getattr(venue, field)}")
    return out


def _market_problems(market: MarketConfig, at: str) -> list[str]:
    out = []
    base, slash, quote = market.symbol.partition("/")
    if not (base and slash and quote):
        out.append(f"{at}.symbol: must look like BASE/QUOTE (ccxt's unified form), got {market.symbol!r}")
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


def load_config(path: str | Path | None = None, live: bool = False) -> Config:
    """Read, structure and check the config at ``path`` (the embedded default if None)."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ConfigError(str(source), ["the config file does not exist"]) from None
    except OSError as error:
        raise ConfigError(str(source), [f"the config file cannot be read: {error.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(str(source), [f"config: not valid YAML: {where}{problem}"]) from None
    return parse_config(raw, str(source), live)


def parse_config(raw: Any, source: str = "config", live: bool = False) -> Config:
    """``live``: the process was started with ``--live`` (live strategies may be armed)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["config: must be a mapping with venues and strategies"])
    secrets = _inline_secrets(raw)
    if secrets:
        raise ConfigError(source, secrets)
    try:
        config = _converter.structure(raw, Config)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as error:
        raise ConfigError(source, _structure_problems(error)) from None
    problems = check_config(config, live)
    if problems:
        raise ConfigError(source, problems)
    return config
