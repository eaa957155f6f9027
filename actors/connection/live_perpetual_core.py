"""A connection to a derivatives (USD-M perpetuals) account through ccxt: the rules, without I/O.

The spot live connection's core (:class:`actors.connection.live_core.LiveConnectionCore`:
idempotent client order ids, UNKNOWN outcomes looked up by client order id, Retry-After,
trades polled by (symbol, trade id) and never skipped, cancels asked again until the
exchange says, venue isolation, the clock) with what a perpetuals account adds:

- **Settings at start.** Once the markets load, each configured market's margin mode and
  leverage are set (``set_margin_mode``, then ``set_leverage``) and read back
  (``fetch_leverage``). A market whose settings cannot be set, or read back otherwise, is a
  pre-flight problem of its strategy (:attr:`VenueFacts.market_problems`); strategies hear
  of the venue only once every market is settled. The leverage read back is the one their
  reservations use. Setting them at every start puts back a leverage changed outside while
  limitline was down; when the account held other settings (read just before), a
  ``market_settings_set`` event of the strategy trading the market says which.
- **Orders.** Limit orders only: a close is a reduce-only limit; a stop-loss is a
  stop-limit on the exchange's conditional-order path (ccxt: type ``limit`` with
  ``stopLossPrice``, Binance's ``/fapi/v1/algoOrder``), kept in the order of record under
  ``algo-<algoId>``. Once it triggers, the exchange places its child limit order (another
  id; Binance gives it the conditional order's client id): the child is adopted (from the
  open orders, or from a lookup of the conditional order, ``actualOrderId``), its trades are
  the order's fills, and a cancel goes to it.
- **Margin before an open** (issue 13, item 5). An order that is not reduce-only needs its
  initial margin (``notional / leverage + notional x the worse fee rate``, the ledger's own
  rule) to be covered by the exchange's available margin (``availableBalance``) as read no
  longer than ``margin_max_age_seconds`` ago, less what the opens sent since that reading
  hold; else it is rejected with the figures and never sent. A view older than that is read
  again first (the open waits for it). Binance's own refusal (-2019 "Margin is
  insufficient.") is a rejection with that reason and its code, released by the ledger and
  counted by the strategy's breaker, as any rejection.
- **Snapshots for the reconciler**: positions (``fetch_positions``), the leverage and margin
  mode of each market (``fetch_leverages``: Binance's ``/fapi/v3/positionRisk`` carries no
  leverage, ``/fapi/v1/symbolConfig`` does; the reconciler pauses a strategy whose market's
  leverage was changed outside), open orders of both
  kinds, trades, income (``fetch_ledger``: funding, transfers, commissions), the forced
  orders' ids (``fetch_my_liquidations``: their trades are liquidations) and the wallet, as a :class:`actors.reconciler.positions_core.PositionsSnapshot`; a child's
  trades and listing carry the exchange id of its order of record.

- **Shadow strategies** on the venue trade on its real candles with a simulated perpetuals
  account (:class:`LazyPerpetualExchange`, :class:`actors.connection.perpetual_core.PerpetualOrders`,
  the same engine as a simulated swap venue): their orders never reach the exchange, their
  ids carry ``shadow-``, their account is kept in the store and continues after a restart,
  and the reconciler's snapshot holds both accounts (the wallets summed).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Sequence

import attrs

from actors.connection.live_core import (
    SHADOW_ID_PREFIX,
    LiveConnectionCore,
    LiveSettings,
    Tracked,
    _Pending,
    record_id,
)
from actors.connection.perpetual_core import PerpetualOrders
from actors.messages import (
    LEDGER,
    WRITER,
    CallDone,
    ExchangeSnapshot,
    OrderRejected,
    RecordEvent,
    Send,
    StopTriggered,
    Subscribe,
    VenueFacts,
    strategy_address,
)
from actors.orders import Order
from actors.reconciler.positions_core import ExchangeIncome, ExchangePosition, PositionsSnapshot
from exchange.errors import ErrorKind
from exchange.markets import MarketRules
from exchange.perpetuals import PerpetualExchange, PerpetualState, perpetual_rules
from exchange.records import ExchangeConditionalOrder, ExchangeOrder, ExchangeTrade, MarginAccount

ZERO = Decimal(0)
#: The steps that put a market's settings in place, in order.
SETTING_STEPS = ("set_margin_mode", "set_leverage", "leverage")


@attrs.frozen
class PerpetualMarketSetting:
    """What a market of a derivatives venue is set to at start."""

    symbol: str
    leverage: int
    margin_mode: str = "cross"  # cross | isolated
    #: The live strategy trading it (one-way account: one at most): the events about the
    #: market's settings name it, so that its own feed shows them.
    strategy: str | None = None


class LazyPerpetualExchange:
    """The simulated perpetuals account of a live swap venue's shadow strategies, made once
    the venue's markets (their rules) are loaded; held outside the connection actor so that
    it keeps its orders while the connection restarts. ``wallet``: the shadow strategies'
    allocations in the settlement asset; ``markets``: the leverage and margin mode of each
    market; ``restored``: its state as the store holds it. Funding is charged at the engine's
    default rate (0.01 % per 8 hours), not the exchange's published one."""

    def __init__(self, wallet: Decimal, markets: Sequence[PerpetualMarketSetting],
                 restored: PerpetualState | None = None) -> None:
        self.wallet = wallet
        self.settings = list(markets)
        self.restored = restored
        self.exchange: PerpetualExchange | None = None

    def get(self, markets: dict[str, MarketRules]) -> PerpetualExchange:
        if self.exchange is None:
            rules = [
                perpetual_rules(m.symbol, tick_size=r.tick_size, lot_size=r.lot_size, min_amount=r.min_amount,
                                min_notional=r.min_notional, maker_fee=r.maker_fee, taker_fee=r.taker_fee)
                for m in self.settings if (r := markets.get(m.symbol)) is not None
            ]
            exchange = PerpetualExchange(rules, self.wallet, margin_asset=rules[0].quote if rules else "USDT")
            for m in self.settings:
                if m.symbol in exchange.markets:
                    exchange.set_leverage(m.symbol, m.leverage)
                    if m.margin_mode == "isolated":
                        exchange.set_margin_mode(m.symbol, "isolated")
            if self.restored is not None:
                exchange.restore(self.restored)
            self.exchange = exchange
        return self.exchange


