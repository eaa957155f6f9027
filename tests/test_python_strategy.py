"""A Python strategy whose code fails: that strategy pauses with the class, the method and
the error; its actor does not crash, its siblings go on; the Lab stops with the message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal as D

import pytest
import yaml
from conftest import fast_config_raw
from test_refusals import BIN, ENV, refused
from test_strategy_core import active_core, candle, events

from actors.messages import Resume
from actors.strategy.python import Intent, View, ask
from exchange.candles import Candle

USER_CODE = textwrap.dedent('''
    from actors.strategy.python import Intent

    class Raises:
        calls = 0

        def on_candle(self, candle, view):
            type(self).calls += 1
            raise ZeroDivisionError("boom")

    class Garbage:
        def on_candle(self, candle, view):
            return ["sell everything"]

    class BuysAlways:
        def on_candle(self, candle, view):
            return [Intent("buy", "always")]
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "user_strats.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_strats", None)
    yield "user_strats"
    sys.modules.pop("user_strats", None)


class Answers:
    def __init__(self, answer) -> None:
        self.answer = answer

    def on_candle(self, candle, view):
        return self.answer


CANDLE = Candle(0, D(1), D(1), D(1), D(1), D(1))
VIEW = View(D(0), 0, "BTC/USD")


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (None, "python: m:C.on_candle returned None, not a list; return a list of Intent('buy' or 'sell', reason), [] for nothing"),
        (["x"], "python: m:C.on_candle returned 'x' in its list, not an Intent; return a list of Intent('buy' or 'sell', reason), [] for nothing"),
        ([Intent("hold")], "python: m:C.on_candle returned Intent(side='hold', reason='python'): side must be 'buy' or 'sell' and "
                           "reason a str; return a list of Intent('buy' or 'sell', reason), [] for nothing"),
        ([Intent("buy", 3)], "python: m:C.on_candle returned Intent(side='buy', reason=3): side must be 'buy' or 'sell' and reason "
                             "a str; return a list of Intent('buy' or 'sell', reason), [] for nothing"),
        ("buy" * 100, "python: m:C.on_candle returned '" + "buy" * 26 + "…, "
                      "not a list; return a list of Intent('buy' or 'sell', reason), [] for nothing"),
    ],
)
def test_an_answer_that_is_not_a_list_of_intents_is_named_and_none_of_it_is_used(answer, problem):
    assert ask(Answers(answer), "m:C", CANDLE, VIEW) == ([], problem)
    assert ask(Answers([Intent("buy"), "x"]), "m:C", CANDLE, VIEW)[0] == []  # nothing of a bad answer
    assert ask(Answers((Intent("sell", "why"),)), "m:C", CANDLE, VIEW) == ([Intent("sell", "why")], None)


def test_user_code_that_raises_pauses_the_strategy_and_is_not_called_again_until_resumed(user_module):
    core = active_core(python=f"{user_module}:Raises", buy=None, sell=None)
    raises = sys.modules[user_module].Raises
    out = core.handle(candle(0, "100"), 1.0)  # no exception leaves the core
    problem = f"python: {user_module}:Raises.on_candle raised ZeroDivisionError: boom"
    [paused] = events(out, "strategy_paused")
    assert paused.reason == problem
    assert paused.payload == {"ts": 0}  # the candle it failed on
    assert core.paused == problem and core.status()["paused"] == problem
    core.handle(candle(1, "99"), 2.0)
    assert raises.calls == 1
    core.handle(Resume("dip", "operator"), 3.0)
    assert core.paused is None
    core.handle(candle(2, "98"), 4.0)
    assert raises.calls == 2 and core.paused == problem


def test_a_garbage_answer_pauses_the_strategy_and_places_nothing(user_module):
    core = active_core(python=f"{user_module}:Garbage", buy=None, sell=None)
    out = core.handle(candle(0, "100"), 1.0)
    assert core.paused == (f"python: {user_module}:Garbage.on_candle returned 'sell everything' in its list, not an "
                           "Intent; return a list of Intent('buy' or 'sell', reason), [] for nothing")
    assert [e.kind for e in events(out)] == ["evaluated", "strategy_paused"]


def test_the_lab_stops_at_the_failing_candle_with_the_message_and_exit_2(tmp_path, user_module):
    raw = fast_config_raw(tmp_path)
    raw["strategies"][0].update(python=f"{user_module}:Garbage")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**ENV, "PYTHONPATH": f"{tmp_path}:{ENV['PYTHONPATH']}"}
    result = subprocess.run([*BIN, "lab", "-c", str(config), "--strategy", "sma-cross", "--report", str(tmp_path / "r")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    refused(result, f"limitline: lab: strategy sma-cross stopped at the candle of 2017-07-01T11:00:00Z: python: {user_module}:Garbage"
                    ".on_candle returned 'sell everything' in its list, not an Intent")
    assert not (tmp_path / "r" / "report.json").exists()


async def test_in_run_the_failing_strategy_pauses_and_its_sibling_goes_on(tmp_path, user_module):
    import trio
    from helpers import Watch, node

    from supervisors.app import App
    from supervisors.config import parse_config

    raw = fast_config_raw(tmp_path)
    raw["venues"][0]["replay"]["BTC/USD"].update(lockstep=True)
    raw["strategies"][0].update(python=f"{user_module}:Raises")
    raw["supervision"] = {"max_restarts": 3, "period_seconds": 30}
    watch = Watch()
    app = App(parse_config(raw), echo=watch)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            # Well past the restarts a crash per candle would have needed to give up.
            await watch.until(lambda events: sum(e.kind == "evaluated" and e.strategy == "dip-buyer" for e in events) >= 40)
            snapshot = app.snapshot()
            nursery.cancel_scope.cancel()
    problem = f"python: {user_module}:Raises.on_candle raised ZeroDivisionError: boom"
    assert [e.reason for e in watch.of("strategy_paused")] == [problem]
    assert watch.count("child_restarting") == 0 and watch.count("child_exited") == 0 and watch.count("venue_isolated") == 0
    assert node(snapshot, "strategy:sma-cross")["status"]["paused"] == problem
    for name in ("strategy:sma-cross", "strategy:dip-buyer", "connection:sim"):
        assert node(snapshot, name)["incarnation"] == 1 and node(snapshot, name)["state"] == "running"
    assert node(snapshot, "strategy:dip-buyer")["status"]["paused"] is None



def test_a_sweep_stops_with_the_same_message_from_its_worker(tmp_path, user_module):
    raw = fast_config_raw(tmp_path)
    raw["strategies"][0].update(python=f"{user_module}:Garbage")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("strategy: sma-cross\nparameters:\n  offset: {set: [limit_offset_bps], low: 5, high: 10, step: 5}\n"
                     "search: grid\nobjective: sharpe\nwalk_forward: {windows: 2, in_sample: 0.7}\n")
    env = {**ENV, "PYTHONPATH": f"{tmp_path}:{ENV['PYTHONPATH']}"}
    result = subprocess.run([*BIN, "lab", "-c", str(config), "--sweep", str(sweep), "--workers", "2",
                             "--report", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=env)
    refused(result, f"limitline: lab --sweep: strategy sma-cross stopped at the candle of 2017-07-01T11:00:00Z: python: "
                    f"{user_module}:Garbage.on_candle returned 'sell everything' in its list, not an Intent")
    assert not (tmp_path / "r" / "sweep.json").exists()
