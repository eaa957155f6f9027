"""Wiring: the whole supervision tree of one limitline process, built from a Config.

```
root                      rest_for_one
├── writer
├── ledger
├── venues                one_for_one
│   └── venue:<name>      rest_for_one
│       ├── connection:<name>
│       └── strategy:<each strategy on that venue>
├── reconciler
├── status                HTTP
└── notifier              webhooks
```

Under ``rest_for_one`` order matters: a writer or ledger crash restarts everything after it
(their state feeds everyone); a reconciler crash restarts only the status server.
Mailboxes are made here, once, so that every address stays valid across restarts.

Simulated exchanges are made here too, once per process, and continue from the store: the
account, its open orders, its trades and id sequences, and where the replay was (see
``actors.connection.simulated_orders`` for how they are kept exact). They outlive any
restart of the connection actor, as a real exchange would.
"""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import trio

from actors.connection.call_stats import CallStats
from actors.connection.live_core import LiveSettings
from actors.connection.live_perpetual_core import (
    LazyPerpetualExchange,
    LivePerpetualConnectionCore,
    PerpetualMarketSetting,
)
from actors.connection.live_shell import live_connection_actor, scrub
from actors.connection.perpetual_core import PerpetualConnectionCore
from actors.connection.shadow_core import ShadowConnectionCore
from actors.connection.shadow_shell import shadow_connection_actor
from actors.connection.simulated_orders import LazySimulatedExchange
from actors.ledger.shell import ledger_actor
from actors.mailbox import Mailbox
from actors.messages import (
    LEDGER,
    RECONCILER,
    WRITER,
    Allocate,
    RecordEvent,
    VenueFacts,
    connection_address,
    strategy_address,
)
from actors.notifier.core import NotifierCore, RetryPolicy, Route
from actors.notifier.shell import notifier_actor
from actors.reconciler.core import Market
from actors.reconciler.shell import reconciler_actor
from actors.runtime import ActorEnv
from actors.strategy.preflight import parameter_problems, preflight
from actors.strategy.settings import StrategySettings
from actors.strategy.shell import strategy_actor
from actors.writer.core import is_durable
from actors.writer.shell import writer_actor
from exchange.candles import Candle, load_candles_cached
from exchange.ccxt_adapter import classify, make_client, perform, timeframe_seconds
from exchange.markets import MarketRules
from exchange.matching import ExchangeState, SimulatedExchange
from exchange.perpetuals import PerpetualExchange, perpetual_rules
from exchange.replay import ReplayFeed
from exchange.shadow import ShadowVenue
from store.access import SqliteReader, SqliteWriter, stored_perpetual, stored_simulated
from store.db import check_owned, check_store, open_store
from store.lock import StoreLock
from supervisors.config import (
    WEBHOOK_EVENTS,
    CcxtVenueConfig,
    Config,
    ConfigError,
    config_warnings,
    SimulatedVenueConfig,
    VenueConfig,
    allocated_on,
    data_path,
    load_config,
    webhook_url,
)
from supervisors.reload import ReloadPlan, changed_fields, plan_reload, protection_removal_problem
from supervisors.secrets import CredentialsError, guard_logs, resolve, scrubbed
from supervisors.status import StatusListener, status_actor
from supervisors.web.access import exposure_warning, is_loopback
from supervisors.web.server import WebContext
from supervisors.web.views import StrategyFacts
from supervisors.tree import ChildSpec, RestartStrategy, Supervisor

log = logging.getLogger("limitline")

WRITER_MAILBOX = 8192
NOTIFIER = "notifier"
#: First and longest delay before restarting a venue whose subtree gave up.
VENUE_BACKOFF = (1.0, 60.0)
ACTOR_MAILBOX = 1024


