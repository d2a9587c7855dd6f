"""Tests of calim_helpers.workflow.papermill: what a run reports (the runs are in test_cli)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from calim_helpers.workflow.papermill import (
    COMPARISON_OUTPUTS,
    NOTEBOOKS,
    STEP_OF,
    ExperimentRun,
    _drop_stale_comparison,
    _LineForwarder,
    _RunState,
    remove_comparison,
    stale_comparison,
)


def test_each_warning_is_reported_once_with_its_sessions():
    table = pd.DataFrame({"session": ["a", "b", "c"], "status": ["ok", "ok", "failed"],
                          "reason": ["", "", "broken"],
                          "warnings": ["W: x | W: y", "W: x", ""]})
    run = ExperimentRun("E", statuses={"load": table})
    assert run.warnings() == ["E a, b at step 'load': W: x", "E a at step 'load': W: y"]
    assert run.problems() == ["failed: E c at step 'load': broken"]
    assert run.failed and not run.produced  # no aggregate was written


def test_warnings_of_no_session_step_are_reported_with_where_they_arose():
    run = ExperimentRun("E", discovery=["CalimWarning: s1: no ROI set"],
                        experiment_warnings=[("aggregate", "CalimWarning: intervals differ"),
                                             ("aggregate", "CalimWarning: intervals differ")])
    assert run.warnings() == ["E finding the sessions: CalimWarning: s1: no ROI set",
                              "E at step 'aggregate': CalimWarning: intervals differ"]
    assert not run.failed and run.problems() == []


def test_kernel_stderr_is_forwarded_line_by_line():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("calim.kernel")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        sink = _LineForwarder("  ")
        sink.write("[calim] one\n[calim] tw")
        sink.write("o\nrest")
        sink.flush()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r.getMessage() for r in records] == ["  [calim] one", "  [calim] two", "  rest"]


def test_every_step_notebook_is_in_the_run():
    assert set(STEP_OF) <= set(NOTEBOOKS) and NOTEBOOKS[-1] == "05_aggregate"


@pytest.mark.parametrize(("aggregated", "rebuilt", "stale"), [
    (["A"], False, ["A"]),  # A alone re-run: the comparison holds A's old results
    (["B", "A"], False, ["A", "B"]),  # in the comparison's order
    ([], False, []),  # everything reused: nothing changed
    (["C"], False, []),  # another experiment: not in the comparison
    (["A", "B"], True, []),  # compared again by this run
])
def test_a_comparison_is_stale_when_its_tables_were_redone_without_it(aggregated, rebuilt,
                                                                       stale):
    assert stale_comparison(["A", "B"], aggregated, rebuilt=rebuilt) == stale


def _comparison(folder, experiments):
    folder.mkdir(parents=True)
    pd.DataFrame({"experiment": experiments, "cell_id": range(len(experiments))}).to_csv(
        folder / "comparison_cells.csv", index=False)
    for name in COMPARISON_OUTPUTS[1:]:
        (folder / name).write_text("x")


def test_remove_comparison_deletes_only_its_files(tmp_path):
    _comparison(tmp_path / "comparison", ["A", "B"])
    assert sorted(p.name for p in remove_comparison(tmp_path / "comparison")) == \
        sorted(COMPARISON_OUTPUTS)
    assert not (tmp_path / "comparison").exists()
    _comparison(tmp_path / "comparison", ["A", "B"])
    (tmp_path / "comparison" / "notes.txt").write_text("mine")
    (tmp_path / "comparison" / "condition_tests.csv").unlink()  # two experiments, no features
    assert len(remove_comparison(tmp_path / "comparison")) == len(COMPARISON_OUTPUTS) - 1
    assert [p.name for p in (tmp_path / "comparison").iterdir()] == ["notes.txt"]


def _after_run(out, aggregated, *, compared=False):
    runs = [ExperimentRun(n) for n in aggregated]
    for n in aggregated:
        (out / n).mkdir(parents=True)
        (out / n / "run_record.json").write_text("{}")
    state = _RunState(None, None, out, resume=True, on_workers=False,
                      aggregated=list(aggregated), compared=compared)
    _drop_stale_comparison(out, runs, state)
    return runs


def test_a_stale_comparison_is_removed_and_reported(tmp_path, caplog):
    _comparison(tmp_path / "comparison", ["B", "A", "A"])
    with caplog.at_level(logging.WARNING, logger="calim.run"):
        (run,) = _after_run(tmp_path, ["A"])
    assert not (tmp_path / "comparison").exists()
    expected = (f"{tmp_path / 'comparison'} compared experiments B, A and was removed "
                "because A's tables were redone")
    assert run.warnings()[0].startswith(f"A after the run: {expected}")
    assert "give the experiments together" in run.warnings()[0]
    assert caplog.messages[0].startswith(expected)
    record = json.loads((tmp_path / "A" / "run_record.json").read_text())
    assert record["warnings"] == run.other_warnings()


@pytest.mark.parametrize(("aggregated", "compared"), [([], False), (["A"], True), (["C"], False)])
def test_a_current_comparison_is_kept(tmp_path, aggregated, compared):
    _comparison(tmp_path / "comparison", ["A", "B"])
    runs = _after_run(tmp_path, aggregated, compared=compared)
    assert sorted(p.name for p in (tmp_path / "comparison").iterdir()) == \
        sorted(COMPARISON_OUTPUTS)
    assert all(r.warnings() == [] for r in runs)