class LivePerpetualConnectionCore(LiveConnectionCore):
    BALANCE_OPERATION = "fetch_margin_account"

    def __init__(
        self,
        venue: str,
        settings: LiveSettings,
        now: float,
        fatal: str | None = None,
        *,
        markets: Sequence[PerpetualMarketSetting] = (),
        margin_max_age_seconds: float = 10.0,
        shadow_strategies: frozenset[str] = frozenset(),
        shadow_exchange: LazyPerpetualExchange | None = None,
        authenticated: bool = True,
    ) -> None:
        """``markets``: the settings of the markets the live strategies trade (set on the
        account at start); ``shadow_exchange``: the shadow strategies' simulated account."""
        super().__init__(venue, settings, now, fatal, shadow_strategies=shadow_strategies, authenticated=authenticated)
        self._shadow_book = shadow_exchange
        self.shadow: PerpetualOrders | None = None  # type: ignore[assignment]
        self.market_settings = {m.symbol: m for m in markets} if authenticated else {}
        self.margin_max_age_seconds = margin_max_age_seconds
        #: The leverage read back from the exchange, per market, once its settings are in place.
        self.leverage: dict[str, Decimal] = {}
        #: The leverage and margin mode the latest snapshot read, per market (changed outside
        #: when it differs from :attr:`leverage`).
        self.leverage_on_exchange: dict[str, tuple[Decimal, str]] = {}
        #: The settings each market held before they were set at start.
        self._found_settings: dict[str, tuple[Decimal, str]] = {}
        self.market_problems: dict[str, str] = {}
        #: Markets whose settings are not in place yet: no strategy hears of the venue before.
        self._settings_pending: set[str] = set(self.market_settings)
        #: A settings step that failed for a passing reason, asked again from this time.
        self._settings_due: dict[str, tuple[str, float]] = {}
        #: The exchange's margin per asset, and when the call that read it was decided.
        self.margin: dict[str, MarginAccount] = {}
        self.margin_read_at: float | None = None
        #: Opens sent since: client order id -> (initial margin, when the exchange answered
        #: the create, or None). A reading asked after that answer counts it already.
        self._committed: dict[str, tuple[Decimal, float | None]] = {}
        #: Opens waiting for a fresh reading of the margin.
        self._held: list[Order] = []
        #: Stops of ours the last listing of conditional orders lacked (triggered or ended).
        self._unlisted_stops: set[str] = set()
        #: When the latest listing of each kind (``orders``, ``algos``) per symbol was asked,
        #: and the client ids the latest regular listing showed open.
        self._listed_at: dict[tuple[str, str], float] = {}
        self._listed_open: dict[str, frozenset[str]] = {}
        #: Ends of reduce-only orders held back until the fills that caused them are
        #: reported: client order id -> (the lookup's answer, held since).
        self._deferred_ends: dict[str, tuple[ExchangeOrder, float]] = {}
        #: symbol -> the shadow strategy holding its position (for funding payments).
        self._shadow_holders: dict[str, str] = {}
        self._snapshot_algos: list[ExchangeConditionalOrder] = []
        self._snapshot_positions: tuple[ExchangePosition, ...] = ()
        self._snapshot_leverage: dict[str, tuple[Decimal, str]] = {}
        self._snapshot_income: tuple[ExchangeIncome, ...] = ()
        self._snapshot_forced: frozenset[str] = frozenset()

    # ------------------------------------------------------------ lifecycle

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(
            market_type="swap",
            leverage={s: str(v) for s, v in sorted(self.leverage.items())},
            leverage_on_exchange={s: str(v) for s, (v, _) in sorted(self.leverage_on_exchange.items())},
            market_problems=dict(self.market_problems),
            settings_pending=sorted(self._settings_pending),
            margin={a: {"wallet": str(m.wallet), "available": str(m.available)} for a, m in sorted(self.margin.items())},
            held_opens=len(self._held),
            last_candle={s: ms // 1000 for s, ms in sorted(self.last_candle_ms.items())},
        )
        return out

    def subscribe(self, message: Subscribe, now: float) -> list[Any]:
        if message.strategy in self.shadow_strategies:
            self._shadow_holders[message.symbol] = message.strategy
            if self.shadow is not None:
                self.shadow.holders[message.symbol] = message.strategy
        out = super().subscribe(message, now)
        if out and self._settings_pending and self.fatal is None:
            self.waiting.append(strategy_address(message.strategy))  # told once the settings are in place
            return []
        return out

    def _answer_waiting(self) -> list[Any]:
        if self.fatal is None and self.clock_problem is None and (
            self._settings_pending or not self._balances_loaded or self.markets is None
        ):
            return []
        return super()._answer_waiting()

    def facts(self, to: str | None = None) -> VenueFacts:
        facts = attrs.evolve(super().facts(None), leverage=dict(self.leverage), market_problems=dict(self.market_problems))
        if self.shadow is not None and to is not None and to.removeprefix("strategy:") in self.shadow_strategies:
            ex = self.shadow.exchange  # a shadow strategy's account is the simulated one
            facts = attrs.evolve(facts, balances={ex.margin_asset: ex.wallet},
                                 leverage={s: Decimal(p.leverage) for s, p in ex.positions.items()})
        return facts

    def _markets_loaded(self, markets: dict[str, Any], now: float) -> list[Any]:
        if self._shadow_book is not None and self.shadow is None:
            self.shadow = PerpetualOrders(self.venue, self._shadow_book.get(markets), id_prefix=SHADOW_ID_PREFIX)
            self.shadow.holders.update(self._shadow_holders)
        out = super()._markets_loaded(markets, now)
        if self.shadow is not None:
            out += self.shadow.restore(self._restored, now)
        for symbol in sorted(self.market_settings):
            if symbol not in markets:
                out += self._settled(symbol, f"the exchange lists no market {symbol} (markets of this venue: swap)")
            else:
                out += self._setting(symbol, "set_margin_mode", now)
        return out

    def _setting(self, symbol: str, step: str, now: float) -> list[Any]:
        wanted = self.market_settings[symbol]
        if step == "set_margin_mode":
            return self._call(now, "set_margin_mode", (symbol, wanted.margin_mode), what=step, key=symbol)
        if step == "set_leverage":
            return self._call(now, "set_leverage", (symbol, wanted.leverage), what=step, key=symbol)
        return self._call(now, "fetch_leverage", (symbol,), what=step, key=symbol)

    def _settled(self, symbol: str, problem: str | None) -> list[Any]:
        self._settings_pending.discard(symbol)
        if problem is not None:
            self.market_problems[symbol] = problem
        return self._answer_waiting() if not self._settings_pending else []

    def _setting_done(self, step: str, symbol: str, result: Any, now: float) -> list[Any]:
        if step == "set_margin_mode" and result is not None:
            self._found_settings[symbol] = (Decimal(result[0]), result[1])  # what the account held before
        if step != "leverage":
            return self._setting(symbol, SETTING_STEPS[SETTING_STEPS.index(step) + 1], now)
        leverage, margin_mode = result
        wanted = self.market_settings[symbol]
        if leverage != wanted.leverage or margin_mode != wanted.margin_mode:
            return self._settled(symbol, (
                f"the exchange reads back leverage {leverage} and margin mode {margin_mode} after setting "
                f"leverage {wanted.leverage} and margin mode {wanted.margin_mode}"))
        self.leverage[symbol] = Decimal(leverage)
        out: list[Any] = []
        found = self._found_settings.pop(symbol, None)
        if found is not None and found != (Decimal(wanted.leverage), wanted.margin_mode):
            out.append(Send(WRITER, RecordEvent(
                kind="market_settings_set", actor=self.address, at=now, strategy=wanted.strategy, reason=(
                    f"{symbol} on {self.venue}: the exchange held leverage {found[0]} and margin mode {found[1]}; "
                    f"set to the configured leverage {wanted.leverage} and margin mode {wanted.margin_mode} at start"),
                payload={"symbol": symbol, "leverage": {"found": str(found[0]), "set": str(wanted.leverage)},
                         "margin_mode": {"found": found[1], "set": wanted.margin_mode}})))
        return out + self._settled(symbol, None)

    # ---------------------------------------------------------------- orders

    def submit(self, order: Order, now: float) -> list[Any]:
        if order.reduce_only or self.isolated or self.fatal or order.strategy in self.shadow_strategies:
            return super().submit(order, now)  # a close needs no margin; an isolated venue refuses
        return self._open(order, now)

    def _open(self, order: Order, now: float) -> list[Any]:
        """An open is sent only if the exchange's available margin, read recently enough,
        covers its initial margin; a reading too old is asked again first."""
        if self.margin_read_at is None or now - self.margin_read_at > self.margin_max_age_seconds:
            self._held.append(order)
            return self._read_margin(now)
        need, notional, leverage = self.initial_margin(order)
        asset = self._settlement(order.symbol)
        account = self.margin.get(asset)
        available = account.available if account is not None else ZERO
        held = sum((m for m, _ in self._committed.values()), ZERO)
        if need > available - held:
            reason = (
                f"insufficient margin on the exchange: needs {need:.2f} {asset} (notional {notional:.2f} / leverage "
                f"{leverage} + worst fee), available {available} {asset} read {now - self.margin_read_at:.1f}s ago"
                + (f", less {held:.2f} {asset} held by opens just sent" if held else "") + "; not sent"
            )
            rejected = OrderRejected(order.client_order_id, reason, now)
            return [Send(strategy_address(order.strategy), rejected), Send(LEDGER, rejected)]
        self._committed[order.client_order_id] = (need, None)
        return super().submit(order, now)

    def initial_margin(self, order: Order) -> tuple[Decimal, Decimal, Decimal]:
        """(initial margin, notional, leverage) of an open: the ledger's rule for its
        reservation (``actors.ledger.positions_core``), at the leverage the exchange holds."""
        assert self.markets is not None
        rules = self.markets[order.symbol]
        leverage = self.leverage.get(order.symbol) or Decimal(self.market_settings[order.symbol].leverage)
        if order.symbol in self.leverage_on_exchange:  # changed outside and lower: the exchange needs more
            leverage = min(leverage, self.leverage_on_exchange[order.symbol][0])
        notional = order.price * order.amount
        return notional / leverage + notional * max(rules.maker_fee, rules.taker_fee), notional, leverage

    def _settlement(self, symbol: str) -> str:
        rules = (self.markets or {}).get(symbol)
        return rules.quote if rules is not None else symbol.partition(":")[2]

    def _read_margin(self, now: float) -> list[Any]:
        if self._in_flight("margin"):
            return []
        return self._call(now, self.BALANCE_OPERATION, what="margin")

    def _margin_read(self, accounts: dict[str, MarginAccount], issued_at: float, now: float) -> dict[str, Decimal]:
        """A reading of the margin: what it already counts of the opens sent is let go;
        the opens waiting for it are judged. Returns the wallets (the account's balances)."""
        if self.margin_read_at is None or issued_at >= self.margin_read_at:
            self.margin, self.margin_read_at = dict(accounts), issued_at
        for cid, (_, answered) in list(self._committed.items()):
            tracked = self.tracked.get(cid)
            if (answered is not None and answered < issued_at) or tracked is None or tracked.done:
                del self._committed[cid]
        return {asset: account.wallet for asset, account in accounts.items()}

    def _release_held(self, now: float) -> list[Any]:
        held, self._held = self._held, []
        out: list[Any] = []
        for order in held:
            out += self._open(order, now)
        return out

    def _rejection_reason(self, kind: ErrorKind, done: CallDone) -> str:
        """With the exchange's code at the end (``(code -2019)``): the strategy tells a
        reduce-only order with nothing left to reduce (-2022) from a failure by it."""
        if done.code is None:
            return super()._rejection_reason(kind, done)
        return f"{kind.value}: {done.reason + ': ' if done.reason else ''}{done.error} (code {done.code})"

    # --------------------------------------------------- conditional orders

    def _id_unknown(self, tracked: Tracked) -> bool:
        # A stop that may have triggered: its child's trades carry an id not known yet.
        return tracked.exchange_order_id is None or (tracked.order_type == "stop_limit" and tracked.child_order_id is None)

    def _listed_elsewhere(self, tracked: Tracked) -> bool:
        return tracked.order_type == "stop_limit" and tracked.child_order_id is None

    def _adopt_child(self, tracked: Tracked, child_order_id: str) -> None:
        tracked.child_order_id = child_order_id
        self.by_exchange_id[child_order_id] = tracked.client_order_id

    def _open_orders(self, symbol: str, orders: list[ExchangeOrder], now: float) -> list[Any]:
        """The regular open orders: a triggered stop's child (it carries the stop's client
        id) is adopted, and listed under the stop's exchange id of record."""
        triggered: list[Any] = []
        for listed in orders:
            tracked = self.tracked.get(listed.client_order_id)
            if (tracked is not None and tracked.order_type == "stop_limit" and tracked.child_order_id is None
                    and tracked.exchange_order_id is not None):
                self._adopt_child(tracked, listed.exchange_order_id)
            if (tracked is not None and tracked.order_type == "stop_limit" and not tracked.done
                    and tracked.child_order_id == listed.exchange_order_id):
                # Triggered, its child resting: the strategy judges a gap now (a child
                # gapped through rests unfilled while the position stays open).
                triggered.append(Send(strategy_address(tracked.strategy), StopTriggered(
                    tracked.client_order_id, now, self.last_prices.get(symbol))))
        return super()._open_orders(symbol, [self._as_recorded(o) for o in orders], now) + triggered

    def _open_conditional(self, symbol: str, orders: list[ExchangeConditionalOrder], now: float) -> list[Any]:
        """The conditional orders waiting for their trigger: an UNKNOWN stop listed is
        resolved; a stop of ours no longer listed is looked up (triggered, or ended)."""
        listed = {record_id(o) for o in orders}
        self._unlisted_stops = {
            t.client_order_id for t in self.tracked.values()
            if t.symbol == symbol and t.order_type == "stop_limit" and not t.done and t.exchange_order_id
            and t.exchange_order_id not in listed
        } | {cid for cid in self._unlisted_stops if self.tracked.get(cid) is not None and self.tracked[cid].symbol != symbol}
        out: list[Any] = []
        for order in orders:
            tracked = self.tracked.get(order.client_order_id)
            if tracked is not None and tracked.unknown and not tracked.done:
                out += self._looked_up(tracked.client_order_id, order, now)
        for tracked in self.tracked.values():
            if (tracked.symbol == symbol and tracked.order_type == "stop_limit" and not tracked.done
                    and tracked.child_order_id is None and tracked.exchange_order_id
                    and tracked.exchange_order_id not in listed and self._may_read("order", tracked.client_order_id, now)):
                out += self._fetch_order(tracked, now)
        return out

    def _order_status(self, cid: str, order: ExchangeOrder, now: float) -> list[Any]:
        """A conditional order that triggered: its child is adopted and looked up (its
        status says filled or ended); one that ended before triggering is closed.

        A reduce-only order the exchange expired because the position closed is reported
        only once the trades that closed it are (a stop's child is adopted a poll or two
        after it filled): the strategy hears the fill first, as the exchange made them, and
        never places protection again for a position that is gone."""
        tracked = self.tracked[cid]
        if isinstance(order, ExchangeConditionalOrder) and (order.child_order_id or tracked.child_order_id):
            # Triggered: its own status (ccxt: ``closed``) says nothing of its child's fills,
            # and must not end a cancel still asked of it (the base reads ``closed`` as a
            # fill that won the race). The child's lookup says, however late the answer
            # about the stop comes (the listing may have adopted the child already).
            if tracked.child_order_id is None:
                self._adopt_child(tracked, order.child_order_id)
            return self._fetch_order(tracked, now) if self._may_read("order", cid, now) else []
        if order.status == "expired" and tracked.reduce_only and not tracked.done and self._closing_fills_pending(tracked, now):
            self._deferred_ends.setdefault(cid, (order, now))
            return []
        return super()._order_status(cid, order, now)

    def _closing_fills_pending(self, tracked: Tracked, since: float) -> bool:
        """Another reduce-only order of ours on the symbol may have closed the position with
        fills not reported yet: it is not done, and no listing asked after ``since`` shows it
        still open (a stop still waiting for its trigger, or an order still resting)."""
        for t in self.tracked.values():
            if t is tracked or t.symbol != tracked.symbol or t.done or not t.reduce_only:
                continue
            if t.order_type == "stop_limit" and t.child_order_id is None:
                if t.client_order_id in self._unlisted_stops or self._listed_at.get(("algos", t.symbol), -1.0) <= since:
                    return True
            elif (self._listed_at.get(("orders", t.symbol), -1.0) <= since
                  or t.client_order_id not in self._listed_open.get(t.symbol, frozenset())):
                return True
        return False

    def _release_deferred(self, now: float) -> list[Any]:
        """Deferred ends whose fills are reported, or held too long (the trades may never
        come: they are the reconciler's then)."""
        out: list[Any] = []
        patience = max(5.0, 10 * self.settings.poll_seconds)
        for cid, (order, since) in list(self._deferred_ends.items()):
            tracked = self.tracked.get(cid)
            if tracked is None or tracked.done:
                del self._deferred_ends[cid]
            elif not self._closing_fills_pending(tracked, since) or now - since > patience:
                del self._deferred_ends[cid]
                out += super()._order_status(cid, order, now)
        return out
    def _looked_up(self, cid: str, order: ExchangeOrder, now: float) -> list[Any]:
        out = super()._looked_up(cid, order, now)
        if isinstance(order, ExchangeConditionalOrder) and order.child_order_id:
            self._adopt_child(self.tracked[cid], order.child_order_id)
        return out

    def _as_recorded(self, order: ExchangeOrder) -> ExchangeOrder:
        """A child order as its order of record knows it (the conditional order's id)."""
        cid = self.by_exchange_id.get(order.exchange_order_id)
        tracked = self.tracked.get(cid) if cid else None
        if tracked is not None and tracked.child_order_id == order.exchange_order_id and tracked.exchange_order_id:
            return attrs.evolve(order, exchange_order_id=tracked.exchange_order_id)
        return order

    def _trade_as_recorded(self, trade: ExchangeTrade) -> ExchangeTrade:
        cid = self.by_exchange_id.get(trade.exchange_order_id)
        tracked = self.tracked.get(cid) if cid else None
        if tracked is not None and tracked.child_order_id == trade.exchange_order_id and tracked.exchange_order_id:
            return attrs.evolve(trade, exchange_order_id=tracked.exchange_order_id, client_order_id=tracked.client_order_id)
        return trade

    # ----------------------------------------------------------------- time

    def on_tick(self, now: float) -> list[Any]:
        polling = self.markets is not None and now >= self.next_poll and not (self.isolated or self.fatal)
        out = super().on_tick(now) + self._release_deferred(now)
        for symbol, (step, due) in list(self._settings_due.items()):
            if now >= due and not self._in_flight(step, symbol) and not self._in_flight("clock"):
                del self._settings_due[symbol]
                out += self._setting(symbol, step, now)
        if not polling:
            return out
        if self.authenticated and self._may_read("margin", "", now):
            out += self._read_margin(now)
        for symbol in sorted({t.symbol for t in self.tracked.values() if t.order_type == "stop_limit" and not t.done}):
            if self._may_read("open_algos", symbol, now):
                out += self._call(now, "fetch_open_conditional_orders", (symbol,), what="open_algos", key=symbol)
        return out

    # --------------------------------------------------------------- outcomes

    def _on_result(self, pending: _Pending, result: Any, now: float) -> list[Any]:
        what, key = pending.what, pending.key
        if what in SETTING_STEPS:
            return self._setting_done(what, key, result, now)
        if what == "margin":
            self.balances = self._margin_read(result, pending.issued_at, now)
            return self._release_held(now)
        if what == "balance" or (what == "snapshot_balance" and key in self._snapshot_waiting):
            result = self._margin_read(result, pending.issued_at, now)
            return super()._on_result(pending, result, now) + self._release_held(now)
        if what == "open_algos":
            self._listed_at[("algos", key)] = pending.issued_at
            return self._open_conditional(key, result, now) + self._release_deferred(now)
        if what == "open_orders":
            self._listed_at[("orders", key)] = pending.issued_at
            self._listed_open[key] = frozenset(o.client_order_id for o in result)
            return super()._on_result(pending, result, now) + self._release_deferred(now)
        if what in ("trades", "order"):
            return super()._on_result(pending, result, now) + self._release_deferred(now)
        if what == "create" and key in self._committed:
            self._committed[key] = (self._committed[key][0], now)
        if what.startswith("snapshot_") and key not in self._snapshot_waiting:
            return []
        if what == "snapshot_algos":
            self._snapshot_algos += result
            return self._snapshot_done(now, key)
        if what == "snapshot_forced":
            self._snapshot_forced |= result
            return self._snapshot_done(now, key)
        if what == "snapshot_positions":
            self._snapshot_positions = tuple(ExchangePosition(p.symbol, p.size, p.entry_price, p.leverage) for p in result)
            return self._snapshot_done(now, key)
        if what == "snapshot_leverage":
            self._snapshot_leverage = dict(result)
            self.leverage_on_exchange.update(result)
            return self._snapshot_done(now, key)
        if what == "snapshot_income":
            self._snapshot_income = tuple(ExchangeIncome(i.income_id, i.symbol, i.kind, i.amount, i.asset, i.at) for i in result)
            return self._snapshot_done(now, key)
        return super()._on_result(pending, result, now)

    def _on_error(self, pending: _Pending, kind: ErrorKind, done: CallDone, now: float) -> list[Any]:
        out = super()._on_error(pending, kind, done, now)
        what, key = pending.what, pending.key
        if what == "create":
            self._committed.pop(key, None)
        if what == "margin":
            # The opens waiting for it cannot be judged: refused, never sent blind.
            held, self._held = self._held, []
            for order in held:
                rejected = OrderRejected(order.client_order_id, f"the exchange's available margin could not be read "
                                         f"({kind.value}: {done.error}); not sent", now)
                out += [Send(strategy_address(order.strategy), rejected), Send(LEDGER, rejected)]
        if what in SETTING_STEPS:
            if kind in (ErrorKind.REJECTED, ErrorKind.FATAL):
                out += self._settled(key, f"{what.replace('_', ' ')} refused by the exchange: {done.error}")
            else:  # asked again after its back-off (a clock error: once the clock is measured)
                self._settings_due[key] = (what, self._read_due.get((what, key), now))
        return out

    # -------------------------------------------------------------- snapshot

    def _snapshot_start(self, now: float) -> list[Any]:
        self._snapshot_algos, self._snapshot_positions, self._snapshot_income = [], (), ()
        self._snapshot_leverage = {}
        self._snapshot_forced = frozenset()
        out = super()._snapshot_start(now)
        if not self.authenticated or not self._snapshot_waiting:
            return out
        round_ = self._snapshot_round
        symbols = sorted(set(self.subscribers) | {t.symbol for t in self.tracked.values()} | set(self.market_settings))
        for symbol in symbols:
            self._snapshot_waiting.add(f"{round_}|algos:{symbol}")
            out += self._call(now, "fetch_open_conditional_orders", (symbol,), what="snapshot_algos", key=f"{round_}|algos:{symbol}")
            self._snapshot_waiting.add(f"{round_}|forced:{symbol}")
            out += self._call(now, "fetch_forced_order_ids", (symbol,), what="snapshot_forced", key=f"{round_}|forced:{symbol}")
        self._snapshot_waiting |= {f"{round_}|positions", f"{round_}|income"}
        out += self._call(now, "fetch_positions", (symbols,), what="snapshot_positions", key=f"{round_}|positions")
        if self.market_settings:
            self._snapshot_waiting.add(f"{round_}|leverage")
            out += self._call(now, "fetch_leverages", (sorted(self.market_settings),), what="snapshot_leverage",
                              key=f"{round_}|leverage")
        settlement = sorted({self._settlement(s) for s in symbols}) or ["USDT"]
        out += self._call(now, "fetch_income", (settlement[0], None, 1000), what="snapshot_income", key=f"{round_}|income")
        return out

    def _snapshot(self, now: float, request_id: int) -> ExchangeSnapshot:
        """The real account and, for the shadow strategies, the simulated one: the
        reconciler compares their sum with what the strategies hold (one strategy per symbol
        of the venue, so each position is one account's)."""
        listed = tuple(self._as_recorded(o) for o in self._snapshot_open)
        listed += tuple(attrs.evolve(o, exchange_order_id=record_id(o)) for o in self._snapshot_algos)
        trades = tuple(self._trade_as_recorded(t) for t in self._snapshot_trades)
        positions, income, forced = self._snapshot_positions, self._snapshot_income, self._snapshot_forced
        readings = {s: lev for s, (lev, _) in self._snapshot_leverage.items()}
        positions = tuple(attrs.evolve(p, leverage=readings[p.symbol]) if p.leverage is None and p.symbol in readings else p
                          for p in positions)
        settlement = sorted({self._settlement(s) for s in self.market_settings}) or ["USDT"]
        account = self.margin.get(settlement[0])
        wallet = account.wallet if account is not None else ZERO
        balances = dict(self.balances)
        if self.shadow is not None:
            ex, prefix = self.shadow.exchange, self.shadow.id_prefix
            listed += self.shadow.open_orders()
            trades += self.shadow.trades()
            positions += tuple(ExchangePosition(s, p.size, p.entry_price, Decimal(p.leverage))
                               for s, p in sorted(ex.positions.items()) if p.size)
            income += tuple(ExchangeIncome(prefix + str(i.tran_id), i.symbol, i.income_type, i.amount, i.asset, i.at)
                            for i in ex.income[-1000:])
            forced |= frozenset(prefix + o.exchange_order_id for o in ex.liquidation_orders)
            wallet += ex.wallet
            balances[ex.margin_asset] = balances.get(ex.margin_asset, ZERO) + ex.wallet
        snapshot = PositionsSnapshot(venue=self.venue, positions=positions, open_orders=listed, trades=trades,
                                     income=income, wallet=wallet, at=now, forced_order_ids=forced,
                                     leverage=readings, leverage_set=dict(self.leverage))
        return ExchangeSnapshot(self.venue, listed, balances, now, request_id, trades, positions=snapshot)
