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
- Once the store has been opened under it, the lock file is never deleted; on an orderly
  release its content is cleared. A start refused before that (status port in use, a bad
  host, another program's file) removes the lock file and the directories it made, so it
  leaves nothing behind. Deleting a lock file races with a process that has just opened
  it: so whoever takes the lock checks that the path still names the file it locked, and
  starts again if not.
- The path is resolved first, so a symlink or another working directory reaches the same
  lock for the same file.
- The database file itself is locked too, with ``flock`` on the file (its inode), since a
  lock file is found by *name*: a hard link to a held store (``ln limitline.sqlite
  hard.sqlite``) has another name, so another lock file, but is the same file, and two
  processes on it would be two WALs over one database. Refused the same way, the holder
  named from ``/proc/locks`` (which lists each ``flock`` with its PID and inode). This
  does not disturb sqlite: on Linux ``flock`` locks and the ``fcntl`` (POSIX) locks sqlite
  takes are independent ("there is no interaction between the types of lock placed by
  flock() and fcntl(2)", flock(2), NOTES; on NFS, where flock is emulated with fcntl byte
  ranges, they would interact, one more reason the store must be on a local file system).
  The trap to mind is the other way round: closing *any* descriptor of a file drops every
  POSIX lock the process holds on it (fcntl(2); sqlite.org/howtocorrupt.html, 2.2), so
  the descriptor of the database is opened once and closed only at release, after the
  store's connections (a refused attempt closes its own at once: it has no connection).
  A store that does not exist yet is locked once it is created (:meth:`StoreLock.opened`).
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
import stat
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
        self._db_fd: int | None = None
        #: What acquire made, removed at a release unless the store was opened (:meth:`opened`).
        self._created = False
        self._made_directories: list[Path] = []
        self._opened = False

    def acquire(self) -> None:
        made = _missing_directories(self.path.parent)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._created = _open_lock_file(self.path)
        except OSError as error:
            _remove_directories(made)
            raise StoreUnavailable(
                f"store {self.store}: cannot create its lock file {self.path} ({error.strerror or error}); "
                "the store's directory must be writable by this user: fix its permissions or set `store` to another path"
            ) from None
        self._made_directories = made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreBusy(_busy_message(self.store, holder), holder) from None
        except OSError as error:
            self._fd = fd
            self.release()
            raise StoreUnavailable(
                f"store {self.store}: cannot lock {self.path} ({error.strerror or error}); "
                "put the store on a local file system"
            ) from None
        self._fd = fd
        try:
            if not _same_file(fd, self.path):
                # A refused process removed the lock file it had made between our open and
                # our flock: this lock is of a file no one else will find. Take the new one.
                self._created = False
                self.release()
                return self.acquire()
            self.hold_database()
        except BaseException:
            self.release()
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_identity()).encode(), 0)

    def opened(self) -> None:
        """The store has been created or opened for writing under this lock: lock its file
        too (:meth:`hold_database`), and keep the lock file at release. Until this is
        called, a release removes what :meth:`acquire` made (the lock file, the store's
        directories), so a start refused before the store was opened (status port in use,
        another program's file) leaves nothing behind."""
        self._opened = True
        self.hold_database()

    def hold_database(self) -> None:
        """Lock the database file itself (its inode: any hard link to it), if it exists and
        is not held yet; call again once it has been created. Raises :class:`StoreBusy`
        when another process holds that file under another name."""
        if self._db_fd is not None:
            return
        try:
            fd = os.open(self.store.expanduser().resolve(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # not there yet (or unreadable): nothing to lock; check_store and open_store say why
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)  # a directory or a device: check_store refuses it with the reason
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(os.fstat(fd))
            os.close(fd)  # this process holds no sqlite connection to it yet (see the module's notes)
            raise StoreBusy(_busy_message(self.store, holder, hard_link=True), holder) from None
        except OSError:
            os.close(fd)  # a file system without flock: the lock file above still holds
            return
        self._db_fd = fd

    def release(self) -> None:
        if self._db_fd is not None:
            db_fd, self._db_fd = self._db_fd, None
            os.close(db_fd)
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a lock file read by hand names no one who is gone
            if self._created and not self._opened:
                # Removed while still held: whoever opened it meanwhile finds, once it holds
                # it, that the path names another file (or none) and starts again (acquire).
                self.path.unlink(missing_ok=True)
                _remove_directories(self._made_directories)
        finally:
            os.close(fd)  # closing releases the lock

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether this call created it. Never ``O_TRUNC``: a
    refused attempt must not erase the holder's identity."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            continue  # removed in between by a refused start: make it


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _missing_directories(directory: Path) -> list[Path]:
    """The directories from ``directory`` up that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_directories(directories: list[Path]) -> None:
    for directory in directories:  # deepest first; one that is not empty stays
        try:
            directory.rmdir()
        except OSError:
            return


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


def _flock_holder(file: os.stat_result) -> dict[str, Any]:
    """Who holds a ``flock`` on ``file``, from ``/proc/locks`` (Linux), as far as ``/proc``
    tells: ``{pid, host, command, cwd}``, or ``{}``."""
    device = f"{os.major(file.st_dev):02x}:{os.minor(file.st_dev):02x}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return {}
    # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": the device as the kernel numbers it,
    # which an overlay file system may not report in stat(), so the inode alone is the fallback.
    found = [line.split() for line in lines]
    found = [f for f in found if len(f) >= 6 and f[1] == "FLOCK" and f[4].isdigit() and f[5].endswith(f":{file.st_ino}")]
    found.sort(key=lambda f: not f[5].startswith(device + ":"))
    if not found:
        return {}
    pid = int(found[0][4])
    holder: dict[str, Any] = {"pid": pid, "host": socket.gethostname()}
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        holder["command"] = shlex.join(a.decode(errors="replace") for a in argv)
        holder["cwd"] = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        pass
    return holder


def _busy_message(store: Path, holder: dict[str, Any], hard_link: bool = False) -> str:
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
    same = " (the same file under another name: a hard link)" if hard_link else ""
    return (
        f"store {store} is in use by {who}{same}. Only one limitline process may use a store: two would "
        f"settle every fill twice. Stop that process first (it stops in order on Ctrl-C or SIGTERM), "
        f"or give this one another `store` in its config"
    )
