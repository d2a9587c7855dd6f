"""Shared test set-up: the nbval references need their tiny demo experiment on disk."""

from __future__ import annotations

import shutil


def pytest_configure(config):
    """Before nbval re-runs tests/notebooks/*.ipynb, write the data they were run on."""
    if getattr(config.option, "nbval_lax", False) or getattr(config.option, "nbval", False):
        from nbval_data import OUT_DIR, write_tiny_experiment

        write_tiny_experiment(fresh=True)
        shutil.rmtree(OUT_DIR, ignore_errors=True)
