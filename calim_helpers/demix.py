"""Demixing of ROI traces: each ROI's own light, without its neighbours' and the background's.

An option beyond the lab's method (``neuropil.method: demix``). A ROI's mean holds, besides
its own cell, the light of neighbouring somata, of neurites and out-of-focus cells that
cross it and of the neuropil; a ring around the ROI (``annulus``, ``fitted``) estimates
only the last, and only as one number per frame. Here the downsampled movie on the ROIs
is explained by a linear model in the spirit of CNMF (Pnevmatikakis et al. 2016)::

    Y(x, t) = sum_k a_k(x) c_k(t) + S(x, t) + s_0(x) + noise

- ``a_k >= 0``: the spatial footprint of ROI ``k``'s cell, zero outside the ROI dilated by
  ``dilation_um``; ``c_k``: its trace. Footprints of neighbouring ROIs may overlap, so a
  touching soma's light is given to its own ROI.
- ``S``: the background at ``x``, the Gaussian-weighted mean (``surround_um``) of the
  pixels around ``x`` that lie outside every dilated ROI (normalized convolution), as
  CNMF-E estimates the background of a pixel from the pixels around it (Zhou et al.
  2018). It holds the local neuropil and, where they are seen next to the ROI, blurred
  out-of-focus cells. It is not fitted per pixel: a background free inside the
  footprint could take any part of a cell's trace that looks like it.
- ``s_0``: a constant per pixel (resting light that differs from the surround's).

Alternating least squares, ``n_iter`` times: with the traces fixed, the footprints, pixel
by pixel, non-negative, by coordinate descent as in HALS (Cichocki & Phan 2009); with the
footprints fixed, all traces jointly by least squares (every footprint overlapping a pixel
takes part). The traces start from the ROI means minus the mean of the pixels outside
every dilated ROI (the lab's ``raw - background``), which fixes their resting level (the
model cannot tell it from ``s_0``).

Each footprint is scaled so that its ROI-weighted mean is 1, so ``c_k`` is the own cell's
light in ROI ``k``'s coverage-weighted mean (the units of ``raw``). What the model gives
the other cells and the background inside the ROI is returned as ``contamination``;
``raw - contamination`` is the own light plus the ROI's share of the residual (noise and
what the model does not explain), with the noise of the ROI mean. On hard demo sessions
this ``raw - contamination`` gave better events than ``c_k`` itself (tuning seeds 1-6,
F1 0.789 against 0.771).

Measured (``benchmarks/bench_events.py --neuropil demix fitted``, hard demo sessions,
default event parameters; precision / recall / F1 / smallest-third recall):

- tuning seeds 1-6: ``demix`` 0.913 / 0.715 / 0.802 / 0.419, ``fitted`` 0.871 / 0.701 /
  0.777 / 0.405; seeds 7-16 (``benchmarks/bench_demix.py``, same scoring): ``demix``
  0.910 / 0.721 / 0.805 / 0.487, ``fitted`` 0.840 / 0.703 / 0.766 / 0.451.
- fresh seeds 1001-1010, run once with this code: ``demix`` 0.940 / 0.637 / 0.760 /
  0.323, ``fitted`` 0.882 / 0.664 / 0.758 / 0.379 (oracle traces 0.870 / 0.914 / 0.891 /
  0.806). False positives fall from 33 to 15 (those at a rise of the neuropil inside the
  ROI from 25 to 9), but fewer small transients pass ``events.min_amplitude``: the
  trace's gain on the own ΔF/F is as low as before (median 0.28, ``dff`` divides by the
  raw baseline) and lower for some ROIs (10th percentile 0.06 against 0.10).

Cost (this 2-core machine, shared; random 10-pixel disks, one call): 1.5 s for
60 ROIs and 2.2 s for 200 ROIs on a 150 x 256 x 344 movie (the footprint update is
solved per group of ROIs whose supports share pixels; solved for all ROIs at once it took
3.7 s and 48 s, with the same result to 1e-13).

What it cannot do: light with no ROI that is not seen around the ROI (a neurite under a
soma, a small out-of-focus cell behind it) stays in the trace; an unlabelled cell right
next to a ROI enters its surround and is subtracted, and so does the own cell's light
beyond ``dilation_um`` (a ROI drawn too small).

Examples
--------
Two overlapping disks with independent activity, on a flat background: the demixed
traces follow each disk's own activity, the raw means mix them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> yy, xx = np.mgrid[:24, :32]
>>> d1 = np.hypot(yy - 12, xx - 12) < 5
>>> d2 = np.hypot(yy - 12, xx - 19) < 5
>>> c1, c2 = rng.gamma(1.0, 20.0, (2, 80))
>>> movie = 100 + d1 * c1[:, None, None] + d2 * c2[:, None, None]
>>> movie = movie + rng.normal(0, 1, movie.shape)
>>> w = np.stack([d1, d2]).reshape(2, -1).astype(float)
>>> w /= w.sum(axis=1, keepdims=True)
>>> own, contamination, info = demix_traces(movie, w)
>>> raw = w @ movie.reshape(80, -1).T
>>> [round(float(np.std(own[k] - c)), 1) for k, c in enumerate((c1, c2))]  # noise 0.1
[0.2, 0.2]
>>> [round(float(np.std(raw[k] - c)), 1) for k, c in enumerate((c1, c2))]
[3.0, 3.2]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.sparse import csgraph

from calim_helpers._checks import check_int, check_number, check_spacing

__all__ = ["demix_traces"]


def _supports(w: sp.csr_matrix, grid: tuple[int, int], radius: tuple[float, float],
              dilation_um: float) -> sp.csr_matrix:
    """Boolean (roi, pixel) matrix: each ROI's footprint dilated by ``dilation_um``."""
    ny, nx = grid
    dy, dx = radius
    my, mx = int(math.ceil(dilation_um / dy)) + 1, int(math.ceil(dilation_um / dx)) + 1
    indptr, indices = [0], []
    for k in range(w.shape[0]):
        rows, cols = np.divmod(w.indices[w.indptr[k]:w.indptr[k + 1]], nx)
        y0, y1 = max(rows.min() - my, 0), min(rows.max() + my + 1, ny)
        x0, x1 = max(cols.min() - mx, 0), min(cols.max() + mx + 1, nx)
        not_roi = np.ones((y1 - y0, x1 - x0), dtype=bool)
        not_roi[rows - y0, cols - x0] = False
        near = ndimage.distance_transform_edt(not_roi, sampling=(dy, dx)) <= dilation_um
        ry, rx = np.nonzero(near)
        flat = ((ry + y0) * nx + (rx + x0)).astype(np.int64)
        indices.append(flat)
        indptr.append(indptr[-1] + flat.size)
    data = np.ones(indptr[-1], dtype=bool)
    return sp.csr_matrix((data, np.concatenate(indices), np.asarray(indptr)),
                         shape=(w.shape[0], ny * nx))


