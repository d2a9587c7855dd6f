"""Synthetic inputs shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from roifile import ImagejRoi


def random_rois(n: int = 50, shape: tuple[int, int] = (512, 688), seed: int = 5
                ) -> list[ImagejRoi]:
    """Return ``n`` wobbly 40-vertex polygons of radius 5-15 px inside a ``shape`` frame."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        cx, cy = rng.uniform(20, shape[1] - 20), rng.uniform(20, shape[0] - 20)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        r = rng.uniform(5, 15, 40)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
        out.append(ImagejRoi.frompoints(pts, name=f"cell{k + 1}"))
    return out


def write_noise_session(folder: Path, *, n_frames: int = 1500,
                        frame_shape: tuple[int, int] = (512, 688)) -> Path:
    """Write a uint16 noise stack as Micro-Manager session ``folder/04-04-23/230404_5``."""
    from calim_helpers.synthetic.mmstack import write_mmstack

    rng = np.random.default_rng(0)
    ny, nx = frame_shape

    def frames():
        for start in range(0, n_frames, 100):
            yield rng.integers(90, 1500, (min(100, n_frames - start), ny, nx), dtype=np.uint16)

    session = folder / "04-04-23" / "230404_5"
    write_mmstack(session, "230404_5", frames(), n_frames=n_frames, frame_shape=frame_shape,
                  pixel_size_um=0.65, interval_ms=100.0)
    return session
