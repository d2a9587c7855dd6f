"""The tiny deterministic demo experiment that the nbval references were executed on."""

from __future__ import annotations

import shutil
from pathlib import Path

from calim_helpers import demo

REF_DIR = Path(__file__).resolve().parent / "notebooks"
DATA_DIR = REF_DIR / "_data"
OUT_DIR = REF_DIR / "_out"
NAME = "TINY"
# 200 frames of 48 x 64 pixels per session: 20 downsampled frames, 4 sessions
SPEC = {"n_frames": 200, "frame_shape": (48, 64), "seed": 7}


def write_tiny_experiment(*, fresh: bool = False) -> Path:
    """Write (or reuse) the tiny experiment; return its folder."""
    exp = DATA_DIR / NAME
    if fresh or not exp.exists():
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        demo.write_demo_experiment(DATA_DIR, name=NAME, **SPEC)
    return exp
