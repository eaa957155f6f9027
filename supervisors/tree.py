"""A supervision tree with Erlang/OTP's semantics, on trio.

Every rule about starting, stopping and restarting children lives in this module:

- children start in order, each synchronously (``nursery.start``): the next child starts
  only once the previous one said it is ready; they stop in reverse order;
- restart strategies ``one_for_one``, ``one_for_all`` and ``rest_for_one``;
- child restart types ``permanent`` (always restarted), ``transient`` (restarted only after
  an abnormal exit) and ``temporary`` (never restarted);
- restart intensity: more than ``max_restarts`` restarts within ``period`` seconds makes the
  supervisor stop all its children and exit with :class:`SupervisorGaveUp`, which its parent
  sees as the crash of one child;
- a shutdown timeout per child: a child still running that long after it was cancelled is
  abandoned (left to finish on its own, no longer supervised) and the supervisor escalates
  with :class:`ShutdownTimeout`;
- changes to a running tree (:meth:`Supervisor.add_child`, :meth:`Supervisor.replace_child`,
  made when the operator edits the config) are applied by the supervisor's own loop, between
  the exits it handles, so a change never races a restart; they never count toward the
  restart intensity.

Trio is structured: a task cannot outlive its nursery. To be able to abandon a child that
ignores cancellation, and still escalate at once, every task of the tree runs in one *host*
nursery opened by the root supervisor; each child runs inside a cancel scope of its own,
which is how its supervisor stops it. A supervisor is therefore a logical owner, not a
nursery: cancelling a supervisor makes it stop its own children, in reverse order, before
it returns. The host nursery itself is cancelled only after the root has stopped everything.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from typing import Any, Awaitable, Callable, Protocol

import attrs
import trio

from actors.mailbox import Mailbox


class RestartStrategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class RestartType(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class SupervisorGaveUp(Exception):
    """A supervisor exceeded its restart intensity and stopped its children."""


class ShutdownTimeout(Exception):
    """A child kept running past its shutdown timeout after it was cancelled."""


class EmitEvent(Protocol):
    def __call__(self, kind: str, actor: str, reason: str, payload: dict[str, Any]) -> None: ...


def _ignore_event(kind: str, actor: str, reason: str, payload: dict[str, Any]) -> None:
    return None


@attrs.define
class ChildContext:
    """What a supervisor hands to each incarnation of a child."""

    name: str
    #: This incarnation's clone of the mailbox's receive side, or None for a child without one.
    inbox: trio.MemoryReceiveChannel[Any] | None
    #: Where the tree's tasks run; a child supervisor starts its own children here.
    host: trio.Nursery
    emit: EmitEvent
    #: Facts the child publishes about itself for the status endpoint (free-form, JSON-able).
    status: dict[str, Any]
    #: Which incarnation this is: 1 at the first start, +1 at every restart.
    incarnation: int
    #: Set by the child: called when a snapshot is taken, so a busy actor does no status
    #: work per message. What it returns is merged over ``status``.
    status_provider: Callable[[], dict[str, Any]] | None = None


class TaskStatusLike(Protocol):
    def started(self, value: Any = None) -> None: ...


ChildStart = Callable[..., Awaitable[Any]]
"""``async def start(ctx: ChildContext, *, task_status) -> None``; call
``task_status.started()`` once ready to serve."""


@attrs.define
class ChildSpec:
    name: str
    start: ChildStart
    restart: RestartType = RestartType.PERMANENT
    #: Seconds to wait for the child to finish once cancelled before abandoning it.
    shutdown_timeout: float = 5.0
    mailbox: Mailbox | None = None
    #: Set when the child is itself a supervisor, so its subtree shows in snapshots.
    supervisor: "Supervisor | None" = None
    #: ``(first, cap)`` seconds: isolate instead of escalating. An abnormal exit of this
    #: child does not count toward its supervisor's intensity; the child is restarted after
    #: a delay that doubles from ``first`` up to ``cap``, and resets once an incarnation
    #: has run for the supervisor's ``period``. For a venue: one failing exchange must never
    #: take the others down.
    restart_backoff: tuple[float, float] | None = None

    @classmethod
    def for_supervisor(
        cls,
        supervisor: "Supervisor",
        restart: RestartType = RestartType.PERMANENT,
        shutdown_timeout: float = math.inf,
        restart_backoff: tuple[float, float] | None = None,
    ) -> "ChildSpec":
        # Like OTP, a supervisor child gets an infinite shutdown timeout by default: it is
        # bounded by the timeouts of its own children.
        return cls(
            name=supervisor.name,
            start=supervisor.run,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            supervisor=supervisor,
            restart_backoff=restart_backoff,
        )


@attrs.define(frozen=True)
class Exit:
    """How one incarnation of a child ended."""

    normal: bool
    reason: str
    wall_time: float
    error: BaseException | None = None

    @classmethod
    def from_error(cls, error: BaseException) -> "Exit":
        return cls(normal=False, reason=_describe(error), wall_time=time.time(), error=error)


@attrs.define(eq=False)
class _Change:
    """A change to the children, queued for the supervisor's loop; ``refused`` says why not."""

    apply: Callable[[], Awaitable[str | None]]
    done: trio.Event = attrs.Factory(trio.Event)
    refused: str | None = None


