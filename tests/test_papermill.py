"""Tests of calim_helpers.workflow.papermill: what a run reports (the runs are in test_cli)."""

from __future__ import annotations

import logging

import pandas as pd

from calim_helpers.workflow.papermill import NOTEBOOKS, STEP_OF, ExperimentRun, _LineForwarder


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
