"""Orchestration: experiments, stores, steps, fan-out, notebooks and their views.

This layer sits above the science modules and is never imported by them:

- :mod:`~calim_helpers.workflow.experiment` -- an experiment's sessions and output paths;
- :mod:`~calim_helpers.workflow.steps` -- one body per step: read, call the science, write;
- :mod:`~calim_helpers.workflow.runner` -- a step over every session (threads or a dask
  cluster), failures isolated, status tables, progress through :mod:`logging`;
- :mod:`~calim_helpers.workflow.cluster` -- the dask cluster a run starts on this machine;
- :mod:`~calim_helpers.workflow.ahead` -- on a cluster, each session through its steps
  without waiting for the others or the notebooks;
- :mod:`~calim_helpers.workflow.record` -- ``run_record.json``;
- :mod:`~calim_helpers.workflow.papermill` -- ``calim run``: the notebooks under papermill;
- :mod:`~calim_helpers.workflow.views` -- what the notebooks display.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Experiment", "run_step"]


def __getattr__(name: str) -> Any:
    # imported when asked for: ``calim run``'s own process, which only runs the notebooks,
    # then never imports the steps and the science behind them
    if name == "Experiment":
        from calim_helpers.workflow.experiment import Experiment

        return Experiment
    if name == "run_step":
        from calim_helpers.workflow.runner import run_step

        return run_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