class App:
    def __init__(
        self,
        config: Config,
        echo: Callable[[RecordEvent], None] | None = None,
        live: bool = False,
        config_path: str | Path | None = None,
    ) -> None:
        """``live``: the process was started with ``--live``; live strategies are armed.
        ``config_path``: where ``config`` was read (None: the embedded default), read again
        by :meth:`reload`."""
        self.config = config
        self.live = live
        self.config_path = config_path
        #: Why the last edit of the config was refused (each problem with its path); empty
        #: once an edit is applied. For ``/status``.
        self.config_problems: list[str] = []
        #: The last reload: ``{"at", "trigger", "outcome": applied|rejected|unchanged,
        #: "summary", "problems"}``, or None before the first.
        self.config_reload: dict[str, Any] | None = None
        self._reloading = trio.Lock()
        self._echo = echo
        #: Events the writer has not committed yet that someone waits for (see :meth:`_written`).
        self._awaited: dict[int, trio.Event] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self.directory: dict[str, trio.MemorySendChannel[Any]] = {}
        self.store_path = Path(config.store)
        self.store = SqliteReader(self.store_path)
        self.env = ActorEnv(self.directory, self.store)
        self.dropped_events = 0
        #: Things the operator should know once the run starts (the CLI prints them).
        self.notices: list[str] = []
        self.shadow_books: dict[str, LazySimulatedExchange | LazyPerpetualExchange] = {}
        #: Each ccxt venue's exchange-call latency and failures (``/metrics``), kept across
        #: restarts of its connection.
        self.call_stats: dict[str, CallStats] = {}
        #: Built from the config here; their stored state is read in :meth:`run`, once the
        #: store is this process's and known to be limitline's.
        self.shadow_venues = {
            venue.name: build_shadow_venue(venue) for venue in config.venues if isinstance(venue, SimulatedVenueConfig)
        }
        supervision = config.supervision
        limits = dict(max_restarts=supervision.max_restarts, period=supervision.period_seconds)

        writer_box = self._mailbox(WRITER, WRITER_MAILBOX, urgent=is_durable)
        writer = ChildSpec(
            WRITER,
            functools.partial(
                writer_actor, open_sink=functools.partial(SqliteWriter, self.store_path), directory=self.directory,
                bell=writer_box.bell, echo=self._committed,
            ),
            mailbox=writer_box,
            shutdown_timeout=30,
        )
        # A strategy's allocation is journaled once its own parameters pass: an allocation
        # journaled with a wrong or missing base_cost would stay in the books for good.
        spot = [s for s in config.strategies if not s.perpetual]
        # These three are updated in place when a strategy is added while running, so that
        # every later incarnation of the ledger and the reconciler knows it.
        self.allocations = {s.name: s.allocation for s in spot if not parameter_problems(s)}
        self.accounts_of = {s.name: account_of(s) for s in spot}
        self.markets = {s.name: Market(s.venue, *s.symbol.split("/")) for s in spot}
        # Strategies on perpetual (swap) venues: the ledger's position book, collateral in
        # the settlement asset (one for the book: USD-M's USDT, or the bundled data's USD).
        positions = {
            s.name: (s.symbol, s.allocation.quote) for s in config.strategies if s.perpetual and not parameter_problems(s)
        }
        settlement = next((s.symbol.partition(":")[2] for s in config.strategies if s.perpetual), "USDT")
        ledger = ChildSpec(
            LEDGER,
            functools.partial(
                ledger_actor, allocations=self.allocations, env=self.env, accounts_of=self.accounts_of,
                positions=positions, settlement=settlement,
            ),
            mailbox=self._mailbox(LEDGER),
        )
        venue_supervisors = [self._venue(venue, limits) for venue in config.venues]
        self.venue_supervisors = {v.name: sup for v, sup in zip(config.venues, venue_supervisors)}
        # A venue that keeps failing is isolated and retried with back-off: it never counts
        # toward the intensity of "venues", so it can never take the other venues down.
        venues = Supervisor(
            "venues",
            [ChildSpec.for_supervisor(v, restart_backoff=VENUE_BACKOFF) for v in venue_supervisors],
            RestartStrategy.ONE_FOR_ONE,
            **limits,
        )
        self.reconciler = ChildSpec(
            RECONCILER,
            functools.partial(
                reconciler_actor,
                venues=[v.name for v in config.venues],
                markets=self.markets,
                perpetuals={s.name: (s.venue, s.symbol) for s in config.strategies if s.perpetual},
                interval=config.reconciler.interval_seconds,
                snapshot_timeout=config.reconciler.snapshot_timeout_seconds,
                env=self.env,
            ),
            mailbox=self._mailbox(RECONCILER),
        )
        modes = sorted({s.mode for s in config.strategies})
        facts = {"mode": "live" if "live" in modes else "shadow", "armed_live": live, "store": str(self.store_path)}
        self.status_listener = StatusListener(config.status.host, config.status.port)
        warning = exposure_warning(config.status.host)
        if warning is not None:
            self.notices.append(warning)  # printed at start, before anything else
        web = WebContext(
            root=self,
            env=self.env,
            store=self.store,
            facts=facts,
            strategies=[StrategyFacts(s.name, s.venue, s.symbol, s.mode) for s in config.strategies],
            venues=[v.name for v in config.venues],
            call_stats=self.call_stats,
            loopback=is_loopback(config.status.host),
            candles=self.replayed_candles,
        )
        #: What the endpoints (and the console's summary line) read.
        self.web = web
        status = ChildSpec(
            "status", functools.partial(status_actor, context=web, listener=self.status_listener)
        )
        #: Events dropped because the notifier's mailbox was full (never waited for).
        self.notifications_dropped = 0
        self.notifier = self._notifier(config)
        # The status server comes after the reconciler: a crash of the reconciler restarts it
        # (and the notifier) only.
        self.root = Supervisor(
            "root",
            [writer, ledger, ChildSpec.for_supervisor(venues), self.reconciler, status, self.notifier],
            RestartStrategy.REST_FOR_ONE,
            **limits,
        )

    def replayed_candles(self, venue: str, symbol: str, count: int) -> Sequence[Candle]:
        """The last ``count`` candles a simulated venue has replayed of ``symbol`` (oldest
        first; the dashboard's chart); none for other venues, whose candles are not kept."""
        shadow = self.shadow_venues.get(venue)
        feed = shadow.feeds.get(symbol) if shadow is not None else None
        if feed is None:
            return []
        return feed.candles[max(feed.start_index, feed.cursor - count): feed.cursor]

    def snapshot(self) -> dict[str, Any]:
        return self.root.snapshot()

    def _notifier(self, config: Config) -> ChildSpec:
        notifications = config.notifications
        routes = {
            kind: Route(webhook, webhook_url(url))
            for webhook, url in notifications.webhooks.items()
            for kind in WEBHOOK_EVENTS[webhook]
        }
        self.notified_kinds = frozenset(routes)
        policy = RetryPolicy(notifications.max_attempts, notifications.backoff_seconds,
                             notifications.max_backoff_seconds, notifications.queue)
        return ChildSpec(
            NOTIFIER,
            functools.partial(
                notifier_actor,
                make_core=functools.partial(NotifierCore, routes, policy, scrubbed),
                timeout=notifications.timeout_seconds,
                env=self.env,
                dropped_before=lambda: self.notifications_dropped,
            ),
            mailbox=self.mailboxes.get(NOTIFIER) or self._mailbox(NOTIFIER, min(notifications.queue, ACTOR_MAILBOX)),
            shutdown_timeout=1.0,
        )

    def _committed(self, event: RecordEvent) -> None:
        """Every event the writer has committed, in order: the CLI's echo and the webhooks
        see it once it is in the store."""
        if event.kind in self.notified_kinds:
            try:
                self.directory[NOTIFIER].send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.notifications_dropped += 1  # never wait on a webhook
        if self._awaited:
            waiter = self._awaited.pop(id(event), None)
            if waiter is not None:
                waiter.set()
        if self._echo is not None:
            self._echo(event)

    async def _written(self, kind: str, strategy: str, reason: str, payload: dict[str, Any]) -> None:
        """Record an event and wait until the writer has committed it, and so everything
        sent to the writer before it (one writer, one mailbox: in order). A strategy
        restarted with new settings reads its orders from the store: what its last
        incarnation recorded must be there first, or it would act on a stale order."""
        event = RecordEvent(kind=kind, actor="config", at=self.env.clock.now(), strategy=strategy, reason=reason,
                            payload=payload)
        written = self._awaited[id(event)] = trio.Event()
        try:
            await self.directory[WRITER].send(event)
            with trio.move_on_after(30):  # a writer that restarts meanwhile flushed it, or lost it: go on
                await written.wait()
        finally:
            self._awaited.pop(id(event), None)

    def _stored(self, venue: str, strategies: frozenset[str] | None = None) -> tuple[ExchangeState | None, dict[str, int]]:
        """A simulated account's state and replay positions from the store, if any
        (``strategies``: the shadow strategies of a live venue, whose account it is)."""
        state, replay, unkept = stored_simulated(self.store_path, venue, strategies)
        if unkept:
            self.notices.append(
                f"the store {self.store_path} holds orders on {venue} from a limitline that did not keep the "
                f"simulated exchange's state: the simulated account starts again from the config and those "
                f"orders cannot rest on it (run --fresh to start shadow mode over)"
            )
        return state, replay

    def _check_owned(self) -> None:
        """Refuse open orders of strategies the config no longer names (OrphanedOrders)."""
        if not Path(self.store_path).exists() or Path(self.store_path).stat().st_size == 0:
            return
        connection = open_store(self.store_path, readonly=True)
        try:
            check_owned(connection, [s.name for s in self.config.strategies])
        finally:
            connection.close()

    def _restore_simulated(self) -> None:
        """Continue every simulated account (and replay) from the store."""
        for name, shadow in self.shadow_venues.items():
            shadow.restore(*self._stored(name))
            if isinstance(shadow.exchange, PerpetualExchange):
                state = stored_perpetual(self.store_path, name)
                if state is not None:
                    shadow.exchange.restore(state)
        for name, book in self.shadow_books.items():
            if isinstance(book, LazyPerpetualExchange):
                book.restored = stored_perpetual(self.store_path, name)
                continue
            strategies = frozenset(s.name for s in self.config.strategies if s.venue == name and s.mode == "shadow")
            book.restored, _ = self._stored(name, strategies)

    def _mailbox(
        self, address: str, capacity: int = ACTOR_MAILBOX, urgent: Callable[[Any], bool] | None = None
    ) -> Mailbox:
        mailbox = Mailbox(capacity, urgent)
        self.mailboxes[address] = mailbox
        self.directory[address] = mailbox.send_channel
        return mailbox

    def _venue(self, venue: VenueConfig, limits: dict[str, Any]) -> Supervisor:
        address = connection_address(venue.name)
        connection = ChildSpec(address, self._connection_start(venue), mailbox=self._mailbox(address))
        strategies = [self._strategy(s, self.config) for s in self.config.strategies if s.venue == venue.name]
        return Supervisor(f"venue:{venue.name}", [connection, *strategies], RestartStrategy.REST_FOR_ONE, **limits)

    def _strategy(self, settings: StrategySettings, config: Config) -> ChildSpec:
        address = strategy_address(settings.name)
        allocated = allocated_on(config, settings.venue, settings.mode)
        return ChildSpec(
            address,
            functools.partial(strategy_actor, settings=settings, allocated=allocated, env=self.env),
            # The same mailbox for a strategy removed and added again: an address never changes.
            mailbox=self.mailboxes.get(address) or self._mailbox(address),
        )

    def _connection_start(self, venue: VenueConfig) -> Any:
        if isinstance(venue, SimulatedVenueConfig):
            speed = max(replay.speed for replay in venue.replay.values())
            lockstep = any(replay.lockstep for replay in venue.replay.values())
            return functools.partial(
                shadow_connection_actor,
                venue=venue.name,
                shadow=self.shadow_venues[venue.name],
                # In lockstep the candles follow the strategies (CandleDone); a tick is only
                # a fallback there, and need not spin at the replay's speed.
                tick_interval=0.1 if lockstep else min(0.25, 0.5 / speed),
                env=self.env,
                lockstep_with=tuple(s.name for s in self.config.strategies if s.venue == venue.name) if lockstep else None,
                **({"core_class": PerpetualConnectionCore} if venue.market_type == "swap" else {}),
            )
        fatal = None
        credentials = None
        if has_credentials(venue):
            try:
                credentials = resolve(venue)
                guard_logs(credentials.values())
            except CredentialsError as problem:
                fatal = str(problem)
        shadow = frozenset(s.name for s in self.config.strategies if s.venue == venue.name and s.mode == "shadow")
        if shadow and venue.name not in self.shadow_books:
            # Survives connection restarts, like the exchange it stands for, and continues
            # from the store across process restarts.
            self.shadow_books[venue.name] = (
                shadow_perpetuals(venue, self.config) if venue.market_type == "swap"
                else LazySimulatedExchange(allocated_on(self.config, venue.name, "shadow"), persist=True)
            )
        return functools.partial(
            live_connection_actor,
            venue=venue.name,
            make_client=functools.partial(build_client, venue, credentials),
            secrets=credentials.values() if credentials else (),
            settings=live_settings(venue),
            env=self.env,
            fatal=fatal,
            shadow_strategies=shadow,
            shadow_exchange=self.shadow_books.get(venue.name),
            authenticated=credentials is not None,
            call_stats=self.call_stats.setdefault(venue.name, CallStats()),
            **perpetual_core(venue, self.config),
        )

    def emit(self, kind: str, actor: str, reason: str, payload: dict[str, Any]) -> None:
        """Supervisors' decisions go into the event log like everything else."""
        event = RecordEvent(kind=kind, actor=actor, at=self.env.clock.now(), reason=reason, payload=payload)
        try:
            self.directory[WRITER].send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            # Never block a supervisor on the writer; say so instead of losing it silently.
            self.dropped_events += 1
            log.warning("event not recorded (writer unavailable): %s %s %s", kind, actor, reason)

    # ------------------------------------------------------------ config edits

    async def reload(self, trigger: str = "reload") -> dict[str, Any]:
        """Read the config file again and apply the difference to the running tree (the
        rules are in :mod:`supervisors.reload`). A file that does not load, or an edit that
        needs a restart, changes nothing: every problem is logged, recorded as a
        ``config_rejected`` event and kept in :attr:`config_problems`. ``trigger`` says
        what asked (``SIGHUP``, ``file changed``). Returns :attr:`config_reload`."""
        async with self._reloading:
            try:
                new = await trio.to_thread.run_sync(functools.partial(load_config, self.config_path, live=self.live))
                plan = plan_reload(self.config, new)
            except ConfigError as error:
                return self._reload_refused(trigger, error.problems)
            except Exception as error:  # noqa: BLE001 - a bug here must not take the running process down
                log.exception("reading the edited config failed")
                return self._reload_refused(trigger, [f"config: could not be read: {type(error).__name__}: {error}"])
            if isinstance(plan, list):
                return self._reload_refused(trigger, plan)
            if plan.empty:
                return self._reload_done(trigger, "unchanged", plan)
            snapshot = self.snapshot()
            problems = [p for s in plan.removed if (p := self._removal_problem(s.name, snapshot)) is not None]
            problems += [p for old, s in plan.changed if (p := self._protection_problem(new, old, s, snapshot)) is not None]
            problems += self._allocation_problems(plan, new)
            if problems:
                return self._reload_refused(trigger, problems)
            return await self._apply(trigger, plan, new)

    def _allocation_problems(self, plan: ReloadPlan, new: Config) -> list[str]:
        """An added strategy whose allocation the venue's account cannot cover is refused
        before anything is applied: applied, its allocation is journaled, and every
        strategy of the venue would then fail its pre-flight at its next (re)start."""
        out = []
        for venue in sorted({s.venue for s in plan.added}):
            shadow = self.shadow_venues.get(venue)
            if shadow is None:
                continue  # additions on a ccxt venue are refused by the plan (need a restart)
            balances = {asset: b.free + b.used for asset, b in shadow.exchange.balances.items()}
            for asset, total in sorted(allocated_on(new, venue).items()):
                if total > balances.get(asset, Decimal(0)):
                    out.append(f"strategies: allocations on {venue} would exceed the account balance: {total} {asset} "
                               f"allocated to all strategies, balance {balances.get(asset, Decimal(0))} {asset}; "
                               "lower the new strategy's allocation")
        return out

    async def _apply(self, trigger: str, plan: ReloadPlan, new: Config) -> dict[str, Any]:
        problems = []
        still: list[StrategySettings] = []  # removals refused at the last instant: running on
        missing: set[str] = set()  # additions that did not start
        kept: dict[str, StrategySettings] = {}  # changes refused at the last instant: name -> what runs
        for strategy in plan.removed:
            retired = ChildSpec(strategy_address(strategy.name), retired_strategy, mailbox=self.mailboxes[strategy_address(strategy.name)])
            snapshot = self.snapshot
            refused = await self.venue_supervisors[strategy.venue].replace_child(
                retired, guard=lambda node, name=strategy.name: self._removal_problem(name, snapshot(), node),
                between=functools.partial(self._written, "strategy_removed", strategy.name,
                                          "removed from the config; its books stay in the ledger and the store", {}),
            )
            if refused:
                problems.append(f"strategies: {refused}")
                still.append(strategy)
        if plan.added:
            # The reconciler counts every strategy's holdings against its venue's balances:
            # its next incarnation knows the new ones (a removed one still holds its books).
            # Restarted before any strategy starts: a strategy's first question to it (is
            # my venue reconciled?) must reach the incarnation that will answer it.
            for strategy in plan.added:
                self.markets[strategy.name] = Market(strategy.venue, *strategy.symbol.split("/"))
            refused = await self.root.replace_child(self.reconciler)
            if refused:
                problems.append(f"reconciler: {refused}")
        for old, strategy in plan.changed:
            fields = changed_fields(old, strategy)
            snapshot = self.snapshot
            refused = await self.venue_supervisors[strategy.venue].replace_child(
                self._strategy(strategy, new),
                guard=lambda node, old=old, strategy=strategy: self._protection_problem(new, old, strategy, snapshot(), node),
                between=functools.partial(self._written, "strategy_reconfigured", strategy.name,
                                          f"restarting with the edited config: {', '.join(fields)}", {"changed": fields}),
            )
            if refused:
                problems.append(f"strategies: {strategy.name}: {refused}")
                kept[strategy.name] = old  # it runs on with its old settings
        for strategy in plan.added:
            journal = not parameter_problems(strategy)
            if journal:
                self.allocations[strategy.name] = strategy.allocation
            self.accounts_of[strategy.name] = account_of(strategy)
            allocation = strategy.allocation
            await self.directory[LEDGER].send(Allocate(strategy.name, account_of(strategy), allocation.quote, allocation.base,
                                                       allocation.base_cost, journal))
            spec = self._strategy(strategy, new)
            supervisor = self.venue_supervisors[strategy.venue]
            retired_here = any(c["name"] == spec.name for c in supervisor.snapshot()["children"])
            refused = await (supervisor.replace_child(spec) if retired_here else supervisor.add_child(spec))
            if refused:
                problems.append(f"strategies: {strategy.name}: {refused}")
                missing.add(strategy.name)
        if plan.notifications is not None:
            self.notifier = self._notifier(new)
            refused = await self.root.replace_child(self.notifier)
            if refused:
                problems.append(f"notifications: {refused}")
        # What runs now: the next edit is compared with this.
        self.config = attrs.evolve(new, strategies=[kept.get(s.name, s) for s in new.strategies if s.name not in missing] + still)
        # What the HTTP endpoints list and may control: exactly the strategies that run now.
        self.web.strategies[:] = [StrategyFacts(s.name, s.venue, s.symbol, s.mode) for s in self.config.strategies]
        if problems:
            # Only a race (an order placed in the instant between the check and the stop)
            # or a venue restarting can get here: say exactly what was not applied.
            return self._reload_refused(trigger, [f"partly applied ({plan.summary()}); not applied: {p}" for p in problems])
        return self._reload_done(trigger, "applied", plan)

    def _removal_problem(self, name: str, snapshot: dict[str, Any], node: dict[str, Any] | None = None) -> str | None:
        """Why strategy ``name`` cannot be removed now (open orders, reservations), or None."""
        if node is None:
            node = _find_node(snapshot, strategy_address(name)) or {}
        open_orders = (node.get("status") or {}).get("open_orders", 0)
        ledger = _find_node(snapshot, LEDGER) or {}
        reservations = ((ledger.get("status") or {}).get("accounts") or {}).get(name, {}).get("open_reservations", 0)
        if open_orders or reservations:
            return (f"{name} cannot be removed while it has {open_orders} open order(s) and {reservations} reservation(s) "
                    "in the ledger: cancel them (or let them fill or expire), then save the config again")
        return None

    def _protection_problem(self, new: Config, old: StrategySettings, strategy: StrategySettings, snapshot: dict[str, Any],
                            node: dict[str, Any] | None = None) -> str | None:
        """Why the edit of ``old`` into ``strategy`` cannot be applied now (its protection
        removed while protective orders rest: :func:`supervisors.reload.protection_removal_problem`), or None."""
        if node is None:
            node = _find_node(snapshot, strategy_address(strategy.name)) or {}
        at = f"strategies[{next(i for i, s in enumerate(new.strategies) if s.name == strategy.name)}]"
        return protection_removal_problem(at, old, strategy, node.get("status") or {})

    def _reload_refused(self, trigger: str, problems: list[str]) -> dict[str, Any]:
        self.config_problems = list(problems)
        source = str(self.config_path or "the embedded config")
        log.warning("config %s (%s) not applied; the running config is unchanged:\n  %s", source, trigger, "\n  ".join(problems))
        self.emit("config_rejected", "config", f"{source}: {len(problems)} problem(s), nothing changed: {problems[0]}"
                  + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                  {"source": source, "trigger": trigger, "problems": problems})
        return self._remember(trigger, "rejected", "nothing changed", problems)

    def _reload_done(self, trigger: str, outcome: str, plan: ReloadPlan) -> dict[str, Any]:
        self.config_problems = []
        source = str(self.config_path or "the embedded config")
        log.info("config %s (%s): %s", source, trigger, plan.summary())
        self.emit(f"config_{outcome}", "config", f"{source}: {plan.summary()}", {"source": source, "trigger": trigger, **plan.payload()})
        return self._remember(trigger, outcome, plan.summary(), [])

    def _remember(self, trigger: str, outcome: str, summary: str, problems: list[str]) -> dict[str, Any]:
        self.config_reload = {"at": self.env.clock.now(), "trigger": trigger, "outcome": outcome, "summary": summary,
                              "problems": list(problems)}
        self.web.facts["config_reload"] = self.config_reload  # in /status: a bad edit says why there too
        return self.config_reload

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the tree until cancelled. Before anything starts, and before anything is
        written: hold the store for this process alone (:class:`StoreBusy` names the other
        process), refuse a file that is not a limitline store (:class:`NotAStore`), listen
        where ``status`` says (:class:`StatusAddressError`), and only then create or migrate
        the store (:class:`StoreUnavailable` if it cannot be written). Each raises before
        ``task_status.started()``, with a message for the user. Open orders of a strategy
        the config no longer names are refused too (:class:`OrphanedOrders`)."""
        with StoreLock(self.store_path) as lock:
            check_store(self.store_path)
            await trio.to_thread.run_sync(self._check_owned)
            await trio.to_thread.run_sync(self._restore_simulated)
            with self.status_listener:
                await trio.to_thread.run_sync(lambda: open_store(self.store_path).close())
                lock.opened()  # the store exists now: locked by inode too (hard links), and kept
                await self.root.run_root(self.emit, task_status=_StartedThen(task_status, self._warn))

    def _warn(self) -> None:
        """What the config allows but likely does not mean, as ``config_warning`` events
        (echoed on the console, in the feed), once the tree (and its writer) runs."""
        for warning in config_warnings(self.config):
            self.emit("config_warning", "config", warning, {})


class _StartedThen:
    """A task status that calls ``then`` when the tree has started, before telling its caller."""

    def __init__(self, status: Any, then: Any) -> None:
        self._status, self._then = status, then

    def started(self, value: Any = None) -> None:
        self._then()
        self._status.started(value)


def account_of(strategy: StrategySettings) -> tuple[tuple[str, str], str, str]:
    """The ledger's ``accounts_of`` entry: the exchange account (venue, mode), base, quote."""
    base, quote = strategy.symbol.split("/")
    return (strategy.venue, strategy.mode), base, quote


