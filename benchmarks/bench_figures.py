"""The three per-ROI PNGs of a session: a new figure per ROI vs one figure per kind, reused.

Usage::

    .venv/bin/python benchmarks/bench_figures.py [--store RESULT_ZARR] [--rois 50]
        [--frames 1500] [--repeats 2] [--chunk 5] [--pdf]

Without ``--store``, builds a result Dataset the way the pipeline does: synthetic
``raw`` and ``background`` traces (``--rois`` x ``--frames`` downsampled frames, 1 s
per frame) corrected by ``calim_helpers.correction.correct_traces`` with the arPLS
parameters of ``calim_helpers/data/default.yaml``. Both ways save every PNG with
``calim_helpers.io.save_figure`` at ``figures.dpi`` of that file, as the arPLS step
does:

- ``old``: ``roi_raw_figure`` / ``roi_clean_figure`` / ``roi_norm_figure`` per ROI (a
  new Figure each);
- ``new``: ``roi_figure_pages`` for each kind, the same three figures redrawn per ROI;
- ``images``: ``roi_figure_images`` for each kind (what the arPLS step does): only what a
  ROI changes is drawn over a background kept from ROI to ROI, saved by
  ``calim_helpers.io.save_png`` (rows unfiltered, zlib level 1);
- ``pillow``: the same images saved by Pillow at the same zlib level
  (``matplotlib.image.imsave``, what ``save_png`` did before ``io.png_bytes``).

Each way goes over all ROIs of the session (``--repeats`` times), each into its own
temporary folder; they advance alternately, ``--chunk`` ROIs at a time, so that all see
the same load on a shared machine (the new way's figures are built once per session
pass, in its first chunk). Printed: the median over chunks of the seconds per ROI (three
figures), the ratio of those medians and the median of the chunk-by-chunk ratios. The
PNGs of both ways are then decoded and compared pixel by pixel. ``--pdf`` also times one
multi-page PDF per session (``matplotlib.backends.backend_pdf.PdfPages``, three pages
per ROI) from the same pages.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.image import imread, imsave

from calim_helpers import correction, io, params
from calim_helpers.plots import traces
from calim_helpers.workflow.steps import roi_file_names, time_unit

OLD = (traces.roi_raw_figure, traces.roi_clean_figure, traces.roi_norm_figure)


def synthetic_result(n_roi: int, n_time: int, arpls: dict, normalize: str,
                     trim_start: int, seed: int = 0) -> xr.Dataset:
    """A corrected session: bleaching ROIs with transients over a decaying background."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time, dtype=float)
    background = 300 + 40 * np.exp(-t / (n_time / 3)) + rng.normal(0, 2, n_time)
    level = rng.uniform(30, 2000, (n_roi, 1))  # y ranges differing from ROI to ROI
    raw = background + level * (1 + 0.25 * np.exp(-t / rng.uniform(n_time / 10, n_time,
                                                                   (n_roi, 1))))
    for k in range(n_roi):
        for onset in rng.choice(n_time - 10, size=rng.poisson(n_time / 50), replace=False):
            raw[k, onset:] += (rng.uniform(0.1, 0.6) * level[k, 0]
                               * np.exp(-(t[onset:] - onset) / rng.uniform(2, 10)))
    raw += rng.normal(0, 1, raw.shape) * np.sqrt(level)
    tr = xr.Dataset(
        {"raw": (("roi", "time"), raw.astype(np.float32)),
         "background": ("time", background.astype(np.float32))},
        coords={"roi": np.arange(1, n_roi + 1), "time": t,
                "roi_name": ("roi", [f"cell{k + 1}" for k in range(n_roi)])},
        attrs={"experiment": "BENCH", "date": "04-04-23", "session": "230404_5",
               "frame_interval_s_downsampled": 1.0})
    return correction.correct_traces(tr, lam=arpls["lam"], cutoff_s=arpls["cutoff_s"],
                                     tol=arpls["tol"], max_iter=arpls["max_iter"],
                                     normalize=normalize, trim_start=trim_start)


def save_old(ds: xr.Dataset, folder: Path, dpi: int) -> Iterator[None]:
    """As the arPLS step saves them today: one new figure per ROI and kind (per ROI)."""
    unit = time_unit(ds)
    for n, files in roi_file_names("s", ds["roi"].values.tolist()).items():
        for fig_fn, fname in zip(OLD, files, strict=True):
            io.save_figure(fig_fn(ds, n, time_unit=unit), folder / fname, dpi=dpi)
        yield


def save_new(ds: xr.Dataset, folder: Path, dpi: int) -> Iterator[None]:
    """One figure per kind for the session, redrawn for each ROI (per ROI)."""
    unit = time_unit(ds)
    names = roi_file_names("s", ds["roi"].values.tolist())
    pages = [traces.roi_figure_pages(ds, kind, time_unit=unit)
             for kind in traces.ROI_FIGURE_KINDS]
    for roi_pages in zip(*pages, strict=True):  # ((n, raw), (n, clean), (n, norm))
        n = roi_pages[0][0]
        for (_, fig), fname in zip(roi_pages, names[n], strict=True):
            io.save_figure(fig, folder / fname, dpi=dpi)
        yield


