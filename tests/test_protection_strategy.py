"""Protection inside the perpetual strategy core, with plain calls: the Lab's loop over the
real cores (strategy, position book, simulated connection, USD-M engine), one candle at a
time, with the exchange's answer to chosen orders replaced by the refusal Binance gives
(review 13: a resized stop refused -2021, reduce-only closes refused -2022)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Callable

from actors.messages import LEDGER, OrderRejected, Send, SubmitOrder, Tick, connection_address, strategy_address
from actors.orders import Order
from actors.strategy.perpetual_core import PerpetualStrategyCore
from actors.strategy.rules import RuleOutcome
from exchange.candles import load_candles
from exchange.perpetuals import CODE_REDUCE_ONLY_REJECTED, CODE_WOULD_IMMEDIATELY_TRIGGER
from supervisors.app import build_perpetual_exchange
from supervisors.config import parse_config
from supervisors.lab_perpetual import PerpetualLab

SYMBOL = "BTC/USD:USD"
REFUSALS = {
    CODE_WOULD_IMMEDIATELY_TRIGGER: "Order would immediately trigger.",
    CODE_REDUCE_ONLY_REJECTED: "ReduceOnly Order is rejected.",
    -4045: "Reach max stop order limit.",  # the symbol's conditional-order slots are full
}


def write(tmp_path: Path, rows: list[tuple[float, float, float, float, float]]) -> Path:
    """Hourly candles (open, high, low, close, volume) from 2017-07-01."""
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"2017-07-{1 + n // 24:02d}T{n % 24:02d}:00:00Z,{o},{h},{low},{c},{v}" for n, (o, h, low, c, v) in enumerate(rows)]
    data = tmp_path / "candles.csv"
    data.write_text("\n".join(lines) + "\n")
    return data


class Stepper:
    """The Lab's loop, a candle at a time; ``refuse(order)`` may answer a submitted order
    with an exchange error code instead of the engine."""

    def __init__(self, tmp_path: Path, rows, refuse: Callable[[Order], int | None] = lambda o: None,
                 size: float = 4, volume_share: float = 0.1) -> None:
        data = write(tmp_path, rows)
        raw = {
            "store": str(tmp_path / "x.sqlite"), "status": {"port": 0},
            "venues": [{
                "name": "perp", "kind": "simulated", "market_type": "swap", "balances": {"USD": 10 ** 7},
                "volume_share": volume_share,
                "markets": [{"symbol": SYMBOL, "tick_size": 0.1, "lot_size": 0.001, "min_amount": 0.001,
                             "min_notional": 1, "maker_fee": 0.0002, "taker_fee": 0.0005, "leverage": 5}],
                "replay": {SYMBOL: {"data": str(data)}},
            }],
            "strategies": [{
                "name": "s", "venue": "perp", "symbol": SYMBOL, "allocation": {"quote": 10 ** 6}, "sizing": {"base": size},
                "buy": {"kind": "sma_cross", "fast": 2, "slow": 4, "direction": "up"},
                "sell": {"kind": "sma_cross", "fast": 2, "slow": 4, "direction": "down"},
                "on_buy": "long", "on_sell": "short", "limit_offset_bps": -10, "ttl_seconds": 36000,
                "protection": {"take_profit_pct": 3, "stop_loss_pct": 1.5, "stop_limit_slippage_pct": 0.5,
                               "gap_slippage_pct": 1},
            }],
        }
        config = parse_config(raw, lab=True)
        venue = config.venues[0]
        self.lab = PerpetualLab(config.strategies[0], build_perpetual_exchange(venue), load_candles(data))
        self.refuse = refuse
        self.sent: list[Order] = []
        connection = connection_address("perp")
        handle = self.lab._handlers[connection]
        to = strategy_address("s")

        def intercepted(message, now):
            if isinstance(message, SubmitOrder):
                self.sent.append(message.order)
                code = self.refuse(message.order)
                if code is not None:
                    rejected = OrderRejected(message.order.client_order_id, f"{REFUSALS[code]} (code {code})", now)
                    return [Send(to, rejected), Send(LEDGER, rejected)]
            return handle(message, now)

        self.lab._handlers[connection] = intercepted
        first = self.lab.candles[0].ts
        self.lab.journal += self.lab.book.allocate({"s": D(10 ** 6)}, first)
        self.lab._deliver(self.lab.strategy.start(first), first)
        self.index = 0

    def step(self, candles: int = 1) -> None:
        for _ in range(candles):
            candle = self.lab.candles[self.index]
            self.index += 1
            self.lab._deliver(self.lab.connection.handle(Tick(float(self.index)), float(candle.ts)), float(candle.ts))

    def restart(self) -> None:
        """The strategy actor starts again (a process restart, or a config reload that
        restarts it) while the ledger and the exchange go on: a new core restores the
        orders of record not yet final, as the shell does from the store."""
        old = self.lab.strategy
        self.lab.strategy = PerpetualStrategyCore(old.settings, dict(old.allocated))
        self.lab._handlers[strategy_address("s")] = self.lab.strategy.handle
        now = float(self.lab.candles[self.index - 1].ts)
        records = [o for o in self.lab.orders.values() if not o.state.is_final]
        self.lab._deliver(self.lab.strategy.restore(records, now) + self.lab.strategy.start(now), now)

    @property
    def events(self):
        return self.lab.events

    def kinds(self, *kinds: str):
        return [e for e in self.lab.events if e.kind in kinds]

    def placed(self, leg: str):
        return [e for e in self.kinds("order_placed") if e.payload.get("leg") == leg]


FLAT = [(100, 100.5, 99.5, 100, 1)] * 6
#: A short decided on the 7th candle, its sell limit filling 0.1 a candle while the price
#: stays below the stop's trigger (98 x 1.015).
SHORT_FILLING = FLAT + [(100, 100, 98, 98, 1)] + [(98, 98.5, 97.5, 98, 1)] * 8


def test_a_resized_stop_refused_as_would_immediately_trigger_keeps_the_old_stop_and_escalates_at_once(tmp_path):
    """Review 13, finding 1: the old stop was cancelled although its replacement was
    refused (-2021), and the open leg kept growing the position with no stop resting."""
    stops: list[str] = []
    resting_at_refusal: list[set[str]] = []

    def refuse(order: Order):
        if order.order_type == "stop_limit":
            stops.append(order.client_order_id)
            if len(stops) == 2:  # the resize after the second partial fill
                resting_at_refusal.append({a.client_algo_id for a in stepper.lab.exchange.open_conditional_orders()})
                return CODE_WOULD_IMMEDIATELY_TRIGGER
        return None

    stepper = Stepper(tmp_path, SHORT_FILLING, refuse)
    stepper.step(len(SHORT_FILLING))
    first_stop, refused = stops[:2]
    # The old stop still rested when the exchange refused its replacement ...
    assert resting_at_refusal == [{first_stop}]
    canceled = {e.client_order_id: e.reason for e in stepper.kinds("order_canceled")}
    assert "replaced by" not in canceled[first_stop]  # ... and was never cancelled for it
    # The refusal counts as the stop having fired: one escalation, at once.
    [escalating] = stepper.kinds("protection_escalating")
    assert refused in [e.client_order_id for e in stepper.kinds("order_rejected")]
    [escalation] = stepper.placed("escalation")
    assert escalation.payload["side"] == "buy" and escalation.payload["reduce_only"] is True
    assert D(escalation.payload["price"]) == D("100.5")  # trigger 99.5 + the configured 1 %
    # Nothing adds to the position meanwhile: the open leg was cancelled, and it stopped filling.
    [open_leg] = stepper.placed("open")
    assert "escalation" in canceled[open_leg.client_order_id]
    after = stepper.events.index(escalating)
    assert not [e for e in stepper.events[after:] if e.kind == "fill" and e.client_order_id == open_leg.client_order_id]
    assert stepper.lab.exchange.position(SYMBOL).size == 0  # the escalation closed it
    assert not any(e.kind == "order_placed" and e.payload.get("leg") == "open" for e in stepper.events[after:])


def test_one_escalation_per_position_placed_only_once_no_other_close_of_it_works(tmp_path):
    """Review 13, finding 2: several full-size escalations (and a flip's close) worked at
    once. Here the engine itself refuses a stop (-2021) while a flip's close works."""
    rows = FLAT + [(100, 100, 98, 98, 1), (98, 98, 96, 96, 1), (96, 97, 95, 97, 1), (97, 100, 97, 100, 2)] + [
        (p, p + 1, p - 0.5, p + 1, 2) for p in (100, 101, 102, 103, 104)] + [(105, 105.5, 104.5, 105, 2)] * 5
    working_at_escalation: list[list[str]] = []

    def watch(order: Order):
        if order.rule.startswith("protection:escalation"):
            ex = stepper.lab.exchange
            working_at_escalation.append(
                [o.client_order_id for o in ex.open_orders() if o.reduce_only]
                + [a.client_algo_id for a in ex.open_conditional_orders() if a.reduce_only])
        return None

    stepper = Stepper(tmp_path, rows, watch)
    stepper.step(len(rows))
    assert [e.client_order_id for e in stepper.kinds("order_rejected")]  # the engine's -2021
    assert working_at_escalation[0] == []  # no take-profit, stop or flip close of it working then
    assert len(working_at_escalation) == 1 == len(stepper.placed("escalation"))
    assert len(stepper.kinds("protection_escalating")) == 1
    [close] = [e for e in stepper.placed("close")]
    assert "escalation" in {e.client_order_id: e.reason for e in stepper.kinds("order_canceled")}[close.client_order_id]


def test_a_close_refused_minus_2022_is_not_sent_again_until_the_position_is_read_again(tmp_path):
    """Review 13, finding 3: a flip's close refused -2022 was re-sent every few
    milliseconds. The exchange refuses the first few closes (its position is gone, as far
    as it knows); each refusal holds closes until fills come or the wait, doubled each time,
    runs out: at most one close per candle here (candles are an hour of ``now``)."""
    rows = FLAT + [(100, 100, 98, 98, 1), (98, 98.5, 97.5, 98, 1), (98, 98.5, 97.5, 98, 1)] + [
        (98, 99, 97.5, 99, 1), (99, 99.2, 98.6, 99.2, 1), (99.2, 99.4, 99, 99.4, 1), (99.4, 99.6, 99.2, 99.6, 1),
        (99.6, 99.8, 99.4, 99.8, 1), (99.8, 100, 99.6, 99.9, 1)] + [(99.9, 100, 99.8, 99.9, 1)] * 6
    refused: list[tuple[int, str]] = []

    def refuse(order: Order):
        if order.reduce_only and not order.rule.startswith("protection:") and len(refused) < 3:
            refused.append((stepper.index, order.client_order_id))
            return CODE_REDUCE_ONLY_REJECTED
        return None

    stepper = Stepper(tmp_path, rows, refuse, size=0.2)
    for _ in rows:
        stepper.step()
    assert len(refused) == 3
    candles = [index for index, _ in refused]
    assert len(set(candles)) == len(candles), refused  # never twice in one candle
    held = stepper.kinds("close_held")
    assert len(held) == 3 and "-2022" in held[0].reason and "stale" in held[0].reason
    assert [e.payload["wait_seconds"] for e in held] == ["1", "2", "4"]


#: A long decided on the 7th candle, its buy limit filling 0.1 a candle (the price stays
#: far from the protection's distances); then a cross down on the 12th
#: (short), the price falling gently from there (no cross up again, no stop reached).
LONG_THEN_SHORT = FLAT + [(100, 100.6, 100, 100.6, 1)] + [(100.6, 100.7, 100.5, 100.6, 1)] * 4 + [
    (100.6, 100.6, 100.2, 100.2, 1)] + [(p + 0.02, p + 0.05, p - 0.05, p, 1) for p in (
        round(100.2 - 0.02 * n, 2) for n in range(1, 21))]


def test_after_a_restart_a_new_decision_cancels_the_restored_open_leg_before_its_close(tmp_path):
    """Review 13c, F3: the open leg placed before a restart was not part of the new plan,
    so a flip's close went out while the old buy kept resting and filling (the position
    grew the wrong way). Restored, it is cancelled first, as without a restart, and the
    close is sized from what is held once it has ended."""
    working_buys_at_close: list[list[str]] = []
    held_at_close: list[D] = []

    def watch(order: Order):
        if order.reduce_only and not order.rule.startswith("protection:"):
            ex = stepper.lab.exchange
            working_buys_at_close.append([o.client_order_id for o in ex.open_orders() if not o.reduce_only])
            held_at_close.append(ex.position(SYMBOL).size)
        return None

    stepper = Stepper(tmp_path, LONG_THEN_SHORT, watch)
    stepper.step(7)
    [open_leg] = stepper.placed("open")
    buy = open_leg.client_order_id
    assert open_leg.payload["side"] == "buy"
    assert buy in {o.client_order_id for o in stepper.lab.exchange.open_orders()}  # still working
    # The strategy restarts (its triggers warm up again on the next four candles) while
    # the buy rests and fills.
    stepper.restart()
    stepper.step(len(LONG_THEN_SHORT) - 7)
    canceled = {e.client_order_id: e.reason for e in stepper.kinds("order_canceled")}
    assert "superseded by a decision for short 4" in canceled[buy]
    [close] = stepper.placed("close")
    assert working_buys_at_close[0] == []  # the old buy had ended when the close went out
    assert D(close.payload["amount"]) == held_at_close[0]  # sized for what was then held
    placed_at = stepper.events.index(close)
    assert not [e for e in stepper.events[placed_at:] if e.kind == "fill" and e.client_order_id == buy]
    assert stepper.lab.exchange.position(SYMBOL).size < 0  # the flip's open followed


def test_while_the_exchange_refuses_the_stop_nothing_adds_to_the_position_and_it_is_tried_again_soon(tmp_path):
    """Review 13c, F5: with every stop-loss refused, the open leg kept filling (and new
    opens went out) with no stop resting, no ``unprotected`` event, and the stop was tried
    again only at the next candle. Now the working open is cancelled, opens are blocked
    until a stop rests, and the stop is placed again after 1 s, 2 s, 4 s ... (the
    strategy shell's timer sends the Tick; here it is delivered by hand)."""
    refusals: list[tuple[float, str]] = []

    def refuse(order: Order):
        if order.order_type == "stop_limit" and not stop_accepted:
            refusals.append((stepper.lab.strategy.market_time, order.client_order_id))
            return -4045  # "Reach max stop order limit." (not one of the moot codes)
        return None

    stop_accepted = False
    stepper = Stepper(tmp_path, SHORT_FILLING, refuse)
    stepper.step(7)  # the short's sell limit fills 0.1 at once, protection is placed: the stop refused
    strategy = stepper.lab.strategy
    [open_leg] = stepper.placed("open")
    [unprotected] = stepper.kinds("unprotected")
    assert "no stop-loss resting" in unprotected.reason and "-4045" in unprotected.reason
    canceled = {e.client_order_id: e.reason for e in stepper.kinds("order_canceled")}
    assert "no stop-loss resting" in canceled[open_leg.client_order_id]  # it stopped adding
    held = stepper.lab.exchange.position(SYMBOL).size
    assert held < 0
    [refused] = stepper.kinds("protection_refused")
    assert refused.payload["wait_seconds"] == "1"
    # A new decision to add to the short is blocked while no stop rests.
    now = float(stepper.lab.candles[stepper.index - 1].ts)
    before = len(stepper.events)
    strategy.planner.decision = None
    stepper.lab._deliver(strategy._decide_position("short", RuleOutcome("again", True, {}),
                                                  stepper.lab.candles[stepper.index - 1], now)[0], now)
    [blocked] = [e for e in stepper.events[before:] if e.kind == "blocked"]
    assert "no stop-loss resting" in blocked.reason and blocked.payload["unprotected"] is True
    # Tried again after 1 s, then 2 s, then 4 s, not at the next candle (an hour later).
    due = strategy.wake_at()
    first = float(stepper.lab.candles[stepper.index - 1].ts)
    waits = []
    for _ in range(3):
        assert due is not None
        waits.append(due - first)
        stepper.lab._deliver(strategy.handle(Tick(due), due), due)
        first, due = due, strategy.wake_at()
    assert waits == [1.0, 2.0, 4.0]
    assert len(refusals) == 4 and len(stepper.kinds("unprotected")) == 1  # said once
    # Refused three times in a row with nothing accepted between (opens are held): the
    # breaker opens, as for any failing exchange (closes of new decisions wait for it too).
    assert strategy.breaker.state.value == "open"
    stepper.step(3)
    assert stepper.lab.exchange.position(SYMBOL).size == held  # nothing added
    assert not [e for e in stepper.placed("open") if e is not open_leg]
    # Once a stop rests, opens go again.
    stop_accepted = True
    stepper.lab._deliver(strategy.handle(Tick(1e12), 1e12), 1e12)
    assert strategy._stop_refused is None and strategy.protection.protected_amounts()["stop_loss"] == -held
