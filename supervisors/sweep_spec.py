"""A sweep file (``limitline lab --sweep SWEEP.yaml``): which parameters of a strategy to
vary, how to search them, what to optimise, and how to keep the verdict out of sample.

```yaml
strategy: sma-cross              # a strategy of the config (or --strategy)
parameters:                      # name: a range (low, high, step) or choices
  fast: {set: [buy.fast, sell.fast], low: 3, high: 15, step: 2}   # one value, several fields
  slow: {set: [buy.slow, sell.slow], choices: [20, 30, 50]}
  limit_offset_bps: {low: -20, high: 10, step: 5}                  # set: defaults to the name
search: grid                     # every combination; or tpe (Optuna's TPE sampler)
trials: 100                      # tpe: parameter sets tried per window
batch: 8                         # tpe: sets asked for at once (the same on every executor)
seed: 1                          # tpe: its random seed
objective: sharpe                # sharpe | return | profit_factor (all maximised)
max_drawdown: 0.25               # a set whose in-sample drawdown exceeds it is never chosen
min_trades: 1                    # nor one with fewer trades (sells) in sample
walk_forward: {windows: 3, in_sample: 0.7}
heatmap: [fast, slow]            # the two parameters of the heatmap (default: the first two)
```

A field path is a dotted path into the strategy's config (``buy.fast``, ``take_profit_pct``,
``buy.of.0.period`` into a list). Each parameter set is built into the strategy's settings
through the config's own structuring, then its parameters are checked as pre-flight checks
them: a set that fails (``fast`` not below ``slow``) is reported with the reason and never
run. Every problem of the file itself is a :class:`~supervisors.config.ConfigError` naming
the field (``parameters.fast.step: must be greater than 0, got -1``).
"""

from __future__ import annotations

import copy
import itertools
import math
from decimal import Decimal
import re
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from actors.strategy.preflight import parameter_problems
from actors.strategy.settings import StrategySettings
from supervisors.config import (  # the config's reading and structuring, so the errors read alike
    DEFAULT_CONFIG,
    MAX_CONFIG_BYTES,
    ConfigError,
    YamlTooLarge,
    _converter,
    _shown,
    _structure_problems,
    read_yaml,
)

#: The most parameter sets a grid may hold (each is a backtest per walk-forward window).
MAX_GRID = 100_000
MAX_TRIALS = 100_000
OBJECTIVES = ("sharpe", "return", "profit_factor")

Value = int | Decimal | str | bool | None


@attrs.frozen
class Parameter:
    """One parameter: ``low``..``high`` (inclusive) by ``step``, or ``choices``; its value is
    written at every path of ``set`` (default: the parameter's name)."""

    set: list[str] | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    step: Decimal | None = None
    choices: list[Any] | None = None


@attrs.frozen
class WalkForward:
    """The candles are cut into ``windows`` consecutive slices of equal length; in each, the
    first ``in_sample`` share chooses the parameters and the rest tests them."""

    windows: int = 3
    in_sample: Decimal = Decimal("0.7")


