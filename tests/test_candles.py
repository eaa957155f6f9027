"""Candle files: the bundled data loads; bad files are refused with the row that shows why."""

from __future__ import annotations

import pickle
from datetime import datetime
from decimal import Decimal

import pytest

from exchange.candles import CandleDataError, CandleSeries, bundled_path, find_gaps, load_candles, read_candles
from exchange.replay import ReplayFeed

HEADER = "timestamp,open,high,low,close,volume\n"


def test_bundled_btc_usd_1h_loads_whole():
    candles = load_candles(bundled_path())
    assert len(candles) == 20111
    assert candles[0].close == Decimal("2509.17")
    assert all(b.ts - a.ts == 3600 for a, b in zip(candles, candles[1:]))
    assert (bundled_path().parent / "CREDITS.md").read_text().count("CryptoDataDownload") >= 1


@pytest.mark.parametrize(
    "rows, message",
    [
        ("2020-01-01T00:00:00Z,1,2,1,2,5\n2020-01-01T00:00:00Z,1,2,1,2,5\n", r":3: duplicate timestamp"),
        ("2020-01-01T01:00:00Z,1,2,1,2,5\n2020-01-01T00:00:00Z,1,2,1,2,5\n2020-01-01T02:00:00Z,1,2,1,2,5\n",
         r":4: out-of-order timestamp '2020-01-01T02:00:00Z' \(the rows before it are newest first\)"),
        ("1577836800000,1,2,1,2,5\n2020-01-01T01:00:00Z,1,2,1,2,5\n", r":3: timestamp '2020-01-01T01:00:00Z' is not in epoch"),
        ("1577836800500,1,2,1,2,5\n", r":2: timestamp '1577836800500' \(epoch milliseconds\) is not a whole second"),
        ("2020-01-01T00:00:00Z,1,2,1,2\n", r":2: expected 6 columns, got 5"),
        ("2020-01-01T00:00:00Z,1,abc,1,2,5\n", r":2: high 'abc' is not a number"),
        ("2020-01-01T00:00:00Z,1,2,-1,2,5\n", r":2: low must be a finite number >= 0"),
        ("2020-01-01T00:00:00Z,1.5,1,2,1.5,5\n", r":2: high 1 is below low 2"),
        ("yesterday,1,2,1,2,5\n", r":2: timestamp 'yesterday' is not ISO-8601 or epoch milliseconds"),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(CandleDataError, match=message):
        load_candles(path)


def test_a_wrong_header_and_a_missing_file_are_explained(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("time,o,h,l,c,v\n")
    with pytest.raises(CandleDataError, match="header must be timestamp,open,high,low,close,volume"):
        load_candles(path)
    with pytest.raises(CandleDataError, match="cannot read the file"):
        load_candles(tmp_path / "missing.csv")



def test_a_file_that_is_not_a_csv_of_text_is_named_with_its_row(tmp_path):
    binary = tmp_path / "photo.csv"
    binary.write_bytes(HEADER.encode() + b"2020-01-01T00:00:00Z,1,2,1,2,5\n" + bytes(range(128, 256)) * 100)
    with pytest.raises(CandleDataError) as caught:
        load_candles(binary)
    assert str(caught.value) == (
        f"{binary}:3: not UTF-8 text; a candle file is a CSV of UTF-8 text with the header timestamp,open,high,low,close,volume"
    )
    one_line = tmp_path / "one-line.csv"
    one_line.write_text(HEADER + "x" * 200_000 + "\n")
    with pytest.raises(CandleDataError, match=r":2: not readable as CSV \(field larger than field limit"):
        load_candles(one_line)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["col"] * 10_000) + "\n")
    with pytest.raises(CandleDataError) as caught:
        load_candles(wide)
    assert str(caught.value).endswith("got ['col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', 'col', '…")


def test_replay_releases_candles_as_time_passes():
    candles = load_candles(bundled_path())[:10]
    feed = ReplayFeed(candles, speed=2.0, started_at=100.0)
    assert feed.due(100.4) == []
    assert feed.due(100.5) == candles[:1]
    assert feed.due(102.0) == candles[1:4]
    assert feed.next_release() == 102.5
    assert feed.due(1000) == candles[4:]
    assert feed.finished and feed.due(2000) == []


def test_an_exchange_export_newest_first_in_epoch_milliseconds_reads_as_the_bundled_file(tmp_path):
    lines = bundled_path().read_text().splitlines()[1:501]
    export = tmp_path / "export.csv"
    rows = []
    for line in reversed(lines):  # newest first, as exports often are
        stamp, rest = line.split(",", 1)
        ms = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
        rows.append(f"{ms},{rest}")
    export.write_text(HEADER + "\n".join(rows) + "\n")
    read = read_candles(export)
    assert read.handling == ("timestamps in epoch milliseconds (read as UTC)", "rows newest first: reversed to oldest first")
    assert list(read.candles) == load_candles(bundled_path())[:500]
    seconds = tmp_path / "seconds.csv"
    seconds.write_text(HEADER + "1577836800,1,2,1,2,5\n1577840400,1,2.5,1,2.5,6\n")
    assert read_candles(seconds).handling == ("timestamps in epoch seconds (read as UTC)",)
    assert read_candles(bundled_path()).handling == ()


def test_a_candle_series_keeps_every_value_exactly_and_slices_without_copying(tmp_path):
    path = tmp_path / "exact.csv"
    path.write_text(HEADER + "2020-01-01T00:00:00Z,2505.560,2600,2500.00,2505.56,0.000000001\n"
                    "2020-01-01T01:00:00Z,1E+2,123456789012345678901234.5,1e-3,1E+2,12345678901234567890\n")
    series = read_candles(path).candles
    first, second = series
    assert (repr(first.open), repr(first.high), repr(first.low), repr(first.volume)) == (
        "Decimal('2505.560')", "Decimal('2600')", "Decimal('2500.00')", "Decimal('1E-9')")
    assert second.high == Decimal("123456789012345678901234.5") and second.volume == Decimal("12345678901234567890")
    assert repr(second.open) == "Decimal('1E+2')"  # more digits than int64: kept as Decimals, exactly
    whole = read_candles(bundled_path()).candles
    part = whole[100:200]
    assert isinstance(part, CandleSeries) and len(part) == 100 and part[0] == whole[100] and part[-1] == whole[199]
    assert part.timestamps().base is not None  # a view of the file's column
    assert list(part.closes()) == [float(c.close) for c in part]
    assert pickle.loads(pickle.dumps(part)) == part
    with pytest.raises(IndexError):
        part[100]


def test_gaps_are_found_in_a_series_and_a_list_alike(tmp_path):
    path = tmp_path / "gap.csv"
    start = 1577836800
    path.write_text(HEADER + "".join(f"{(start + ts) * 1000},1,2,1,2,5\n" for ts in (0, 3600, 7200, 18000, 21600)))
    series = read_candles(path).candles
    assert find_gaps(series) == find_gaps(list(series)) == [{"after": start + 7200, "before": start + 18000, "missing": 2}]
