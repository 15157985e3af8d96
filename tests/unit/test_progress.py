"""The progress snapshot: totals shrink as records are dropped, the bar ends at 100%, cost only from given prices."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.errors import ConfigError
from synthgen.estimate import Prices
from synthgen.prices import PriceTable, load_prices
from synthgen.progress import describe_retries, snapshot
from synthgen.stats import RunStats, StagePlan


def two_generations() -> RunStats:
    """generate 400 -> dedup -> generate one answer each: 800 requests planned when nothing is dropped."""
    stats = RunStats()
    stats.plan = [StagePlan("00-generate", 0, 400, 400), StagePlan("01-exact_dedup", 400, 400, 0),
                  StagePlan("02-generate", 400, 400, 400)]
    return stats


def test_dropped_records_leave_the_totals_and_the_bar_ends_at_100_percent() -> None:
    stats = two_generations()
    gen, dedup, answer = (stats.stage(step.label) for step in stats.plan)
    gen.records_out = 200
    dedup.records_in, dedup.records_out, dedup.rejected = 200, 190, 10
    stats.planned_requests = stats.finished_requests = 200
    snap = snapshot(stats)
    assert (snap.stage, snap.stage_done, snap.stage_total) == ("00-generate", 200, 400)
    assert snap.total == 790  # 10 duplicates so far: their answers are not asked for
    gen.records_out = 400
    stats.finish_stage("00-generate")
    dedup.records_in, dedup.records_out, dedup.rejected = 400, 380, 20
    stats.finish_stage("01-exact_dedup")
    answer.records_in, answer.records_out, stats.planned_requests, stats.finished_requests = 100, 80, 500, 480
    snap = snapshot(stats)  # 20 answers still out: taken, not settled
    assert (snap.stage, snap.stage_number, snap.stage_done, snap.stage_total) == ("02-generate", 3, 80, 380)
    assert (snap.done, snap.total, snap.in_flight) == (480, 780, 20)  # the 20 duplicates ask nothing
    answer.records_in = answer.records_out = 380
    stats.planned_requests = stats.finished_requests = 780
    stats.finish_stage("02-generate")
    snap = snapshot(stats)
    assert (snap.done, snap.total, snap.stage_done, snap.stage_total, snap.eta_s) == (780, 780, 380, 380, 0.0)


def test_a_stage_holding_its_input_is_current_and_keeps_the_later_totals() -> None:
    stats = two_generations()
    gen, dedup = stats.stage("00-generate"), stats.stage("01-exact_dedup")
    gen.records_out = 400
    stats.finish_stage("00-generate")
    dedup.records_in = 198  # a batching stage: taken, nothing yielded or rejected yet
    snap = snapshot(stats)
    assert (snap.stage, snap.stage_done, snap.stage_total) == ("01-exact_dedup", 0, 400)
    assert snap.total == 800


def test_cost_is_tokens_times_the_given_price_and_absent_without_one() -> None:
    stats = two_generations()
    stats.count_tokens("big", 1_000_000, 200_000)
    stats.count_tokens("small", 3_000, 1_000)
    assert snapshot(stats).cost is None
    table = PriceTable({"big": Prices(2.0, 8.0)})
    snap = snapshot(stats, table)
    assert (snap.cost, snap.unpriced) == (None, ["small"])  # one model without a price: no cost at all
    table.by_model["small"] = Prices(0.5, 1.0)
    assert snapshot(stats, table).cost == pytest.approx(2.0 + 1.6 + 0.0015 + 0.001)
    stats.prompt_tokens += 500_000  # counted without a model (a Ray worker's totals): no per-model price applies
    assert snapshot(stats, table).unpriced == ["(model not recorded)"] and snapshot(stats, table).cost is None
    table.by_model["*"] = Prices(1.0, 1.0)
    assert snapshot(stats, table).cost == pytest.approx(2.0 + 1.6 + 0.0015 + 0.001 + 0.5)


def test_prices_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o-mini: {input: 0.15, output: 0.6}\n")
    table = load_prices(path, 1.0, None)
    assert table is not None and table.cost({"gpt-4o-mini": [10**6, 10**6], "other": [10**6, 0]}) == (1.75, [])
    assert load_prices(None, None, None) is None
    path.write_text("gpt-4o-mini: {input: cheap}\n")
    with pytest.raises(ConfigError, match="gpt-4o-mini"):
        load_prices(path, None, None)
    path.write_text("gpt-4o-mini: {input: 0.15\n")
    with pytest.raises(ConfigError, match=r"prices\.yaml.*line"):
        load_prices(path, None, None)
    with pytest.raises(ConfigError, match="file not found"):
        load_prices(tmp_path / "missing.yaml", None, None)


def test_retries_by_cause() -> None:
    assert describe_retries({"http_429": 12, "timeout": 3}) == "retries 15 (429: 12, timeout: 3)"
    assert describe_retries({}) == "retries 0"