@attrs.frozen
class Sweep:
    parameters: dict[str, Parameter]
    strategy: str | None = None
    search: Literal["grid", "tpe"] = "grid"
    trials: int = 100
    batch: int = 8
    seed: int = 1
    objective: Literal["sharpe", "return", "profit_factor"] = "sharpe"
    max_drawdown: Decimal | None = None
    min_trades: int = 1
    walk_forward: WalkForward = WalkForward()
    heatmap: list[str] | None = None

    def paths(self, name: str) -> list[str]:
        return self.parameters[name].set or [name]


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; :class:`ConfigError` with every problem, by field."""
    source = str(path)
    try:
        data = Path(path).read_bytes()[: MAX_CONFIG_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(source, ["the sweep file does not exist"]) from None
    except OSError as error:
        raise ConfigError(source, [f"the sweep file cannot be read: {error.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(source, [f"sweep: the file is larger than {MAX_CONFIG_BYTES:,} bytes"])
    try:
        raw = read_yaml(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(source, ["sweep: not UTF-8 text; save the sweep file as UTF-8"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"sweep: not valid YAML: {where}{getattr(error, 'problem', None) or error}"]) from None
    except (YamlTooLarge, ValueError) as error:
        raise ConfigError(source, [f"sweep: {error}"]) from None
    return parse_sweep(raw, source)


def parse_sweep(raw: Any, source: str = "sweep") -> Sweep:
    if not isinstance(raw, dict):
        raise ConfigError(source, ["sweep: must be a mapping with parameters (see the README's Strategy Lab)"])
    # Every problem at once: a field that cannot be read (an unknown key, a value of the
    # wrong type or outside its choices) is named and left at its default, so that the rest
    # of the file is still checked.
    problems: list[str] = []
    data, dropped = dict(raw), set()
    while True:
        try:
            sweep = _converter.structure(data, Sweep)
            break
        except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as error:
            found = _structure_problems(error)
            problems += found
            bad = {m.group(0) for m in map(_TOP_KEY.match, found) if m} & (set(data) - dropped)
            if not bad:
                raise ConfigError(source, problems) from None
            dropped |= bad
            for key in bad:
                if key == "parameters":
                    data[key] = {}
                else:
                    del data[key]
    if "parameters" in dropped:
        dropped.add("heatmap")  # names parameters that could not be read
    checked = check_sweep(sweep)
    if "search" in dropped:  # the grid's own rules would judge a search the file did not ask for
        checked = [p for p in checked if "a grid needs" not in p and "the grid holds" not in p]
    problems += [p for p in checked if (m := _TOP_KEY.match(p)) is None or m.group(0) not in dropped]
    if problems:
        raise ConfigError(source, problems)
    return sweep


_TOP_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_sweep(sweep: Sweep) -> list[str]:
    problems: list[str] = []

    def need(condition: bool, path: str, message: str) -> None:
        if not condition:
            problems.append(f"{path}: {message}")

    need(bool(sweep.parameters), "parameters", "name at least one parameter to vary")
    for name, p in sweep.parameters.items():
        at = f"parameters.{name}"
        ranged = p.low is not None or p.high is not None or p.step is not None
        if p.choices is not None:
            need(not ranged, at, "give either low, high (and step) or choices, not both")
            need(bool(p.choices), f"{at}.choices", "must list at least one value")
            for i, choice in enumerate(p.choices):
                need(choice is None or isinstance(choice, (int, float, str, bool)), f"{at}.choices[{i}]",
                     f"must be a number, text or true/false, got {_shown(choice)}")
        else:
            need(p.low is not None and p.high is not None, at, "give low and high (and step), or choices")
            if p.low is not None and p.high is not None:
                need(p.low <= p.high, f"{at}.high", f"must be at least low ({p.low}), got {p.high}")
            if p.step is not None:
                need(p.step > 0, f"{at}.step", f"must be greater than 0, got {p.step}")
            elif sweep.search == "grid":
                problems.append(f"{at}.step: a grid needs a step (or choices) for every parameter")
        for j, path in enumerate(sweep.paths(name)):
            need(bool(path) and all(path.split(".")), f"{at}.set[{j}]" if p.set else at,
                 f"must be a dotted path into the strategy's config like buy.fast, got {_shown(path)}")
    if not problems and sweep.search == "grid":
        size = grid_size(sweep)
        need(size <= MAX_GRID, "parameters", f"the grid holds {size:,} parameter sets, more than {MAX_GRID:,}; "
                                             "use larger steps, fewer choices, or search: tpe")
    need(1 <= sweep.trials <= MAX_TRIALS, "trials", f"must be between 1 and {MAX_TRIALS:,}, got {sweep.trials}")
    need(1 <= sweep.batch <= 1000, "batch", f"must be between 1 and 1000, got {sweep.batch}")
    need(sweep.max_drawdown is None or Decimal(0) < sweep.max_drawdown <= 1, "max_drawdown",
         f"must be a fraction greater than 0 and at most 1 (0.25 is 25 %), got {sweep.max_drawdown}")
    need(sweep.min_trades >= 0, "min_trades", f"must be 0 or more, got {sweep.min_trades}")
    wf = sweep.walk_forward
    need(1 <= wf.windows <= 100, "walk_forward.windows", f"must be between 1 and 100, got {wf.windows}")
    need(Decimal(0) < wf.in_sample < 1, "walk_forward.in_sample",
         f"must be a fraction between 0 and 1 (0.7: the first 70 % of each window chooses), got {wf.in_sample}")
    if sweep.heatmap is not None:
        need(len(sweep.heatmap) == 2, "heatmap", f"must name two parameters, got {len(sweep.heatmap)}")
        for i, name in enumerate(sweep.heatmap):
            need(name in sweep.parameters, f"heatmap[{i}]", f"is not a parameter of the sweep {_shown(sorted(sweep.parameters))}")
    return problems


def _is_int(*values: Decimal | None) -> bool:
    return all(v is None or v == v.to_integral_value() for v in values)


def values(p: Parameter) -> list[Value]:
    """Every value of a grid parameter, in order: its choices, or low, low+step, ... <= high.
    Whole numbers stay whole (a window length of 5, not 5.0)."""
    if p.choices is not None:
        return list(p.choices)
    if p.low is None or p.high is None or p.step is None:
        raise ValueError("a grid parameter needs low, high and step, or choices")
    count = int((p.high - p.low) / p.step) + 1
    out = [p.low + i * p.step for i in range(count)]
    return [int(v) for v in out] if _is_int(p.low, p.step) else [v.normalize() if v else Decimal(0) for v in out]


def grid_size(sweep: Sweep) -> int:
    return math.prod(len(values(p)) for p in sweep.parameters.values())


def grid(sweep: Sweep) -> list[dict[str, Value]]:
    """Every combination, the first parameter varying slowest."""
    names = list(sweep.parameters)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values(sweep.parameters[n]) for n in names))]


# ------------------------------------------------------------- building settings


class StrategyTemplate:
    """A strategy's raw config, into which parameter values are written and built into
    :class:`StrategySettings` by the config's own structuring."""

    def __init__(self, config_path: str | Path | None, name: str) -> None:
        source = Path(config_path) if config_path is not None else DEFAULT_CONFIG
        raw = read_yaml(source.read_text(encoding="utf-8-sig"))  # already checked by load_config
        strategies = raw.get("strategies", [])
        index = next(i for i, s in enumerate(strategies) if s.get("name") == name)
        self.raw: dict[str, Any] = strategies[index]
        self.name = name
        self.where = f"strategies[{index}]"

    def check_paths(self, sweep: Sweep) -> list[str]:
        """Each path must lead into a mapping (or list) the strategy's config has, and every
        value of the parameter must be one its field takes (a whole number for ``buy.fast``);
        the limits pre-flight checks (``fast`` below ``slow``) are left to each set."""
        problems = []
        for name, parameter in sweep.parameters.items():
            missing = []
            for path in sweep.paths(name):
                try:
                    _set(copy.deepcopy(self.raw), path, 0)
                except (KeyError, IndexError, TypeError) as error:
                    missing.append(f"parameters.{name}: cannot set {path} in strategy {self.name}: {error.args[0]}")
            problems += missing
            if missing:
                continue
            samples = parameter.choices if parameter.choices is not None else (
                values(parameter) if parameter.step is not None else [parameter.low, parameter.high])
            for value in samples:
                raw = copy.deepcopy(self.raw)
                for path in sweep.paths(name):
                    _set(raw, path, _yaml_value(value))
                try:
                    _converter.structure(raw, StrategySettings)
                except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as error:
                    wrong = "; ".join(_structure_problems(error))
                    problems.append(f"parameters.{name}: value {_yaml_value(value)} in strategy {self.name}: {wrong}")
                    break
        return problems

    def build(self, sweep: Sweep, chosen: dict[str, Value]) -> tuple[StrategySettings | None, str | None]:
        """The settings with ``chosen`` written in, or why this parameter set cannot run."""
        raw = copy.deepcopy(self.raw)
        for name, value in chosen.items():
            for path in sweep.paths(name):
                _set(raw, path, _yaml_value(value))
        try:
            settings = _converter.structure(raw, StrategySettings)
        except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as error:
            return None, "; ".join(_structure_problems(error))
        problems = parameter_problems(settings)
        return (None, "; ".join(problems)) if problems else (settings, None)


def _yaml_value(value: Value) -> Any:
    """A parameter's value as YAML would have given it: a Decimal as the float with the same
    digits (the config reads a number's shortest text exactly, and an int field then says
    ``expected a whole number, got 20.5``), or as text when no float has its digits."""
    if isinstance(value, Decimal):
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    return value


def _set(raw: Any, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for i, part in enumerate(parents):
        where = ".".join(parents[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise IndexError(f"{where}: no item {part} in a list of {len(node)}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise KeyError(f"the strategy has no {where} (add it to the config first)")
            node = node[part]
        else:
            raise TypeError(f"{where} is a value, not a mapping or list")
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise IndexError(f"{path}: no item {leaf} in a list of {len(node)}")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise TypeError(f"{'.'.join(parents)} is a value, not a mapping or list")
