"""One process per store: a second process is refused at once, naming the first, which runs
on untouched; a file that is not limitline's is never written into."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import Lines

from store.db import check_store, open_store
from store.errors import NotAStore, StoreBusy
from store.lock import StoreLock, lock_path

ROOT = Path(__file__).resolve().parents[1]
BIN = [sys.executable, "-m", "supervisors.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def limitline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=ENV)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_run_on_a_held_store_is_refused_naming_the_first_which_runs_on(fast_config_path, tmp_path):
    first = subprocess.Popen([*BIN, "run", "-c", str(fast_config_path)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        stderr, stdout = Lines(first.stderr), Lines(first.stdout)
        base = stderr.wait_for(r"status at (http://127\.0\.0\.1:\d+)/status").group(1)
        store = tmp_path / "limitline.sqlite"

        second = limitline("run", "-c", str(fast_config_path), cwd=tmp_path)
        assert second.returncode == 2
        message = second.stderr.strip()
        assert message.startswith(f"limitline: store {store} is in use by process {first.pid} on ")
        assert f"run -c {fast_config_path}" in message and f"in {tmp_path}" in message
        assert "Stop that process first" in message and "another `store`" in message
        assert "Traceback" not in second.stderr and second.stdout == ""

        # The first one never noticed: it is still running, trading and answering.
        def fills() -> int:
            return sqlite3.connect(store).execute("SELECT count(*) FROM fills").fetchone()[0]

        before = fills()
        with urllib.request.urlopen(f"{base}/status", timeout=10) as response:
            assert json.loads(response.read())["tree"]["state"] == "running"
        while fills() <= before:  # each printed fill wakes the check; none in 30 s fails it
            assert first.poll() is None, "the first process exited"
            stdout.wait_for(r"\bfill\b", timeout=30)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    # Every fill was settled once: one settle journal entry per fill row.
    connection = sqlite3.connect(tmp_path / "limitline.sqlite")
    settles = connection.execute("SELECT count(*) FROM journal WHERE kind = 'settle'").fetchone()[0]
    assert settles == connection.execute("SELECT count(*) FROM fills").fetchone()[0]
    # Released on the way out: the next process takes the store.
    with StoreLock(tmp_path / "limitline.sqlite"):
        pass


HOLDER = """
import sys, time
from store.lock import StoreLock
lock = StoreLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # held until the test kills this process
"""


def test_the_kernel_releases_the_lock_of_a_process_killed_with_sigkill(tmp_path):
    store = tmp_path / "s.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        written = lock_path(store).read_bytes()
        with pytest.raises(StoreBusy) as busy:
            StoreLock(store).acquire()
        assert busy.value.holder["pid"] == holder.pid
        assert f"is in use by process {holder.pid} on " in str(busy.value)
        # A refused attempt leaves the holder's identity as it was.
        assert lock_path(store).read_bytes() == written
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    with StoreLock(store) as lock:  # no stale lock: nothing to clean up by hand
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert lock_path(store).read_text() == ""  # an orderly release names no one


def test_one_store_is_one_lock_whatever_the_path_says(tmp_path, monkeypatch):
    store = tmp_path / "data" / "s.sqlite"
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with StoreLock(store):
        for other in (Path("data/s.sqlite"), tmp_path / "link" / "s.sqlite"):
            with pytest.raises(StoreBusy, match=f"process {os.getpid()} "):
                StoreLock(other).acquire()
    with StoreLock(Path("link/s.sqlite")):
        pass


def test_check_only_reads_and_needs_no_lock(fast_config_path, tmp_path):
    with StoreLock(tmp_path / "limitline.sqlite"):
        result = limitline("check", "-c", str(fast_config_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def foreign_database(path: Path) -> Path:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    connection.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
    connection.commit()
    connection.close()
    return path


def run_on_store(tmp_path: Path, store: Path) -> subprocess.CompletedProcess:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["store"] = str(store)
    raw["status"]["port"] = 0
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return limitline("run", "-c", str(config), cwd=tmp_path)


def test_a_sqlite_database_of_another_program_is_refused_and_never_written(tmp_path):
    store = foreign_database(tmp_path / "photos.db")
    before = digest(store)
    result = run_on_store(tmp_path, store)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"limitline: store {store}: is a sqlite database of another program (tables: photos), not a limitline store; "
        "limitline never writes into a file that is not its own. Set `store` to a new path (or to an existing limitline store)"
    )
    assert digest(store) == before
    assert not Path(f"{store}-wal").exists()


def test_a_file_that_is_not_sqlite_is_refused_and_never_written(tmp_path):
    store = tmp_path / "notes.txt"
    store.write_text("my trading notes\n" * 100)
    before = digest(store)
    result = run_on_store(tmp_path, store)
    assert result.returncode == 2
    assert result.stderr.startswith(f"limitline: store {store}: is not a sqlite database; limitline never writes into")
    assert "Traceback" not in result.stderr
    assert digest(store) == before


def test_open_store_refuses_what_is_not_a_store_before_any_write_and_takes_an_empty_file(tmp_path):
    store = foreign_database(tmp_path / "photos.db")
    before = digest(store)
    for refuse in (check_store, open_store):
        with pytest.raises(NotAStore, match="is a sqlite database of another program"):
            refuse(store)
    assert digest(store) == before  # not even switched to WAL
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    check_store(empty)
    connection = open_store(empty)
    assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    connection.close()
    check_store(empty)  # now it is a store
    # A `meta` table is not enough to be a store.
    lookalike = tmp_path / "lookalike.db"
    connection = sqlite3.connect(lookalike)
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    connection.commit()
    connection.close()
    with pytest.raises(NotAStore, match=r"another program \(tables: meta\)"):
        check_store(lookalike)


def test_a_hard_link_to_a_held_store_is_the_same_store(tmp_path):
    """A lock file is found by name; a hard link has another name but is the same file."""
    store = tmp_path / "limitline.sqlite"
    open_store(store).close()
    hard = tmp_path / "other" / "hard.sqlite"
    hard.parent.mkdir()
    os.link(store, hard)
    with StoreLock(store):
        with pytest.raises(StoreBusy) as busy:
            StoreLock(hard).acquire()
        assert busy.value.holder["pid"] == os.getpid()
        assert str(busy.value).startswith(f"store {hard} is in use by process {os.getpid()} on ")
        assert "(the same file under another name: a hard link)" in str(busy.value)
        # The lock on the file does not stand in sqlite's way (flock and sqlite's fcntl locks
        # are independent on Linux): another process writes and reads it meanwhile.
        script = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t (x)'); "
                  "c.execute('INSERT INTO t VALUES (1)'); c.commit(); print(c.execute('SELECT x FROM t').fetchone()[0])")
        assert subprocess.run([sys.executable, "-c", script, str(store)], capture_output=True, text=True,
                              timeout=30).stdout.strip() == "1"
    with StoreLock(hard):  # released with the store
        pass


def test_a_second_run_through_a_hard_link_is_refused_and_the_first_runs_on(fast_config_path, tmp_path):
    """The first run creates its store: it is locked by inode once it exists."""
    first = subprocess.Popen([*BIN, "run", "-c", str(fast_config_path)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        stderr, stdout = Lines(first.stderr), Lines(first.stdout)
        stderr.wait_for(r"status at (http://127\.0\.0\.1:\d+)/status")
        hard = tmp_path / "hard" / "hard.sqlite"
        hard.parent.mkdir()
        os.link(tmp_path / "limitline.sqlite", hard)
        second = run_on_store(tmp_path / "hard", hard)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f"limitline: store {hard} is in use by process {first.pid} on ")
        assert "a hard link" in second.stderr and "Traceback" not in second.stderr
        assert not Path(f"{hard}-wal").exists()  # it never opened the database
        stdout.wait_for(r"\bfill\b", timeout=60)  # the first trades on
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_a_refused_start_leaves_nothing_behind(tmp_path):
    """Status port in use, a bad host, another program's file: no store directory, no
    ``.lock``, nothing written (the default store path is limitline-data/limitline.sqlite)."""
    import socket

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw.pop("store", None)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for status, expected in (({"host": "127.0.0.1", "port": busy.getsockname()[1]}, "is already in use"),
                                 ({"host": "no-such-host.invalid", "port": 0}, "cannot resolve")):
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump({**raw, "status": status}))
            result = limitline("run", "-c", str(config), cwd=tmp_path)
            assert result.returncode == 2 and expected in result.stderr, result.stderr
            assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    finally:
        busy.close()
    store = foreign_database(tmp_path / "photos.db")
    result = run_on_store(tmp_path, store)
    assert result.returncode == 2 and "another program" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "photos.db"]
    # A start that is not refused keeps its lock file (empty once it has stopped).
    with StoreLock(tmp_path / "kept" / "s.sqlite") as lock:
        lock.opened()
    assert lock_path(tmp_path / "kept" / "s.sqlite").read_text() == ""


def test_a_lock_file_removed_between_open_and_flock_is_taken_again(tmp_path, monkeypatch):
    """A refused start removes the lock file it made while another process may have just
    opened it: that process must not hold a lock no one else can find."""
    import store.lock as lock_module

    store = tmp_path / "s.sqlite"
    opened = lock_module._open_lock_file
    calls = []

    def open_then_lose(path):
        fd, created = opened(path)
        if not calls:  # the first open's file is unlinked before its flock
            path.unlink()
        calls.append(created)
        return fd, created

    monkeypatch.setattr(lock_module, "_open_lock_file", open_then_lose)
    with StoreLock(store) as lock:
        lock.opened()
        assert os.fstat(lock._fd).st_ino == os.stat(lock_path(store)).st_ino  # the file the path names
        with pytest.raises(StoreBusy):
            StoreLock(store).acquire()
    assert calls == [True, True, False]  # made, lost, made again; the refused one made nothing
