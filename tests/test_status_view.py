"""``limitline status`` against a running process (in-process runtime, its real status
server on a real socket, the real store), and what it does when nothing runs."""

from __future__ import annotations

import re
import socket
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
import trio

from conftest import fast_config_raw
from helpers import Watch, node
from supervisors import cli
from supervisors.app import App
from supervisors.config import parse_config
from supervisors.display import money
from supervisors.status_view import StatusClient, StatusUnavailable, StatusView, positions_table, read_view, render, show

READER = "read-token-status-9c41"


def short_replay(tmp_path, start: str = "2019-10-05T00:00:00Z") -> dict:
    """The default config (both default strategies) on the last candles of the bundled data,
    in lockstep: the replay ends within seconds and every candle is decided, after which
    nothing changes the books."""
    raw = fast_config_raw(tmp_path, speed=200)
    replay = raw["venues"][0]["replay"]["BTC/USD"]
    replay["start"], replay["lockstep"] = start, True
    return raw


@asynccontextmanager
async def running(raw: dict, deadline: float = 90):
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    with trio.fail_after(deadline):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            yield app, watch, node(app.snapshot(), "status")["status"]["url"]
            nursery.cancel_scope.cancel()


async def status_command(capsys, *args: str) -> tuple[int, str, str]:
    """``limitline status ARGS`` on a worker thread (it blocks on HTTP while the runtime
    answers on this one); its exit code, stdout and stderr."""
    code = await trio.to_thread.run_sync(cli.main, ["status", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def line_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(name))


async def test_status_shows_both_default_strategies_with_their_pnl_holdings_and_venue(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    async with running(short_replay(tmp_path)) as (app, watch, url):
        await watch.until(lambda events: watch.count("replay_finished") == 1)
        assert watch.count("fill", "sma-cross") > 0 and watch.count("fill", "dip-buyer") > 0
        code, out, err = await status_command(capsys, "--url", url)
        # What the ledger itself holds, read beside the HTTP path (nothing trades any more).
        accounts = node(app.snapshot(), "ledger")["status"]["accounts"]

    assert code == 0, err
    for name in ("sma-cross", "dip-buyer"):
        realized = Decimal(accounts[name]["realized_pnl"])
        assert realized != 0, name  # both sold something: the P&L shown is a real figure
        row = line_of(out, name)
        assert money(realized, "USD") in row, (name, row)
        assert "active" in row
    total = sum(Decimal(accounts[name]["realized_pnl"]) for name in ("sma-cross", "dip-buyer"))
    assert re.search(rf"realized P&L\s+{re.escape(money(total, 'USD'))}", out), out
    assert re.search(r"fees paid\s+.*\d (BTC|USD)", out)
    assert "Strategies 1-2 of 2" in out and "more strateg" not in out
    venue = line_of(out, "sim ")
    assert re.search(r"sim\s+shadow\s+yes\s+no\s+yes\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", venue), venue
    assert "Positions (perpetuals): not wired yet" in out
    assert "Last decisions" in out and re.search(r"dip-buyer\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\S", out)


async def test_watch_redraws_with_fresh_figures(tmp_path):
    import io

    from rich.console import Console

    async with running(short_replay(tmp_path)) as (app, watch, url):
        await watch.until(lambda events: watch.count("strategy_active") == 2)
        console = Console(file=io.StringIO(), width=200)
        await trio.to_thread.run_sync(lambda: show(StatusClient(url), console, watch=0.05, refreshes=2))
    text = console.file.getvalue()
    read_at = re.findall(r"read at\s+(\S+ \S+) UTC", text)
    assert text.count("Totals") == 2 and len(read_at) == 2 and read_at[0] <= read_at[1]
    assert len(re.findall(r"^\s*sma-cross\b", text, re.M)) >= 2


async def test_many_strategies_print_a_page_with_a_hint_and_reading_beyond_loopback_needs_the_token(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LIMITLINE_READ_TOKEN", READER)
    monkeypatch.delenv("LIMITLINE_OPERATOR_TOKEN", raising=False)
    raw = fast_config_raw(tmp_path)
    template = raw["strategies"][0]
    raw["strategies"] = [
        {**template, "name": f"s{i:03d}", "allocation": {"quote": 100}, "sizing": {"quote": 20}} for i in range(45)
    ]
    raw["status"]["host"] = "0.0.0.0"
    async with running(raw) as (app, watch, url):
        await watch.until(lambda events: watch.count("strategy_active") == 45)
        port = url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        code, out, err = await status_command(capsys, "--url", local, "--limit", "20")
        assert code == 0, err
        shown = [n for n in (f"s{i:03d}" for i in range(45)) if re.search(rf"^\s*{n}\b", out, re.M)]
        assert shown == [f"s{i:03d}" for i in range(20)]
        assert "Strategies 1-20 of 45" in out
        assert "25 more strategies: `limitline status --offset 20 --limit 20`" in out
        assert re.search(r"strategies\s+45 \(active 45\)", out)

        code, out, err = await status_command(capsys, "--url", local, "--offset", "40", "--limit", "20")
        assert code == 0 and "Strategies 41-45 of 45" in out and "more strateg" not in out

        code, out, err = await status_command(capsys, "--url", local, "--strategy", "s007")
        assert code == 0 and "Strategy s007" in out and re.search(r"^\s*s007\b", out, re.M)

        code, out, err = await status_command(capsys, "--url", local, "--strategy", "nobody")
        assert code == 2 and "no strategy is named 'nobody'" in err

        # The server reads the same environment in-process, so a wrong token is given directly.
        with pytest.raises(StatusUnavailable, match="the token sent was refused") as refused:
            await trio.to_thread.run_sync(lambda: read_view(StatusClient(local, "not-the-token")))
        assert "not-the-token" not in str(refused.value) and READER not in str(refused.value)
        with pytest.raises(StatusUnavailable, match=r"needs a read token \(no token was sent\): set LIMITLINE_READ_TOKEN"):
            await trio.to_thread.run_sync(lambda: read_view(StatusClient(local)))


async def test_the_url_comes_from_the_configs_status_host_and_port(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    raw = short_replay(tmp_path)
    raw["status"]["port"] = free_port()
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    async with running(raw) as (app, watch, url):
        await watch.until(lambda events: watch.count("strategy_active") == 2)
        code, out, err = await status_command(capsys, "-c", str(path))
    assert code == 0, err
    assert re.search(r"^\s*sma-cross\b", out, re.M) and re.search(r"^\s*dip-buyer\b", out, re.M)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_process_not_running_is_a_clear_message_and_exit_2(capsys):
    port = free_port()  # closed again: nothing listens there
    assert cli.main(["status", "--url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"nothing answers at http://127.0.0.1:{port}" in err and "is `limitline run` running?" in err
    assert "Traceback" not in err


def test_status_reads_a_live_config_as_the_run_does(tmp_path, capsys):
    """`-c` names the same file as the run's, live strategies included: status arms nothing,
    and needs only where the process listens."""
    import yaml

    from helpers import live_config

    port = free_port()
    raw = live_config(tmp_path, "http://127.0.0.1:1")
    raw["status"] = {"port": port}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["status", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"nothing answers at http://127.0.0.1:{port}" in err, err
    assert "--live" not in err


def test_bad_paging_options_exit_2(capsys):
    for args in (["--limit", "0"], ["--limit", "501"], ["--offset", "-1"], ["--watch", "0"]):
        assert cli.main(["status", "--url", "http://127.0.0.1:9", *args]) == 2, args
        assert "--limit must be 1-500" in capsys.readouterr().err


def test_positions_have_their_place_once_a_strategy_reports_them():
    import io

    from rich.console import Console

    row = {"name": "perp", "state": "active", "base": "BTC", "quote": "USDT", "breaker": None, "orders": [],
           "positions": [{"symbol": "BTC/USDT:USDT", "size": "-0.5", "entry_price": "60000", "mark_price": "59000",
                          "unrealized_pnl": "500", "margin": "3000", "settle": "USDT"}]}
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(positions_table(StatusView({}, [row], 1, 0, 20)))
    text = console.export_text()
    assert re.search(r"perp\s+BTC/USDT:USDT\s+-0\.5\s+60000\s+59000\s+500\.00 USDT\s+3000\.00 USDT", text), text
    console.print(render(StatusView({}, [{**row, "positions": []}], 1, 0, 20)))
    assert "Positions (perpetuals): not wired yet" in console.export_text()