def _describe(error: BaseException) -> str:
    # A crash inside a child's own nursery arrives wrapped; the operator needs the cause.
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    state: str = "new"
    incarnation: int = 0
    status: dict[str, Any] = attrs.Factory(dict)
    restart_times: deque[float] = attrs.Factory(deque)
    last_exit: Exit | None = None
    scope: trio.CancelScope | None = None
    done: trio.Event | None = None
    context: ChildContext | None = None
    #: Set while its supervisor stops it on purpose, so the exit is not seen as a crash.
    stopping: bool = False
    started_at: float = 0.0
    #: The next isolation delay (children with ``restart_backoff``).
    backoff: float | None = None

    @property
    def running(self) -> bool:
        return self.done is not None and not self.done.is_set()


class Supervisor:
    """Starts, watches and restarts an ordered list of children."""

    def __init__(
        self,
        name: str,
        children: list[ChildSpec],
        strategy: RestartStrategy = RestartStrategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period: float = 5.0,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"supervisor {name}: child names must be unique, got {names}")
        if max_restarts < 0 or period <= 0:
            raise ValueError(f"supervisor {name}: max_restarts >= 0 and period > 0 required")
        self.name = name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.period = period
        self._children = [_Child(spec) for spec in children]
        self._restart_times: deque[float] = deque()
        self._emit: EmitEvent = _ignore_event
        self._host: trio.Nursery | None = None
        self._exits_send: trio.MemorySendChannel[tuple[_Child, int, Exit | None] | _Change] | None = None
        #: Delayed restarts of isolated children; cancelled when this supervisor stops.
        self._delayed: set[trio.CancelScope] = set()
        self.state = "new"

    # ----------------------------------------------------------------- running

    async def run_root(
        self, emit: EmitEvent = _ignore_event, *, task_status: TaskStatusLike = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run this supervisor as the root of a tree: it opens the host nursery.

        Cancelling the caller stops the tree in order (children in reverse) and returns;
        raises :class:`SupervisorGaveUp` or :class:`ShutdownTimeout` when it escalates.
        """
        # The host nursery is shielded so that a cancellation from outside never reaches
        # every child at once; a watcher turns it into an orderly stop instead.
        supervision = trio.CancelScope()
        error: BaseException | None = None

        async def body(host: trio.Nursery, *, task_status: TaskStatusLike) -> None:
            nonlocal error
            ctx = ChildContext(name=self.name, inbox=None, host=host, emit=emit, status={}, incarnation=1)
            try:
                with supervision:
                    await self.run(ctx, task_status=task_status)
            except (SupervisorGaveUp, ShutdownTimeout) as escalated:
                error = escalated
            finally:
                # Everything supervised is stopped by now; what is left was abandoned.
                host.cancel_scope.cancel()

        async def watch_outer_cancellation() -> None:
            try:
                await trio.sleep_forever()
            finally:
                supervision.cancel()

        async with trio.open_nursery() as outer:
            outer.start_soon(watch_outer_cancellation)
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as host:
                    await host.start(body, host)
                    task_status.started()
            outer.cancel_scope.cancel()
        if error is not None:
            raise error

    async def run(self, ctx: ChildContext, *, task_status: TaskStatusLike = trio.TASK_STATUS_IGNORED) -> None:
        """Start every child in order, then supervise them until cancelled or giving up."""
        self._host = ctx.host
        self._emit = ctx.emit
        exits_send, exits_receive = trio.open_memory_channel[tuple[_Child, int, Exit | None] | _Change](math.inf)
        self._exits_send = exits_send
        self._restart_times.clear()
        self.state = "starting"
        try:
            for child in self._children:
                await self._start(child)
            self.state = "running"
            task_status.started()
            async for item in exits_receive:
                if isinstance(item, _Change):
                    try:
                        item.refused = await item.apply()
                    except BaseException as error:
                        item.refused = f"{self.name} failed while applying the change: {_describe(error)}"
                        raise  # a child that ignores cancellation escalates, as always
                    finally:
                        item.done.set()
                    continue
                child, incarnation, exit = item
                if incarnation != child.incarnation or child.stopping or child not in self._children:
                    continue
                if exit is None:  # an isolated child's delay is over
                    await self._start(child)
                else:
                    await self._on_exit(child, exit)
        finally:
            for scope in self._delayed:
                scope.cancel()
            with trio.CancelScope(shield=True):
                abandoned = await self._stop(list(self._children))
            self._exits_send = None
            _refuse_pending(exits_receive, f"{self.name} stopped before the change was applied")
            if self.state != "gave_up":
                self.state = "stopped"
            if abandoned:
                raise ShutdownTimeout(
                    f"{self.name}: {', '.join(abandoned)} ignored cancellation past the shutdown timeout"
                )

    # ---------------------------------------------------- changes while running

    async def add_child(self, spec: ChildSpec) -> str | None:
        """Append ``spec`` as the last child and start it (synchronously, like every start).
        Returns why it was refused (a child of that name exists; this supervisor is not
        running), or None once the child was started (a child that crashed while starting
        is handled like any crash)."""

        async def apply() -> str | None:
            if self._find(spec.name) is not None:
                return f"{self.name} already has a child named {spec.name}"
            child = _Child(spec)
            self._children.append(child)
            await self._start(child)
            return None

        return await self._change(apply)

    async def replace_child(
        self,
        spec: ChildSpec,
        guard: Callable[[dict[str, Any]], str | None] | None = None,
        between: Callable[[], Awaitable[None]] | None = None,
    ) -> str | None:
        """Stop the child named ``spec.name`` and start ``spec`` in its place (same position,
        same mailbox if the spec names it). ``guard`` is called with the child's snapshot
        (its status included) just before it is stopped, in the same step, so nothing the
        child does can slip in between: a string it returns refuses the change. ``between``
        is awaited once the old incarnation has stopped and before the new one starts (to
        let what the old one sent be written down first). A child that is isolated takes
        the new spec at its delayed restart; a child that ended for good (temporary,
        transient) stays stopped with the new spec. Returns why it was refused, or None."""

        async def apply() -> str | None:
            child = self._find(spec.name)
            if child is None:
                return f"{self.name} has no child named {spec.name}"
            if guard is not None:
                problem = guard(self._child_snapshot(child, trio.current_time()))
                if problem is not None:
                    return problem
            was_running = child.running and child.state not in ("abandoned", "isolated")
            abandoned = await self._stop([child])
            if abandoned:
                raise ShutdownTimeout(f"{self.name}: {', '.join(abandoned)} ignored cancellation past the shutdown timeout")
            child.spec = spec
            if between is not None:
                await between()
            if was_running:
                await self._start(child)
            return None

        return await self._change(apply)

    def _find(self, name: str) -> _Child | None:
        return next((c for c in self._children if c.spec.name == name), None)

    async def _change(self, apply: Callable[[], Awaitable[str | None]]) -> str | None:
        if self._exits_send is None or self.state != "running":
            return f"{self.name} is not running (it is {self.state}); try again once it is"
        change = _Change(apply)
        self._exits_send.send_nowait(change)
        await change.done.wait()
        return change.refused

    def snapshot(self) -> dict[str, Any]:
        """The state of this supervisor's subtree, for the status endpoint."""
        now = trio.current_time() if _in_trio() else None
        return {
            "name": self.name,
            "kind": "supervisor",
            "state": self.state,
            "strategy": self.strategy.value,
            "max_restarts": self.max_restarts,
            "period": self.period,
            "restarts": _count_within(self._restart_times, now, self.period),
            "children": [self._child_snapshot(child, now) for child in self._children],
        }

    # ------------------------------------------------------------ internals

    def _child_snapshot(self, child: _Child, now: float | None) -> dict[str, Any]:
        spec = child.spec
        if spec.supervisor is not None:
            node = spec.supervisor.snapshot()
            node["state"] = child.state if child.state != "running" else spec.supervisor.state
        else:
            node = {"name": spec.name, "kind": "actor", "state": child.state}
        node.update(
            restart=spec.restart.value,
            restarts=_count_within(child.restart_times, now, self.period),
            incarnation=child.incarnation,
            last_exit=None
            if child.last_exit is None
            else {"reason": child.last_exit.reason, "at": child.last_exit.wall_time},
            mailbox=None if spec.mailbox is None else spec.mailbox.snapshot(),
        )
        status = dict(child.status)
        provider = child.context.status_provider if child.context is not None else None
        if provider is not None and child.running:
            status.update(provider())
        if status:
            node["status"] = status
        return node

    async def _start(self, child: _Child) -> None:
        assert self._host is not None
        child.incarnation += 1
        child.stopping = False
        child.state = "starting"
        child.started_at = trio.current_time()
        failure = await self._host.start(self._host_child, child, child.incarnation)
        if failure is not None:
            # It died before it was ready: handled like any other exit, so it counts
            # toward the restart intensity and a child that can never start makes the
            # supervisor give up instead of looping.
            self._report_exit(child, child.incarnation, failure)
        else:
            child.state = "running"

    async def _host_child(self, child: _Child, incarnation: int, *, task_status: TaskStatusLike) -> None:
        spec = child.spec
        scope = child.scope = trio.CancelScope()
        done = child.done = trio.Event()
        inbox = spec.mailbox.open_receiver() if spec.mailbox is not None else None
        assert self._host is not None
        ctx = ChildContext(
            name=spec.name,
            inbox=inbox,
            host=self._host,
            emit=self._emit,
            status=child.status,
            incarnation=incarnation,
        )
        child.context = ctx
        started = False

        class _Started:
            @staticmethod
            def started(value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(None)

        exit: Exit | None = None
        try:
            with scope:
                await spec.start(ctx, task_status=_Started)
            exit = Exit(normal=True, reason="stopped" if scope.cancelled_caught else "normal", wall_time=time.time())
        except Exception as error:  # noqa: BLE001 - a crash of a child is data for its supervisor
            exit = Exit.from_error(error)
        finally:
            if inbox is not None:
                inbox.close()
            if exit is not None:
                child.last_exit = exit
            done.set()
        if not started:
            task_status.started(exit)
        else:
            self._report_exit(child, incarnation, exit)

    def _report_exit(self, child: _Child, incarnation: int, exit: Exit) -> None:
        if self._exits_send is not None:
            self._exits_send.send_nowait((child, incarnation, exit))

    async def _on_exit(self, child: _Child, exit: Exit) -> None:
        spec = child.spec
        child.last_exit = exit
        self._emit(
            "child_exited",
            f"{self.name}/{spec.name}",
            exit.reason,
            {"normal": exit.normal, "incarnation": child.incarnation},
        )
        if spec.restart is RestartType.TEMPORARY or (
            spec.restart is RestartType.TRANSIENT and exit.normal
        ):
            child.state = "stopped" if exit.normal else "failed"
            return
        now = trio.current_time()
        child.restart_times.append(now)
        _prune(child.restart_times, now, self.period)
        if spec.restart_backoff is not None and not exit.normal:
            return self._isolate(child, exit, now)
        self._restart_times.append(now)
        _prune(self._restart_times, now, self.period)
        if len(self._restart_times) > self.max_restarts:
            self.state = "gave_up"
            child.state = "failed"
            reason = (
                f"{self.name}: more than {self.max_restarts} restarts within {self.period:g}s; "
                f"last: {spec.name} {exit.reason}"
            )
            self._emit("supervisor_gave_up", self.name, reason, {"child": spec.name})
            raise SupervisorGaveUp(reason)

        index = self._children.index(child)
        if self.strategy is RestartStrategy.ONE_FOR_ONE:
            affected = [child]
        elif self.strategy is RestartStrategy.ONE_FOR_ALL:
            affected = list(self._children)
        else:
            affected = self._children[index:]
        self._emit(
            "child_restarting",
            f"{self.name}/{spec.name}",
            exit.reason,
            {"strategy": self.strategy.value, "restarting": [c.spec.name for c in affected]},
        )
        abandoned = await self._stop([c for c in affected if c is not child])
        if abandoned:
            raise ShutdownTimeout(
                f"{self.name}: {', '.join(abandoned)} ignored cancellation past the shutdown timeout"
            )
        for sibling in affected:
            if sibling is child or sibling.spec.restart is not RestartType.TEMPORARY:
                await self._start(sibling)

    def _isolate(self, child: _Child, exit: Exit, now: float) -> None:
        assert child.spec.restart_backoff is not None and self._host is not None
        first, cap = child.spec.restart_backoff
        if child.backoff is None or now - child.started_at >= self.period:
            child.backoff = first  # it had been healthy for a period: start over
        delay = child.backoff
        child.backoff = min(delay * 2, cap)
        child.state = "isolated"
        self._emit(
            "child_isolated",
            f"{self.name}/{child.spec.name}",
            f"{exit.reason}; restarting in {delay:g}s",
            {"delay": delay},
        )
        self._host.start_soon(self._restart_later, child, child.incarnation, delay)

    async def _restart_later(self, child: _Child, incarnation: int, delay: float) -> None:
        scope = trio.CancelScope()
        self._delayed.add(scope)
        try:
            with scope:
                await trio.sleep(delay)
                if self._exits_send is not None:
                    self._exits_send.send_nowait((child, incarnation, None))
        finally:
            self._delayed.discard(scope)

    async def _stop(self, children: list[_Child]) -> list[str]:
        """Stop the running ones among ``children`` in reverse order; names of the abandoned."""
        abandoned = []
        for child in reversed(children):
            if not child.running or child.state in ("abandoned", "isolated"):
                continue
            assert child.scope is not None and child.done is not None
            child.stopping = True
            child.state = "stopping"
            child.scope.cancel()
            with trio.move_on_after(child.spec.shutdown_timeout):
                await child.done.wait()
            if child.done.is_set():
                child.state = "stopped"
                continue
            child.state = "abandoned"
            abandoned.append(child.spec.name)
            self._emit(
                "child_abandoned",
                f"{self.name}/{child.spec.name}",
                f"still running {child.spec.shutdown_timeout:g}s after it was cancelled",
                {},
            )
        return abandoned


def _refuse_pending(channel: trio.MemoryReceiveChannel[Any], reason: str) -> None:
    """Wake whoever waits on a change this supervisor will never apply."""
    while True:
        try:
            item = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        if isinstance(item, _Change):
            item.refused = reason
            item.done.set()


def _prune(times: deque[float], now: float, period: float) -> None:
    while times and times[0] <= now - period:
        times.popleft()


def _count_within(times: deque[float], now: float | None, period: float) -> int:
    if now is None:
        return len(times)
    return sum(1 for t in times if t > now - period)


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
