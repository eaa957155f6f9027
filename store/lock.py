"""One process per store: an OS lock on ``<store>.lock``, held for the life of the process.

Two processes trading on one store settle every fill twice (each ledger books the other's
fills as its own) and leave the journal unusable, so a second process is refused at once,
with a message naming the holder, and the holder is never touched.

Decisions:

- ``fcntl.flock`` on a file beside the store, not a lock inside sqlite: the kernel releases
  it when the holder exits in any way, ``kill -9`` included, so a stale lock never blocks a
  restart, and there is nothing to clean up by hand.
- The holder writes its identity into the lock file (PID, host, command line, working
  directory, start time) *after* it holds the lock, so what a refused process reads is the
  current holder's. A refused process never truncates or writes the file. (This is why the
  ``filelock`` package does not fit: it opens the file with ``O_TRUNC`` on every attempt,
  so a refused attempt would erase the holder's identity.)
- The lock file is never deleted (deleting a lock file races with a process that has just
  opened it); on an orderly release its content is cleared.
- The path is resolved first, so a symlink or another working directory reaches the same
  lock for the same file.
- Only a process that writes the store takes it (``limitline run``); readers (``check``,
  ``/status``, ``sqlite3`` by hand) do not need it. ``flock`` is advisory and local to one
  host: a store on a network file system is not protected against another host.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from store.errors import StoreBusy, StoreUnavailable

#: The most of a command line the message repeats.
COMMAND_SHOWN = 200


def lock_path(store: str | Path) -> Path:
    """The lock file of the store at ``store``: beside the real file, ``<name>.lock``."""
    real = Path(store).expanduser().resolve()
    return real.with_name(real.name + ".lock")


class StoreLock:
    """Holds the store at ``path`` for this process, as a context manager.

    Entering raises :class:`StoreBusy` when another process (or another ``StoreLock`` in
    this one) holds it, and :class:`StoreUnavailable` when the lock file cannot be made
    (its directory cannot be created or written)."""

    def __init__(self, path: str | Path) -> None:
        self.store = Path(path)
        self.path = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: a refused attempt must not erase the holder's identity.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreUnavailable(
                f"store {self.store}: cannot create its lock file {self.path} ({error.strerror or error}); "
                "the store's directory must be writable by this user: fix its permissions or set `store` to another path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreBusy(_busy_message(self.store, holder), holder) from None
        except OSError as error:
            os.close(fd)
            raise StoreUnavailable(
                f"store {self.store}: cannot lock {self.path} ({error.strerror or error}); "
                "put the store on a local file system"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_identity()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a lock file read by hand names no one who is gone
        finally:
            os.close(fd)  # closing releases the lock

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def holder_identity() -> dict[str, Any]:
    """What this process writes about itself into a lock it holds."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join(sys.orig_argv),
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    # The holder writes its identity just after it locks: a read in between finds nothing.
    for _ in range(20):
        raw = os.pread(fd, 4096, 0)
        if raw:
            try:
                found = json.loads(raw)
            except ValueError:
                found = None
            if isinstance(found, dict):
                return found
        time.sleep(0.005)
    return {}


def _busy_message(store: Path, holder: dict[str, Any]) -> str:
    if "pid" in holder:
        command = str(holder.get("command", ""))
        if len(command) > COMMAND_SHOWN:
            command = command[: COMMAND_SHOWN - 1] + "…"
        who = f"process {holder['pid']} on {holder.get('host', '?')}"
        details = [f"`{command}`" if command else "", f"in {holder['cwd']}" if holder.get("cwd") else "",
                   f"since {holder['started']}" if holder.get("started") else ""]
        who += f" ({', '.join(d for d in details if d)})" if any(details) else ""
    else:
        who = "another process (it has not said which yet)"
    return (
        f"store {store} is in use by {who}. Only one limitline process may use a store: two would "
        f"settle every fill twice. Stop that process first (it stops in order on Ctrl-C or SIGTERM), "
        f"or give this one another `store` in its config"
    )
