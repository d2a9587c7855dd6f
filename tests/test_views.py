"""Tests of calim_helpers.workflow.views: what the notebooks show, on the shared run."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from calim_helpers.params import load_params
from calim_helpers.workflow import Experiment, views


@pytest.fixture(scope="module")
def one(e2e):
    return Experiment.open(e2e.experiment, e2e.out, ["230404_9"])  # the session that moves


@pytest.fixture(scope="module")
def every(e2e):
    return Experiment.open(e2e.experiment, e2e.out)


def _pngs(figures):
    return [f for f in figures if not isinstance(f, Figure)]


def test_one_session_shows_its_own_figures(one):
    heatmap = load_params()["heatmap"]
    load = views.show_load(one)
    assert len(load) == 3 and {p.name for p in _pngs(load)} == {
        "230404_9_shifts.png", "230404_9_registration.png"}
    assert len(views.show_rois(one)) == 2
    arpls = views.show_arpls(one, heatmap=heatmap)
    assert len(arpls) == 2 * views.N_EXAMPLE_ROIS
    assert all(isinstance(f, Figure) for f in arpls)
    analysis = {p.name for p in views.show_analysis(one)}
    assert {"230404_9_raster.png", "230404_9_qc.png"} <= analysis


def test_every_session_shows_the_experiment_picture(every):
    heatmap = load_params()["heatmap"]
    for figures in (views.show_load(every), views.show_rois(every),
                    views.show_arpls(every, heatmap=heatmap)):
        assert len(figures) == 1 and isinstance(figures[0], Figure)
    load_title = views.show_load(every)[0]._suptitle.get_text()
    assert "motion" in load_title
    assert isinstance(views.show_analysis(every)[0], Figure)  # sessions side by side


def test_figures_display_as_png_images(one, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    views.show_load(one)._ipython_display_()
    assert len(shown) == 3
    assert all(obj.format == "png" and obj.data[:8] == b"\x89PNG\r\n\x1a\n" for obj in shown)


def test_refit_and_redetect_follow_the_science_functions(e2e):
    from calim_helpers import baseline, events

    results = views.open_session_results(e2e.out, e2e.experiment, "230404_5")
    refit = views.refit_roi(results, 2, lam=1000.0)
    signal = results.result["signal"].sel(roi=2).values.astype(float)
    ref, _ = baseline.arpls(signal, lam=1000.0)
    np.testing.assert_allclose(refit["baseline"].values[0], ref, rtol=1e-4)
    assert refit.attrs["lam"] == 1000.0
    cut = views.refit_roi(results, 2, cutoff_s=30.0)
    assert cut.attrs["cutoff_s"] == 30.0
    assert cut.attrs["lam"] == pytest.approx(baseline.lam_from_cutoff(30.0, 1.0))
    low = views.redetect_events(results, 2, threshold=2.0, prominence=2.0)
    high = views.redetect_events(results, 2, threshold=6.0, prominence=6.0)
    assert len(high) <= len(low)
    direct = events.detect_events_dataset(results.result.sel(roi=[2]),
                                          **(load_params()["events"]
                                             | {"threshold": 2.0, "prominence": 2.0}))
    assert low["frame"].tolist() == direct["frame"].tolist()
    assert len(views.show_refit(results, refit)) == 1
    assert len(views.show_events(results, 2, low)) == 1
    with pytest.raises(ValueError, match=r"roi must be one of 1\.\.\d+ in DEMO"):
        views.refit_roi(results, 99)
