"""The wider analysis of one session's normalized traces (SPEC §4), in one call.

:func:`analyze_session` chains event detection (:mod:`calim_helpers.events`), the
activity raster, synchronous network events against a shuffle threshold, the
correlation matrix and clusters of co-active ROIs, power spectra
(:mod:`calim_helpers.synchrony`) and the feature table (one row per ROI, ready for
machine learning). It takes the ``events`` and ``synchrony`` parameter sections as they
are; nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers import events as evt
from calim_helpers import synchrony as syn

__all__ = ["AMPLITUDE_UNITS", "SessionAnalysis", "analyze_session"]

#: Unit of event amplitudes for each normalization (``normalize`` attribute).
AMPLITUDE_UNITS = {"dff": "ΔF/F", "session": "corrected / S", "zscore": "noise σ"}


class SessionAnalysis(NamedTuple):
    """What :func:`analyze_session` returns."""

    events: pd.DataFrame
    """One row per event: session ids, ``roi``, ``frame``, ``time_s``, ``peak_dff``,
    ``amplitude``, ``duration_s``, ``snr``, ..., ``normalize``, ``trim_start``."""
    network: syn.NetworkEvents
    """Network events in frames, the chance threshold and the co-active fraction."""
    network_table: pd.DataFrame
    """The network events with ``start_s`` / ``end_s`` in seconds."""
    corr: np.ndarray
    """(roi, roi) Pearson correlation of the normalized traces."""
    clusters: np.ndarray
    """(roi,) cluster label of each ROI."""
    order: np.ndarray
    """ROI positions ordered by cluster (0-based)."""
    spectra: xr.DataArray | None
    """(roi, frequency) power spectra; None when the session has < 8 frames."""
    features: pd.DataFrame
    """One row per ROI: rates, amplitudes, durations, SNR, participation, ..."""


def analyze_session(ds: xr.Dataset, /, *, events: Mapping[str, Any],
                    synchrony: Mapping[str, Any]) -> SessionAnalysis:
    """Events, rates, spectra, network events, correlations, clusters and features.

    Parameters
    ----------
    ds : xarray.Dataset
        A session result of :func:`calim_helpers.correction.correct_traces`, loaded.
    events : mapping
        The ``events`` parameter section (keywords of
        :func:`calim_helpers.events.detect_events_dataset`).
    synchrony : mapping
        The ``synchrony`` parameter section: ``bin_frames``, ``n_shuffles``, ``alpha``
        (:func:`calim_helpers.synchrony.network_events`) and ``cluster_threshold``
        (:func:`calim_helpers.synchrony.cluster_rois`).

    Returns
    -------
    SessionAnalysis
    """
    ev = evt.detect_events_dataset(ds, **events)
    n_roi, n_time = ds.sizes["roi"], ds.sizes["time"]
    norm = ds["norm"].transpose("roi", "time")
    activity = syn.activity_matrix(ev, n_roi, n_time, rois=ds["roi"].values)
    valid = np.isfinite(norm.values).any(axis=0)
    network = syn.network_events(activity, bin_frames=int(synchrony["bin_frames"]),
                                 n_shuffles=int(synchrony["n_shuffles"]),
                                 alpha=float(synchrony["alpha"]), valid=valid,
                                 seed=int(ds.attrs.get("seed") or 0))
    time = ds["time"].values
    dt = float(np.median(np.diff(time))) if n_time > 1 else 1.0
    table = network.events.copy()
    starts = table["start_frame"].to_numpy(int)
    stops = table["stop_frame"].to_numpy(int)
    table["start_s"] = time[starts] if len(table) else []
    table["end_s"] = (time[stops - 1] + dt) if len(table) else []
    corr = syn.correlation_matrix(norm.values)
    clusters, order = syn.cluster_rois(corr, threshold=float(synchrony["cluster_threshold"]))
    features = syn.session_features(ds, ev, network, corr=corr, clusters=clusters)
    if "fit_status" in ds:  # converged | stable | failed (calim_helpers.baseline.arpls)
        features.insert(features.columns.get_loc("converged") + 1, "fit_status",
                        ds["fit_status"].values.astype(str))
    for t in (ev, features):
        t["normalize"] = ds.attrs.get("normalize")  # the unit of peak_dff and amplitudes
        t["trim_start"] = ds.attrs.get("trim_start")
    spectra = syn.power_spectra(norm) if n_time >= 8 else None
    return SessionAnalysis(ev, network, table, corr, np.asarray(clusters), np.asarray(order),
                           spectra, features)