def _nn_coordinate_descent(gram: np.ndarray, q: np.ndarray, mask: np.ndarray,
                           x: np.ndarray, n_sweeps: int) -> np.ndarray:
    """Non-negative least squares for many pixels at once, by coordinate descent.

    Minimizes ``0.5 x^T G x - q^T x`` per column with ``x >= 0`` and ``x = 0`` where
    ``mask`` is False (HALS updates).
    """
    diag = np.diag(gram).copy()
    for _ in range(n_sweeps):
        for i in range(gram.shape[0]):
            if diag[i] <= 0:
                x[i] = 0.0
                continue
            x[i] = np.maximum(x[i] + (q[i] - gram[i] @ x) / diag[i], 0.0) * mask[i]
    return x


def _surround(y: np.ndarray, outside: np.ndarray, grid: tuple[int, int],
              sigma_px: tuple[float, float]) -> np.ndarray:
    """Gaussian-weighted mean of the outside pixels around every pixel, (time, pixel).

    Normalized convolution: ``G * (Y outside) / G * outside``; where no outside pixel is
    near (weight below 1e-6 of the peak), the mean of all outside pixels.
    """
    ny, nx = grid
    mask = outside.reshape(ny, nx).astype(np.float64)
    den = ndimage.gaussian_filter(mask, sigma_px, mode="constant", truncate=4.0)
    num = ndimage.gaussian_filter(y.reshape(-1, ny, nx) * mask, (0, *sigma_px),
                                  mode="constant", truncate=4.0)
    far = den < 1e-6 * den.max()
    out = num / np.where(far, 1.0, den)
    if far.any():
        out[:, far] = y[:, outside].mean(axis=1)[:, None]
    return out.reshape(y.shape)


