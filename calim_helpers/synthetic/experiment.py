"""The demo experiment: four planned sessions, written to disk with their ground truth.

:func:`plan_experiment` simulates (without pixels) the sessions of the demo
experiment, two date folders with two sessions each that differ in the ways the
lab's data differ (cell count, bleaching, motion, ROI naming and location, a ROI
partly outside the frame); :func:`write_demo_experiment`, the only function of the
synthetic package that writes files besides the Micro-Manager writer it calls,
streams them to disk in the SPEC §1 layout beside a ``<name>_truth`` folder.

Examples
--------
>>> from calim_helpers.synthetic.experiment import SESSION_NAMES, plan_experiment
>>> SESSION_NAMES
('230404_5', '230404_9', '230405_2', '230405_7')
>>> [(p.date, p.name, p.roi_path) for p in plan_experiment(
...     sessions=["230405_2"], n_frames=10, frame_shape=(48, 64))]
[('05-04-23', '230405_2', 'Rois/Rois.zip')]
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calim_helpers.synthetic._common import _check_positive, _check_shape
from calim_helpers.synthetic.expert_rois import imagej_rois
from calim_helpers.synthetic.mmstack import write_mmstack
from calim_helpers.synthetic.scene import soma_footprints
from calim_helpers.synthetic.session import (
    HARD_TRUTH_FIELDS,
    TRUTH_FIELDS,
    DemoSession,
    iter_frames,
    session_truth,
    simulate_session,
)

__all__ = [
    "SESSION_NAMES",
    "PlannedSession",
    "plan_experiment",
    "plan_sessions",
    "write_demo_experiment",
    "write_sessions",
]


class _Recipe(NamedTuple):
    date: str
    session: str
    n_small: int
    n_full: int
    motion: bool
    bleach_fraction: float
    roi_path: str
    roi_naming: str
    roi_outside: bool


# Two date folders x two sessions; the sessions differ in cell count, bleaching,
# motion, ROI naming, ROI file location (230405_2 uses Rois/Rois.zip) and one ROI
# partly outside the frame (230405_7).
_RECIPES = (
    _Recipe("04-04-23", "230404_5", 10, 60, False, 0.30, "ROIs/ROIs.zip", "fiji", False),
    _Recipe("04-04-23", "230404_9", 12, 75, True, 0.25, "ROIs/ROIs.zip", "fiji", False),
    _Recipe("05-04-23", "230405_2", 8, 45, False, 0.40, "Rois/Rois.zip", "cell", False),
    _Recipe("05-04-23", "230405_7", 11, 80, False, 0.20, "ROIs/ROIs.zip", "fiji", True),
)
SESSION_NAMES = tuple(r.session for r in _RECIPES)

_SMALL = {"n_frames": 600, "frame_shape": (96, 128)}
_FULL = {"n_frames": 1500, "frame_shape": (512, 688)}


class PlannedSession(NamedTuple):
    """One session of the demo experiment, before anything is written.

    Attributes
    ----------
    date : str
        Date folder, ``dd-mm-yy``.
    name : str
        Session folder, ``<yymmdd>_<n>``.
    roi_path : str
        ROI set relative to the session folder (``"ROIs/ROIs.zip"`` or ``"Rois/Rois.zip"``).
    session : DemoSession
        The simulated session.
    info : dict
        Scalars of the recipe (written to ``session.json``).
    """

    date: str
    name: str
    roi_path: str
    session: DemoSession
    info: dict


def _fitting_count(
    shape: tuple[int, int],
    count: int,
    pixel_size_um: float,
    diameter_um: tuple[float, float],
    seed: int,
) -> int:
    """Largest neuron count <= ``count`` whose somata can be placed in the frame."""
    for n in range(count, 0, -1):
        try:
            soma_footprints(
                shape, n, pixel_size_um=pixel_size_um, diameter_um=diameter_um, seed=seed
            )
        except ValueError:
            continue
        return n
    raise ValueError(
        f"frame_shape {shape} is too small for somata at pixel_size_um={pixel_size_um!r}"
    )


def plan_experiment(
    *,
    full_size: bool = False,
    seed: int = 0,
    sessions: Sequence[str] | None = None,
    n_frames: int | None = None,
    frame_shape: Sequence[int] | None = None,
    n_neurons: int | None = None,
    pixel_size_um: float = 0.65,
    frame_interval_s: float = 0.1,
    difficulty: str = "default",
    neuropil_strength: float = 1.0,
) -> list[PlannedSession]:
    """Simulate (without pixels) the sessions of the demo experiment.

    Two date folders with two sessions each: 04-04-23/230404_5, 04-04-23/230404_9,
    05-04-23/230405_2 and 05-04-23/230405_7. They differ in neuron count (10, 12,
    8, 11 small; 60, 75, 45, 80 full size), bleaching (30, 25, 40, 20%), motion
    (only 230404_9 moves), ROI naming (230405_2 uses ``cell_01``..., the others
    Fiji's ``yyyy-xxxx``), ROI location (230405_2 has ``Rois/Rois.zip``) and
    230405_7 has a ROI reaching out of the frame.

    Parameters
    ----------
    full_size : bool, optional
        Lab size, 1500 frames of 512 x 688, instead of 600 frames of 96 x 128.
        Default is False.
    seed : int, optional
        Experiment seed; session ``k`` uses ``SeedSequence([seed, k])``. Default is 0.
    sessions : sequence of str, optional
        Only these sessions (names from ``SESSION_NAMES``). Default is None (all).
    n_frames : int, optional
        Override the number of frames. Default is None (from ``full_size``).
    frame_shape : tuple of int, optional
        Override ``(y, x)``. Default is None (from ``full_size``).
    n_neurons : int, optional
        Override every session's neuron count. Default is None (per session).
        Either way the count is lowered to what fits the frame, and in frames
        under 3 x 15 µm / ``pixel_size_um`` the somata are drawn smaller than
        10-15 µm (at most a third of the short side), so tiny test frames work.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.
    difficulty : {"default", "hard"}, optional
        ``"hard"``: the sessions of :func:`~calim_helpers.synthetic.hard.simulate_hard_session`
        (1.5x the neuron counts above, soma radius 4-9 µm, shrunk in tiny frames),
        with the same layout, bleaching, motion and ROI files. Default is "default".
    neuropil_strength : float, optional
        Factor on the neuropil brightness. Default is 1.0.

    Returns
    -------
    list of PlannedSession
        In date then session order.

    Raises
    ------
    ValueError
        If ``sessions`` names an unknown session or the frame is too small.
    """
    if difficulty not in ("default", "hard"):
        raise ValueError(f"difficulty must be 'default' or 'hard', got {difficulty!r}")
    if sessions is not None:
        unknown = sorted(set(sessions) - set(SESSION_NAMES))
        if unknown:
            raise ValueError(f"sessions must be among {SESSION_NAMES}, got unknown {unknown}")
    size = _FULL if full_size else _SMALL
    n_frames = size["n_frames"] if n_frames is None else int(n_frames)
    shape = _check_shape(size["frame_shape"] if frame_shape is None else frame_shape)
    _check_positive("pixel_size_um", pixel_size_um)
    # somata at most a third of the frame's short side (only tiny test frames shrink them)
    largest_um = min(shape) / 3.0 * pixel_size_um
    diameter_um = (10.0, 15.0) if largest_um >= 15.0 else (largest_um * 2 / 3, largest_um)

    planned = []
    for index, recipe in enumerate(_RECIPES):
        if sessions is not None and recipe.session not in sessions:
            continue
        session_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        wanted = recipe.n_full if full_size else recipe.n_small
        if difficulty == "hard":
            wanted = round(1.5 * wanted) if n_neurons is None else int(n_neurons)
            session = _hard_session(
                n_frames, shape, wanted, pixel_size_um=pixel_size_um,
                frame_interval_s=frame_interval_s, neuropil_strength=neuropil_strength,
                bleach_fraction=recipe.bleach_fraction, motion=recipe.motion,
                roi_naming=recipe.roi_naming, roi_outside=recipe.roi_outside, seed=session_seed)
            info = {"date": recipe.date, "session": recipe.session,
                    "experiment_seed": int(seed), **_hard_info(session),
                    "roi_file": recipe.roi_path, "roi_naming": recipe.roi_naming,
                    "roi_partly_outside": recipe.roi_outside}
            planned.append(
                PlannedSession(recipe.date, recipe.session, recipe.roi_path, session, info))
            continue
        wanted = wanted if n_neurons is None else int(n_neurons)
        count = _fitting_count(shape, wanted, pixel_size_um, diameter_um, session_seed)
        session = simulate_session(
            n_frames,
            shape,
            count,
            frame_interval_s=frame_interval_s,
            pixel_size_um=pixel_size_um,
            diameter_um=diameter_um,
            neuropil_strength=neuropil_strength,
            bleach_fraction=recipe.bleach_fraction,
            motion=recipe.motion,
            roi_naming=recipe.roi_naming,
            roi_outside=recipe.roi_outside,
            seed=session_seed,
        )
        info = {
            "date": recipe.date,
            "session": recipe.session,
            "experiment_seed": int(seed),
            "seed": session_seed,
            "n_frames": n_frames,
            "frame_shape": list(shape),
            "n_neurons": count,
            "pixel_size_um": float(pixel_size_um),
            "frame_interval_s": float(frame_interval_s),
            "diameter_um": list(diameter_um),
            "bleach_fraction": recipe.bleach_fraction,
            "motion": recipe.motion,
            "roi_file": recipe.roi_path,
            "roi_naming": recipe.roi_naming,
            "roi_partly_outside": recipe.roi_outside,
            "gain": session.gain,
            "read_noise": session.read_noise,
            "offset": session.offset,
            "tau_rise_s": session.tau_rise_s,
            "tau_decay_s": session.tau_decay_s,
        }
        planned.append(PlannedSession(recipe.date, recipe.session, recipe.roi_path, session, info))
    return planned


def _hard_session(
    n_frames: int, shape: tuple[int, int], wanted: int | None, *, pixel_size_um: float,
    seed: int, **kwargs,
) -> DemoSession:
    """Simulate a hard session with the largest neuron count <= ``wanted`` that fits.

    The soma radii (4-9 µm) shrink in frames under 54 µm so that the largest is at
    most a sixth of the frame's short side.
    """
    from calim_helpers.synthetic.hard import hard_neuron_count, hard_somata, simulate_hard_session

    largest_um = min(shape) / 6.0 * pixel_size_um
    radius_um = (4.0, 9.0) if largest_um >= 9.0 else (largest_um * 4 / 9, largest_um)
    if wanted is None:
        wanted = hard_neuron_count(shape, pixel_size_um=pixel_size_um)
    for count in range(int(wanted), 0, -1):
        try:
            hard_somata(shape, count, pixel_size_um=pixel_size_um, radius_um=radius_um, seed=seed)
        except ValueError:
            continue
        return simulate_hard_session(n_frames, shape, count, pixel_size_um=pixel_size_um,
                                     radius_um=radius_um, seed=seed, **kwargs)
    raise ValueError(
        f"frame_shape {shape} is too small for somata at pixel_size_um={pixel_size_um!r}")


def _hard_info(session: DemoSession) -> dict:
    """Scalars of a hard session for ``session.json``."""
    extras = session.extras
    assert extras is not None
    return {
        "difficulty": extras.difficulty,
        "seed": session.seed,
        "n_frames": session.n_frames,
        "frame_shape": list(session.frame_shape),
        "n_neurons": session.n_neurons,
        "n_rois": len(session.roi_polygons),
        "pixel_size_um": session.pixel_size_um,
        "frame_interval_s": session.frame_interval_s,
        "neuropil_strength": extras.neuropil_strength,
        "n_dim": int(extras.dim.sum()),
        "n_rare": int(extras.rare.sum()),
        "n_touching": int(extras.touching.sum()),
        "n_unlabelled": int(extras.unlabelled.sum()),
        "n_bad_rois": int((extras.roi_quality != 0).sum()),
        "n_out_of_focus": int((extras.contaminant_kind == "out_of_focus").sum()),
        "n_neurites": int((extras.contaminant_kind == "neurite").sum()),
        "bleach_fraction": round(float(1.0 - session.bleach[-1]), 6),
        "motion": bool(np.any(session.shifts != 0)),
        "gain": session.gain,
        "read_noise": session.read_noise,
        "offset": session.offset,
        "tau_rise_s": session.tau_rise_s,
        "tau_decay_s": session.tau_decay_s,
    }


def plan_sessions(
    seeds: Sequence[int],
    /,
    *,
    difficulty: str = "hard",
    n_frames: int = 600,
    frame_shape: Sequence[int] = (96, 128),
    n_neurons: int | None = None,
    neuropil_strength: float = 1.0,
    motion: bool = False,
    pixel_size_um: float = 0.65,
    frame_interval_s: float = 0.1,
    date: str = "01-01-24",
) -> list[PlannedSession]:
    """Simulate (without pixels) one session per seed, for held-out benchmark data.

    Session ``k`` is ``<date>/<yymmdd>_<seed>`` and is simulated with exactly that
    seed, so anyone can regenerate it from the seed alone.

    Parameters
    ----------
    seeds : sequence of int
        One session per seed, distinct, >= 0.
    difficulty : {"hard", "default"}, optional
        Preset. Default is "hard".
    n_frames : int, optional
        Frames per session (20-60 for short test recordings). Default is 600.
    frame_shape : tuple of int, optional
        ``(y, x)``. Default is (96, 128).
    n_neurons : int, optional
        In-focus neurons (capped to what fits). Default is None: 2000 per mm² for
        "hard", 10 for "default".
    neuropil_strength : float, optional
        Factor on the neuropil brightness. Default is 1.0.
    motion : bool, optional
        Rigid motion in every session. Default is False.
    pixel_size_um, frame_interval_s : float, optional
        Defaults are 0.65 µm and 0.1 s.
    date : str, optional
        Date folder ``dd-mm-yy``. Default is "01-01-24".

    Returns
    -------
    list of PlannedSession
        In the order of ``seeds``; ROIs in ``ROIs/ROIs.zip``.
    """
    if difficulty not in ("default", "hard"):
        raise ValueError(f"difficulty must be 'default' or 'hard', got {difficulty!r}")
    seeds = [int(v) for v in seeds]
    if len(set(seeds)) != len(seeds) or any(v < 0 for v in seeds):
        raise ValueError(f"seeds must be distinct ints >= 0, got {seeds!r}")
    day = datetime.datetime.strptime(date, "%d-%m-%y")
    shape = _check_shape(frame_shape)
    planned = []
    for seed in seeds:
        name = f"{day:%y%m%d}_{seed}"
        if difficulty == "hard":
            session = _hard_session(
                n_frames, shape, n_neurons, pixel_size_um=pixel_size_um,
                frame_interval_s=frame_interval_s, neuropil_strength=neuropil_strength,
                motion=motion, seed=seed)
            info = {"date": date, "session": name, **_hard_info(session),
                    "roi_file": "ROIs/ROIs.zip"}
        else:
            largest_um = min(shape) / 3.0 * pixel_size_um
            diameter_um = (10.0, 15.0) if largest_um >= 15.0 else (largest_um * 2 / 3, largest_um)
            count = _fitting_count(shape, 10 if n_neurons is None else int(n_neurons),
                                   pixel_size_um, diameter_um, seed)
            session = simulate_session(
                n_frames, shape, count, frame_interval_s=frame_interval_s,
                pixel_size_um=pixel_size_um, diameter_um=diameter_um, motion=motion,
                neuropil_strength=neuropil_strength, seed=seed)
            info = {"date": date, "session": name, "difficulty": "default", "seed": seed,
                    "n_frames": n_frames, "frame_shape": list(shape), "n_neurons": count,
                    "pixel_size_um": pixel_size_um, "frame_interval_s": frame_interval_s,
                    "neuropil_strength": neuropil_strength, "motion": motion,
                    "roi_file": "ROIs/ROIs.zip"}
        planned.append(PlannedSession(date, name, "ROIs/ROIs.zip", session, info))
    return planned


def _start_time(date: str, name: str) -> str:
    """Return a Micro-Manager 2.0 ``StartTime`` for a demo session: its date, a morning hour.

    Examples
    --------
    >>> _start_time("04-04-23", "230404_5")
    '2023-04-04 09:35:00.000 +0200'
    """
    day = datetime.datetime.strptime(date, "%d-%m-%y")
    n = int(name.rsplit("_", 1)[1])
    return f"{day:%Y-%m-%d} {9 + n % 5:02d}:{(7 * n) % 60:02d}:00.000 +0200"


def write_demo_experiment(
    out_dir: str | Path,
    /,
    *,
    name: str = "DEMO",
    full_size: bool = False,
    seed: int = 0,
    sessions: Sequence[str] | None = None,
    n_frames: int | None = None,
    frame_shape: Sequence[int] | None = None,
    n_neurons: int | None = None,
    pixel_size_um: float = 0.65,
    frame_interval_s: float = 0.1,
    difficulty: str = "default",
    neuropil_strength: float = 1.0,
    chunk_frames: int = 50,
    max_file_bytes: int = 4_000_000_000,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic experiment of :func:`plan_experiment` with its ground truth.

    Layout (SPEC §1)::

        out_dir/<name>/<dd-mm-yy>/<yymmdd>_<n>/<yymmdd>_<n>_MMStack_Pos0.ome.tif
                                               <yymmdd>_<n>_MMStack_Pos0_metadata.txt
                                               ROIs/ROIs.zip  (Rois/Rois.zip in 230405_2)
        out_dir/<name>_truth/README.txt
        out_dir/<name>_truth/<dd-mm-yy>/<yymmdd>_<n>/truth.npz, session.json

    Pixels are generated ``chunk_frames`` frames at a time and streamed to
    :func:`~calim_helpers.synthetic.mmstack.write_mmstack`, so memory stays far below
    a session's size.

    Parameters
    ----------
    out_dir : str or Path
        Folder that receives ``<name>`` and ``<name>_truth``.
    name : str, optional
        Experiment name. Default is "DEMO".
    full_size : bool, optional
        Lab size (1500 frames of 512 x 688, 45-80 neurons, about 1 GB a session)
        instead of the small default (600 frames of 96 x 128, 8-12 neurons).
        Default is False.
    seed : int, optional
        Experiment seed. Default is 0.
    sessions : sequence of str, optional
        Write only these sessions (e.g. ``["230404_5"]``). Default is None (all).
    n_frames : int, optional
        Override the number of frames. Default is None (from ``full_size``).
    frame_shape : tuple of int, optional
        Override ``(y, x)``. Default is None (from ``full_size``).
    n_neurons : int, optional
        Override every session's neuron count (capped to what fits). Default is None.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.
    difficulty : {"default", "hard"}, optional
        Preset of :func:`plan_experiment`; the truth of a hard session has the
        extra fields of ``HARD_TRUTH_FIELDS``. Default is "default".
    neuropil_strength : float, optional
        Factor on the neuropil brightness. Default is 1.0.
    chunk_frames : int, optional
        Frames generated and handed to the writer at a time. Default is 50.
    max_file_bytes : int, optional
        Stack file size past which the writer starts a continuation file.
        Default is 4_000_000_000.
    overwrite : bool, optional
        Allow writing into existing, non-empty output folders. Default is False.

    Returns
    -------
    Path
        ``out_dir/<name>``, the experiment folder.

    Raises
    ------
    FileExistsError
        If an output folder exists, is not empty and ``overwrite`` is False.
    ValueError
        If ``sessions`` names an unknown session or the frame is too small.
    """
    out_dir = Path(out_dir)
    _check_free(out_dir, name, overwrite)
    planned = plan_experiment(
        full_size=full_size,
        seed=seed,
        sessions=sessions,
        n_frames=n_frames,
        frame_shape=frame_shape,
        n_neurons=n_neurons,
        pixel_size_um=pixel_size_um,
        frame_interval_s=frame_interval_s,
        difficulty=difficulty,
        neuropil_strength=neuropil_strength,
    )
    return write_sessions(out_dir, planned, name=name, chunk_frames=chunk_frames,
                          max_file_bytes=max_file_bytes, overwrite=overwrite)


def _check_free(out_dir: Path, name: str, overwrite: bool) -> None:
    for folder in (out_dir / name, out_dir / f"{name}_truth"):
        if not overwrite and folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and is not empty (pass overwrite=True)")


def write_sessions(
    out_dir: str | Path,
    planned: Sequence[PlannedSession],
    /,
    *,
    name: str = "DEMO",
    chunk_frames: int = 50,
    max_file_bytes: int = 4_000_000_000,
    overwrite: bool = False,
) -> Path:
    """Write planned sessions (:func:`plan_experiment`, :func:`plan_sessions`) to disk.

    Same layout and truth as :func:`write_demo_experiment`: ``out_dir/<name>/<date>/
    <session>/`` (Micro-Manager stack, metadata, ROI zip) and
    ``out_dir/<name>_truth/<date>/<session>/truth.npz, session.json``, with
    ``README.txt`` (``TRUTH_FIELDS``, plus ``HARD_TRUTH_FIELDS`` when a session is hard).

    Parameters
    ----------
    out_dir : str or Path
        Folder that receives ``<name>`` and ``<name>_truth``.
    planned : sequence of PlannedSession
        The sessions.
    name : str, optional
        Experiment name. Default is "DEMO".
    chunk_frames, max_file_bytes, overwrite
        As in :func:`write_demo_experiment`.

    Returns
    -------
    Path
        ``out_dir/<name>``.
    """
    import roifile

    out_dir = Path(out_dir)
    _check_free(out_dir, name, overwrite)
    exp_dir, truth_dir = out_dir / name, out_dir / f"{name}_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    readme = TRUTH_FIELDS
    if any(plan.session.extras is not None for plan in planned):
        readme += HARD_TRUTH_FIELDS
    (truth_dir / "README.txt").write_text(readme, encoding="utf-8")
    for plan in planned:
        session = plan.session
        sess_dir = exp_dir / plan.date / plan.name
        sess_truth = truth_dir / plan.date / plan.name
        sess_dir.mkdir(parents=True, exist_ok=True)
        sess_truth.mkdir(parents=True, exist_ok=True)

        np.savez_compressed(sess_truth / "truth.npz", **session_truth(session))
        info = {"experiment": name, **plan.info}
        (sess_truth / "session.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

        roi_file = sess_dir / plan.roi_path
        roi_file.parent.mkdir(parents=True, exist_ok=True)
        rois = imagej_rois(session.roi_polygons, session.roi_names, roi_type=session.roi_type)
        roifile.roiwrite(roi_file, rois, mode="w")

        write_mmstack(
            sess_dir,
            plan.name,
            iter_frames(session, chunk_frames=chunk_frames),
            n_frames=session.n_frames,
            frame_shape=session.frame_shape,
            pixel_size_um=session.pixel_size_um,
            interval_ms=session.frame_interval_s * 1000.0,
            max_file_bytes=max_file_bytes,
            summary={"Comment": f"CALIM synthetic demo {name}, seed {session.seed}",
                     "StartTime": _start_time(plan.date, plan.name)},
        )
    return exp_dir
