"""Readers of the committed ImageJ reference fixtures (tests/fixtures/imagej/)."""

from __future__ import annotations

import csv
from pathlib import Path

FIX = Path(__file__).resolve().parent / "fixtures" / "imagej"
# ROIs of the zoo that calim_helpers.rois.rasterize refuses, with the reason's wording
UNSUPPORTED = {"rect_rounded": "rounded corners"}


def imagej_means() -> dict[str, list[float]]:
    """{roi name: [mean per frame]} from ImageJ's Multi Measure table."""
    means: dict[str, dict[int, float]] = {}
    with open(FIX / "multimeasure.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            _, name, _ = row["Label"].split(":")
            means.setdefault(name, {})[int(row["Slice"])] = float(row["Mean"])
    return {k: [v[t] for t in sorted(v)] for k, v in means.items()}