def demix_traces(
    movie: Any,
    weights: Any,
    /,
    *,
    spacing_um: tuple[float, float] = (1.0, 1.0),
    dilation_um: float = 3.0,
    surround_um: float = 3.0,
    n_iter: int = 2,
    n_sweeps: int = 30,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Each ROI's own light and the light of everything else inside it, by demixing.

    Parameters
    ----------
    movie : array_like, shape (time, ny, nx)
        The downsampled movie (any real dtype; computed in float64).
    weights : scipy.sparse matrix or array_like, shape (n_roi, ny * nx)
        Each ROI's coverage weights on the grid, each row summing to 1
        (:func:`calim_helpers.traces.roi_weights`); ``weights @ frame`` is ``raw``.
    spacing_um : tuple of float, keyword-only
        ``(dy, dx)`` between grid pixel centres, µm. Default is (1.0, 1.0).
    dilation_um : float, keyword-only
        A footprint may reach this far beyond its ROI, µm, >= 0; pixels within it of any
        ROI never enter the background. Default is 3.0.
    surround_um : float, keyword-only
        Standard deviation of the Gaussian weights, µm, > 0, with which the background
        at a pixel is the mean of the pixels outside every dilated ROI around it.
        Default is 3.0 (tuned on hard demo seeds 1-16: 3 to 10 change events F1 by 0.02).
    n_iter : int, keyword-only
        Alternations (footprints, then traces), >= 1. Default is 2.
    n_sweeps : int, keyword-only
        Coordinate-descent sweeps of each footprint update, >= 1. Default is 30.

    Returns
    -------
    own : numpy.ndarray of float64, shape (n_roi, time)
        ``c_k``: ROI ``k``'s own cell's light in its coverage-weighted mean, the
        movie's units (its resting level is that of ``raw`` minus the mean of the
        pixels outside every dilated ROI).
    contamination : numpy.ndarray of float64, shape (n_roi, time)
        The model's light of the other footprints and of the background inside ROI
        ``k``; ``raw - contamination`` is the own light plus the ROI's share of the
        residual.
    info : dict
        ``"footprints"`` (scipy.sparse.csr_matrix, (n_roi, ny * nx), each scaled to a
        ROI-weighted mean of 1), ``"footprint_mass"`` (float64, (n_roi,): that mean
        before scaling, 0 for a ROI whose footprint vanished: its ``own`` is then 0),
        ``"n_background_pixels"`` (pixels outside every dilated ROI) and
        ``"residual_rms"`` (float64, (n_roi,): RMS over the ROI's support and time of
        the model's residual).

    Raises
    ------
    ValueError
        If the shapes do not match, a row of ``weights`` is empty, no pixel lies outside
        the dilated ROIs, or a parameter is invalid.

    References
    ----------
    Pnevmatikakis, E. A. et al. (2016). Simultaneous denoising, deconvolution, and
    demixing of calcium imaging data. *Neuron* 89, 285-299 (the linear model, footprints
    restricted to a neighbourhood, alternating updates).
    Zhou, P. et al. (2018). Efficient and accurate extraction of in vivo calcium signals
    from microendoscopic video data. *eLife* 7, e28728 (the background at a pixel from
    the pixels around it, CNMF-E's ring model).
    Cichocki, A. & Phan, A.-H. (2009). Fast local algorithms for large scale nonnegative
    matrix and tensor factorizations. *IEICE Trans. Fundamentals* E92-A, 708-721 (HALS).
    """
    y3 = np.asarray(movie, dtype=np.float64)
    if y3.ndim != 3:
        raise ValueError(f"movie must have shape (time, ny, nx), got {y3.shape}")
    n_time, ny, nx = y3.shape
    n_pix = ny * nx
    w = sp.csr_matrix(weights, dtype=np.float64) if sp.issparse(weights) \
        else sp.csr_matrix(np.asarray(weights, dtype=np.float64).reshape(
            np.shape(weights)[0], -1))
    if w.shape[1] != n_pix:
        raise ValueError(f"weights have {w.shape[1]} pixels per row, the movie's frames "
                         f"{ny} x {nx}")
    w.eliminate_zeros()
    if (np.diff(w.indptr) == 0).any():
        raise ValueError("weights: every ROI needs a pixel with a non-zero weight")
    dy, dx = check_spacing(spacing_um)
    dilation_um = check_number("dilation_um", dilation_um, low=0.0, strict=False)
    surround_um = check_number("surround_um", surround_um, low=0.0, strict=True)
    n_iter = check_int("n_iter", n_iter, low=1)
    n_sweeps = check_int("n_sweeps", n_sweeps, low=1)
    if n_time < 2:
        raise ValueError(f"movie needs at least 2 frames, got {n_time}")

    y = y3.reshape(n_time, n_pix)
    n_roi = w.shape[0]
    support = _supports(w, (ny, nx), (dy, dx), dilation_um)
    outside = np.ones(n_pix, dtype=bool)
    outside[support.indices] = False
    if not outside.any():
        raise ValueError(f"no pixel lies {dilation_um} µm away from every ROI: no "
                         "background to demix against; lower dilation_um")
    surround = _surround(y, outside, (ny, nx), (surround_um / dy, surround_um / dx))
    # the model on the support: Y - surround = sum_k a_k c_k + a constant per pixel
    on = np.flatnonzero(~outside)
    z = y[:, on] - surround[:, on]
    z_mean = z.mean(axis=0)
    z_c = z - z_mean
    mask = support[:, on].toarray().astype(np.float64)  # (roi, support pixel)
    # traces start as the lab's signal: ROI mean minus the mean outside every dilated ROI
    c = np.asarray(w @ y.T) - y[:, outside].mean(axis=1)[None, :]
    x = np.zeros((n_roi, on.size))
    # ROIs whose supports share no pixel do not interact in the footprint update: solve it
    # per connected group of supports (the same iterates, far less work for many ROIs)
    sup_on = support[:, on]
    n_groups, group = csgraph.connected_components(sup_on @ sup_on.T, directed=False)
    members = [np.flatnonzero(group == g) for g in range(n_groups)]
    columns = [np.flatnonzero(np.asarray(sup_on[m].sum(axis=0)).ravel()) for m in members]
    for _ in range(n_iter):
        c_c = c - c.mean(axis=1, keepdims=True)
        for m, cols in zip(members, columns, strict=True):
            cm = c_c[m]
            x[np.ix_(m, cols)] = _nn_coordinate_descent(
                cm @ cm.T, cm @ z_c[:, cols], mask[np.ix_(m, cols)], x[np.ix_(m, cols)],
                n_sweeps)
        mass = np.asarray(w[:, on].multiply(x).sum(axis=1)).ravel()
        alive = mass > 0
        # traces: all footprints jointly (the pixel constants fixed by the current traces)
        const = z_mean - c.mean(axis=1) @ x
        rhs = x @ (z - const).T
        gram = x @ x.T
        c_new = np.zeros_like(c)
        if alive.any():
            g = gram[np.ix_(alive, alive)]
            ridge = 1e-9 * max(float(np.trace(g)) / g.shape[0], 1e-300)
            c_new[alive] = np.linalg.solve(g + ridge * np.eye(g.shape[0]), rhs[alive])
        c = c_new
    const = z_mean - c.mean(axis=1) @ x
    # scale: each footprint's ROI-weighted mean is 1, so c_k is in the units of raw
    scale = np.where(alive, mass, 1.0)
    x = x / scale[:, None]
    own = np.where(alive[:, None], c * scale[:, None], 0.0)
    bg = surround.copy()
    bg[:, on] += const
    w_on = w[:, on]
    wa = np.asarray(w_on @ x.T)  # wa[k, j]: ROI k's weighted mean of footprint j
    np.fill_diagonal(wa, 0.0)
    contamination = np.asarray(w @ bg.T) + wa @ own
    resid = z - const - own.T @ x
    sup_count = mask.sum(axis=1)
    resid_rms = np.sqrt(mask @ (resid ** 2).sum(axis=0) / (sup_count * n_time))
    a = sp.lil_matrix((n_roi, n_pix))
    a[:, on] = x
    info = {"footprints": a.tocsr(), "footprint_mass": np.where(alive, mass, 0.0),
            "n_background_pixels": int(outside.sum()), "residual_rms": resid_rms}
    return own, contamination, info
