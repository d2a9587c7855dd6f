"""Orchestration: experiments, stores, steps, fan-out, notebooks and their views.

This layer sits above the science modules and is never imported by them:

- :mod:`~calim_helpers.workflow.experiment` -- an experiment's sessions and output paths;
- :mod:`~calim_helpers.workflow.steps` -- one body per step: read, call the science, write;
- :mod:`~calim_helpers.workflow.runner` -- a step over every session (threads or a dask
  cluster), failures isolated, status tables, progress through :mod:`logging`;
- :mod:`~calim_helpers.workflow.record` -- ``run_record.json``;
- :mod:`~calim_helpers.workflow.papermill` -- ``calim run``: the notebooks under papermill;
- :mod:`~calim_helpers.workflow.views` -- what the notebooks display.
"""

from calim_helpers.workflow.experiment import Experiment
from calim_helpers.workflow.runner import run_step

__all__ = ["Experiment", "run_step"]
