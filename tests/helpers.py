"""Helpers shared by the tests that run the whole tree."""

from __future__ import annotations

from typing import Any, Callable

import trio

from actors.messages import RecordEvent


class Watch:
    """Collects the events the writer commits, and wakes a test when one it waits for comes."""

    def __init__(self) -> None:
        self.events: list[RecordEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: RecordEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Callable[[list[RecordEvent]], bool]) -> None:
        while not predicate(self.events):
            await self._changed.wait()

    def count(self, kind: str, strategy: str | None = None) -> int:
        return sum(e.kind == kind and (strategy is None or e.strategy == strategy) for e in self.events)

    def of(self, kind: str) -> list[RecordEvent]:
        return [e for e in self.events if e.kind == kind]


def walk(node: dict[str, Any]):
    """Every node of a supervision-tree snapshot."""
    yield node
    for child in node.get("children", []):
        yield from walk(child)


def node(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in walk(snapshot) if n["name"] == name)


class Lines:
    """Reads a pipe on a thread so a test can wait for a line with a deadline."""

    def __init__(self, pipe) -> None:
        import queue
        import threading

        self.queue: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            self.queue.put(line)
        self.queue.put("")

    def wait_for(self, pattern: str, timeout: float = 60):
        import queue
        import re

        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout}s; last lines:\n{''.join(self.seen[-40:])}") from None
            self.seen.append(line)
            if line == "":
                raise AssertionError(f"the stream ended before {pattern!r}:\n{''.join(self.seen[-40:])}")
            match = re.search(pattern, line)
            if match:
                return match

    def wait_for_all(self, patterns: list[str], timeout: float = 60) -> None:
        """Until every pattern has matched some line (in any order)."""
        import re

        missing = [p for p in patterns if not any(re.search(p, line) for line in self.seen)]
        while missing:
            self.wait_for("|".join(f"(?:{p})" for p in missing), timeout)
            missing = [p for p in patterns if not any(re.search(p, line) for line in self.seen)]