async def retired_strategy(ctx: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """What stands at the address of a strategy removed from the config while running: it
    reads and drops what still comes (candles of its subscription), so no sender ever waits
    on a full mailbox; its books stay in the ledger and the store."""
    ctx.status_provider = lambda: {"active": False, "inactive_reason": "removed from the config", "removed": True,
                                   "open_orders": 0}
    task_status.started()
    async for _ in ctx.inbox:
        pass


def _find_node(snapshot: dict[str, Any], name: str) -> dict[str, Any] | None:
    if snapshot.get("name") == name:
        return snapshot
    for child in snapshot.get("children", []):
        found = _find_node(child, name)
        if found is not None:
            return found
    return None


def has_credentials(venue: CcxtVenueConfig) -> bool:
    return venue.secrets_file is not None or venue.api_key_env is not None or venue.secret_env is not None


def build_client(venue: CcxtVenueConfig, credentials: Any) -> Any:
    return make_client(
        venue.exchange,
        api_key=credentials.api_key if credentials else None,
        secret=credentials.secret if credentials else None,
        password=credentials.password if credentials else None,
        base_url=venue.base_url,
        sandbox=venue.sandbox,
        timeout_ms=int(venue.timeout_seconds * 1000),
        market_type=venue.market_type,
        https_proxy=venue.https_proxy,
        ca_file=venue.ca_file,
    )


def perpetual_core(venue: CcxtVenueConfig, config: Config) -> dict[str, Any]:
    """The live connection's core for a ``swap`` venue (a USD-M account) and the settings of
    the markets its live strategies trade (set on the account at start)."""
    if venue.market_type != "swap":
        return {}
    live = {s.symbol: s.name for s in config.strategies if s.venue == venue.name and s.mode == "live"}
    markets = [PerpetualMarketSetting(m.symbol, m.leverage, m.margin_mode, live[m.symbol])
               for m in venue.markets if m.symbol in live]
    return {"core_class": LivePerpetualConnectionCore,
            "core_options": {"markets": markets, "margin_max_age_seconds": venue.margin_max_age_seconds}}


def shadow_perpetuals(venue: CcxtVenueConfig, config: Config) -> LazyPerpetualExchange:
    """The simulated perpetuals account of a swap venue's shadow strategies: their
    allocations are its wallet; their markets' leverage and margin mode are set on it."""
    shadow = {s.symbol for s in config.strategies if s.venue == venue.name and s.mode == "shadow"}
    markets = [PerpetualMarketSetting(m.symbol, m.leverage, m.margin_mode) for m in venue.markets if m.symbol in shadow]
    settle = markets[0].symbol.partition(":")[2] if markets else "USDT"
    return LazyPerpetualExchange(allocated_on(config, venue.name, "shadow").get(settle, Decimal(0)), markets)


def live_settings(venue: CcxtVenueConfig) -> LiveSettings:
    return LiveSettings(
        timeframe=venue.timeframe,
        timeframe_seconds=timeframe_seconds(venue.timeframe, venue.exchange),
        poll_seconds=venue.poll_seconds,
        rate_limit_per_second=venue.rate_limit_per_second,
        isolate_after_seconds=venue.isolate_after_seconds,
        probe_max_seconds=venue.probe_max_seconds,
        never_placed_after_seconds=venue.never_placed_after_seconds,
    )


def venue_facts(venue: VenueConfig, symbols: Sequence[str] = ()) -> VenueFacts:
    """What a connection would tell its strategies, found without starting the runtime:
    for a simulated venue, its markets, balances and the price where its replay starts;
    for a ccxt venue, one synchronous load of markets and balance with the credentials,
    and the last price of each of ``symbols`` (its strategies' markets) that it lists."""
    if isinstance(venue, SimulatedVenueConfig):
        core = PerpetualConnectionCore if venue.market_type == "swap" else ShadowConnectionCore
        return core(venue.name, build_shadow_venue(venue)).facts()
    try:
        credentials = resolve(venue) if has_credentials(venue) else None
        client = build_client(venue, credentials)
    except CredentialsError as problem:
        return VenueFacts(venue.name, str(problem), {}, {}, {})
    secrets = credentials.values() if credentials else ()
    guard_logs(secrets)
    found: dict[str, Any] = {"fetch_balance": {}}
    for operation in ("load_markets", "fetch_balance") if credentials else ("load_markets",):
        try:
            found[operation] = perform(client, operation)
        except Exception as error:  # noqa: BLE001 - reported as the venue's problem
            kind = classify(error, write=False).value
            return VenueFacts(venue.name, scrub(f"{kind}: {type(error).__name__}: {error}", secrets), {}, {}, {})
    facts = last_prices_read(venue, client, VenueFacts(venue.name, None, found["load_markets"], found["fetch_balance"], {}),
                             symbols, secrets)
    return swap_settings_checked(venue, client, facts, secrets) if credentials and venue.market_type == "swap" else facts


def last_prices_read(venue: CcxtVenueConfig, client: Any, facts: VenueFacts, symbols: Sequence[str],
                     secrets: tuple[str, ...]) -> VenueFacts:
    """``facts`` with the last price of each listed market of ``symbols``: the close of its
    newest candle of the venue's timeframe (``fetch_ohlcv``, public data), as a running
    connection knows it from its candle polls. Pre-flight checks the order size and a
    perpetual's initial margin at that price; a market whose candles cannot be read is its
    strategy's problem (the runtime could not read them either)."""
    prices: dict[str, Decimal] = {}
    problems = dict(facts.market_problems)
    for symbol in dict.fromkeys(symbols):
        if symbol not in facts.markets:
            continue  # pre-flight says the market does not exist
        try:
            candles = perform(client, "fetch_candles", (symbol, venue.timeframe, None, 2))
        except Exception as error:  # noqa: BLE001 - reported as the market's problem
            problems[symbol] = scrub(f"reading its last price failed: {type(error).__name__}: {error}", secrets)
            continue
        if candles:
            prices[symbol] = candles[-1].close
    return attrs.evolve(facts, last_prices=prices, market_problems=problems)


def swap_settings_checked(venue: CcxtVenueConfig, client: Any, facts: VenueFacts, secrets: tuple[str, ...]) -> VenueFacts:
    """A swap venue's markets as the account has them set now (``limitline check`` reads,
    it never sets): a market whose settings cannot be read is its strategy's problem; one set
    otherwise than the config says is not (``run`` sets them at start, then reads them back),
    so pre-flight checks the initial margin at the config's leverage, as ``run`` does."""
    leverage: dict[str, Decimal] = {}
    problems: dict[str, str] = {}
    for market in venue.markets:
        if market.symbol not in facts.markets:
            continue
        try:
            perform(client, "fetch_leverage", (market.symbol,))  # `run` sets the config's before its pre-flight
        except Exception as error:  # noqa: BLE001 - reported as the market's problem
            problems[market.symbol] = scrub(f"reading its leverage failed: {type(error).__name__}: {error}", secrets)
            continue
        leverage[market.symbol] = Decimal(market.leverage)
    return attrs.evolve(facts, leverage=leverage, market_problems={**facts.market_problems, **problems})


def preflight_all(config: Config) -> dict[str, list[str]]:
    """Every strategy's pre-flight problems, without starting anything (``limitline check``)."""
    facts = {
        venue.name: venue_facts(venue, [s.symbol for s in config.strategies if s.venue == venue.name])
        for venue in config.venues
    }
    return {
        s.name: preflight(s, facts[s.venue], allocated_on(config, s.venue, s.mode)) for s in config.strategies
    }


def build_shadow_venue(venue: SimulatedVenueConfig) -> ShadowVenue:
    feeds = {
        symbol: ReplayFeed(load_candles_cached(data_path(replay.data)), replay.speed, start=replay.start)
        for symbol, replay in venue.replay.items()
    }
    if venue.market_type == "swap":
        return ShadowVenue(build_perpetual_exchange(venue), feeds)
    markets = [
        MarketRules.for_symbol(
            m.symbol,
            tick_size=m.tick_size,
            lot_size=m.lot_size,
            min_amount=m.min_amount,
            min_notional=m.min_notional,
            maker_fee=m.maker_fee,
            taker_fee=m.taker_fee,
            fee_in=m.fee_in,
            fee_currency_price=m.fee_currency_price,
        )
        for m in venue.markets
    ]
    exchange = SimulatedExchange(markets, dict(venue.balances), venue.volume_share)
    return ShadowVenue(exchange, feeds)


def build_perpetual_exchange(venue: SimulatedVenueConfig) -> PerpetualExchange:
    """A simulated USD-M account: its wallet is the venue's balance in the settlement
    asset; each market's leverage and margin mode are set at start, as the connection of
    a real account sets them (``set_leverage``, ``set_margin_mode``)."""
    markets = [
        perpetual_rules(
            m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount,
            min_notional=m.min_notional, maker_fee=m.maker_fee, taker_fee=m.taker_fee,
        )
        for m in venue.markets
    ]
    settlement = markets[0].quote
    exchange = PerpetualExchange(
        markets, venue.balances.get(settlement, Decimal(0)), margin_asset=settlement,
        volume_share=venue.volume_share, funding_rate=venue.funding_rate,
        maintenance_margin_rate=venue.maintenance_margin_rate,
    )
    for m in venue.markets:
        if m.leverage is not None:
            exchange.set_leverage(m.symbol, m.leverage)
        if m.margin_mode == "isolated":
            exchange.set_margin_mode(m.symbol, "isolated")
    return exchange
