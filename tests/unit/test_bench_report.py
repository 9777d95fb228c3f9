"""The benchmark's statistics, tables and regression check (pure functions of bench/)."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.timeline import STAGES, TurnTiming


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.median(values) == pytest.approx(2.5)
    assert report.p90(values) == pytest.approx(3.7)
    assert report.percentile(values, 0) == 1.0
    assert report.percentile(values, 100) == 4.0
    assert report.median([]) is None
    assert report.p90([7.0]) == 7.0
    with pytest.raises(ValueError):
        report.percentile(values, 101)


def _turn(question: str, v2v: float | None, **stages: float) -> TurnTiming:
    return TurnTiming(question=question, voice_to_voice=v2v, stages=dict(stages))


def test_summary_names_medians_and_skips_unmeasured_turns():
    turns = [_turn("a", 1.0, llm=0.1), _turn("b", 3.0, llm=0.3), _turn("c", None)]
    summary = report.summarize_system("ours", turns, startup=2.5)
    assert summary["ours.v2v.median"] == pytest.approx(2.0)
    assert summary["ours.v2v.p90"] == pytest.approx(2.8)
    assert summary["ours.stage.llm.median"] == pytest.approx(0.2)
    assert summary["ours.stage.tts.median"] is None
    assert summary["ours.startup.median"] == 2.5
    assert "ours.barge_in_stop.median" not in summary


def test_table_pads_columns_and_has_a_markdown_rule():
    text = report.table(["a", "long header"], [["wide cell", "x"]])
    lines = text.splitlines()
    assert lines[0] == "| a         | long header |"
    assert lines[1] == "|-----------|-------------|"
    assert lines[2] == "| wide cell | x           |"


def test_comparison_table_pairs_questions_and_gives_the_ratio():
    ref = [_turn("q1", 3.0), _turn("q2", 2.0)]
    ours = [_turn("q1", 1.0), _turn("q2", 0.5)]
    text = report.comparison_table(ref, ours)
    assert "| q1 " in text and "3.000" in text and "1.000" in text
    median_row = next(line for line in text.splitlines() if "**median**" in line)
    assert "2.500" in median_row and "0.750" in median_row
    assert "0.30 (3.3x faster)" in text


def test_comparison_table_with_one_system_only():
    text = report.comparison_table(None, [_turn("q1", 1.0)])
    assert "| q1 " in text
    assert text.splitlines()[-1].rstrip().endswith("| -          |")


def test_turns_table_flags_early_responses_and_errors():
    early = _turn("q", 0.5, **dict.fromkeys(STAGES, 0.1))
    early.early_response = True
    early.transcript = "heard this"
    failed = TurnTiming(question="q2", error="no bot audio after the question")
    text = report.turns_table([early, failed])
    assert "[bot spoke early] heard" in text
    assert "no bot audio" in text
    assert text.count("\n") == 3


def test_regression_only_for_tracked_medians_beyond_tolerance():
    baseline = {
        "ours.v2v.median": 1.0,
        "ours.v2v.p90": 1.0,
        "ours.stage.llm.median": 0.05,
        "ours.barge_in_stop.median": 0.3,
        "reference.v2v.median": 3.0,
    }
    current = {
        "ours.v2v.median": 1.25,  # 25 % worse: regression
        "ours.v2v.p90": 5.0,  # p90 is not tracked
        "ours.stage.llm.median": 0.5,  # stages are not tracked
        "ours.barge_in_stop.median": 0.35,  # 17 % worse: within tolerance
        "reference.v2v.median": None,  # not measured this time
    }
    found = report.regressions(current, baseline)
    assert len(found) == 1
    assert found[0].startswith("REGRESSION: ours.v2v.median = 1.250 s vs baseline 1.000 s")
    assert report.regressions(current, baseline, tolerance=0.3) == []


def test_the_ours_to_reference_ratio_is_checked_across_machines():
    """On a slower CPU both systems are slower: the times say nothing, the ratio does."""
    baseline = {"ours.v2v.median": 0.6, "reference.v2v.median": 1.6}  # 0.375
    slower_machine = {"ours.v2v.median": 1.0, "reference.v2v.median": 2.9}  # 0.345
    assert report.regressions(slower_machine, baseline, same_machine=False) == []
    assert len(report.regressions(slower_machine, baseline)) == 2  # both times, same CPU
    worse = {"ours.v2v.median": 1.4, "reference.v2v.median": 2.9}  # 0.48: +29 %
    found = report.regressions(worse, baseline, same_machine=False)
    assert found == [
        "REGRESSION: ours / reference v2v median = 0.48 vs baseline 0.37 (+29 %, tolerance 20 %)"
    ]


def test_load_baseline_reads_the_summary(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"machine": {}, "summary": {"ours.v2v.median": 0.8, "x": "y"}}))
    assert report.load_baseline(path) == {"ours.v2v.median": 0.8}
    assert report.load_baseline(tmp_path / "missing.json") == {}
    assert report.baseline_cpu(path) is None
    path.write_text(json.dumps({"machine": {"cpu_model": "AMD EPYC"}, "summary": {}}))
    assert report.baseline_cpu(path) == "AMD EPYC"


def test_ratio_text():
    assert report.ratio_text(1.0, 3.0) == "0.33 (3.0x faster)"
    assert report.ratio_text(3.0, 2.0) == "1.50 (1.5x slower)"
    assert report.ratio_text(None, 3.0) == "-"
    assert report.ratio_text(1.0, 0.0) == "-"