def _save_images(ds: xr.Dataset, folder: Path, dpi: int,
                 save: Callable[[np.ndarray, Path], object]) -> Iterator[None]:
    """One figure per kind, only what each ROI changes drawn again; ``save`` writes each."""
    unit = time_unit(ds)
    names = roi_file_names("s", ds["roi"].values.tolist())
    images = [traces.roi_figure_images(ds, kind, time_unit=unit, dpi=dpi)
              for kind in traces.ROI_FIGURE_KINDS]
    for roi_images in zip(*images, strict=True):
        n = roi_images[0][0]
        for (_, image), fname in zip(roi_images, names[n], strict=True):
            save(image, folder / fname)
        yield


def save_images(ds: xr.Dataset, folder: Path, dpi: int) -> Iterator[None]:
    """One figure per kind, only what each ROI changes drawn again (per ROI)."""
    return _save_images(ds, folder, dpi, lambda image, path: io.save_png(image, path, dpi=dpi))


def save_images_pillow(ds: xr.Dataset, folder: Path, dpi: int) -> Iterator[None]:
    """As :func:`save_images`, each image encoded by Pillow (per ROI)."""
    return _save_images(ds, folder, dpi, lambda image, path: imsave(
        path, image, format="png", dpi=dpi, pil_kwargs={"compress_level": 1}))


def save_pdf(ds: xr.Dataset, folder: Path, dpi: int) -> Iterator[None]:
    """All pages of the session in one PDF, ROI by ROI: raw, clean, normalized (per ROI)."""
    unit = time_unit(ds)
    pages = [traces.roi_figure_pages(ds, kind, time_unit=unit)
             for kind in traces.ROI_FIGURE_KINDS]
    with PdfPages(folder / "s_rois.pdf") as pdf:
        for roi_pages in zip(*pages, strict=True):
            for _, fig in roi_pages:
                pdf.savefig(fig, dpi=dpi)
            yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="a <session>_result.zarr to draw instead")
    ap.add_argument("--rois", type=int, default=50)
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=5, help="ROIs per timed chunk")
    ap.add_argument("--pdf", action="store_true", help="also time one multi-page PDF")
    args = ap.parse_args()
    p = params.defaults()
    dpi = int(p["figures"]["dpi"])
    if args.store:
        ds = io.open_store(args.store).load()
        what = str(args.store)
    else:
        ds = synthetic_result(args.rois, args.frames, p["arpls"], p["normalize"],
                              p["trim_start"])
        what = "synthetic (correct_traces)"
    status = correction.fit_status(ds)
    counts = {s: int((status == s).sum()) for s in ("converged", "stable", "failed")}
    n_roi = ds.sizes["roi"]
    print(f"{what}: {n_roi} ROIs x {ds.sizes['time']} frames, fits {counts}, dpi {dpi}")

    ways = ({"old": save_old, "new": save_new, "images": save_images,
             "pillow": save_images_pillow}
            | ({"pdf": save_pdf} if args.pdf else {}))
    times: dict[str, list[float]] = {k: [] for k in ways}  # s per ROI, per chunk
    with tempfile.TemporaryDirectory() as tmp:
        folders = {k: Path(tmp) / k for k in ways}
        for folder in folders.values():
            folder.mkdir()
        for rep in range(args.repeats):
            running = {k: fn(ds, folders[k], dpi) for k, fn in ways.items()}
            order = list(ways)
            for start in range(0, n_roi, args.chunk):  # alternate: same load for all
                size = min(args.chunk, n_roi - start)
                for name in order if (rep + start // args.chunk) % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    for _ in itertools.islice(running[name], size):
                        pass
                    times[name].append((time.perf_counter() - t0) / size)
            for it in running.values():  # finish (closes the PDF)
                for _ in it:
                    pass
        old_files = sorted(folders["old"].glob("*.png"))
        for way in ("new", "images", "pillow"):
            same = sum(np.array_equal(imread(f), imread(folders[way] / f.name))
                       for f in old_files)
            print(f"PNGs with identical pixels, old vs {way}: {same} / {len(old_files)}")
        for way, folder in folders.items():
            pngs = list(folder.glob("*.png"))
            if pngs:
                kb = np.mean([f.stat().st_size for f in pngs]) / 1024
                print(f"mean PNG size, {way}: {kb:.0f} KB")

    print(f"{len(times['old'])} chunks of up to {args.chunk} ROIs, ways alternating")
    print(f"{'way':<28}{'s per ROI (3 figures)':>22}{'old / way':>11}"
          f"{'median of chunk ratios':>24}")
    labels = {"old": "old: new figure per ROI", "new": "new: figures reused",
              "images": "images: background kept", "pillow": "images, Pillow's PNG",
              "pdf": "new, one multi-page PDF"}
    old = np.array(times["old"])
    for name, ts in times.items():
        ts = np.array(ts)
        print(f"{labels[name]:<28}{np.median(ts):>22.3f}{np.median(old) / np.median(ts):>11.2f}"
              f"{np.median(old / ts):>24.2f}")


if __name__ == "__main__":
    main()
