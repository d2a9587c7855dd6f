"""Open a full-size session lazily vs reading it eagerly: wall time and peak memory.

Usage::

    .venv/bin/python benchmarks/bench_open.py [SESSION_DIR]

Without SESSION_DIR, writes a 1500 x 512 x 688 uint16 Micro-Manager stack (1.06 GB)
to a temporary folder first. Each measurement runs in a fresh subprocess so that its
peak resident memory (``VmHWM``) is its own; the lines printed are measured in this
one run, side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _synthetic import write_noise_session

CHILD = r"""
import json, sys, time

def hwm_mb():  # peak resident set of this address space (VmHWM, fresh after exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

what, path = sys.argv[1], sys.argv[2]
import dask.array, numpy, tifffile, xarray, zarr  # imports are not what we measure
base = hwm_mb()
if what == "lazy":
    from calim_helpers import io
    t0 = time.perf_counter()
    movie = io.open_movie(path)
    shape = movie.shape
elif what == "lazy+mip":
    from calim_helpers import io
    t0 = time.perf_counter()
    movie = io.open_movie(path)
    mip = movie.max("time").values
    shape = movie.shape
else:
    import tifffile
    from calim_helpers import io
    files, _ = io.find_stack_files(path)
    t0 = time.perf_counter()
    shape = tifffile.imread(files[0]).shape
took = time.perf_counter() - t0
print(json.dumps({"seconds": took, "peak_rss_mb": hwm_mb(), "import_rss_mb": base,
                  "shape": list(shape)}))
"""


def _measure(what: str, session: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(session)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print one line per measurement and the ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            session = Path(sys.argv[1])
        else:
            t0 = time.perf_counter()
            session = write_noise_session(Path(tmp))
            print(f"wrote a 1500 x 512 x 688 stack in {time.perf_counter() - t0:.1f} s")
        size = sum(f.stat().st_size for f in session.glob("*.tif"))
        print(f"session: {session} ({size / 1e9:.2f} GB on disk)")
        res = {w: _measure(w, session) for w in ("lazy", "lazy+mip", "eager")}
        for w, r in res.items():
            print(f"{w:9s} {r['seconds']:7.3f} s   peak RSS {r['peak_rss_mb']:7.0f} MB "
                  f"(after imports {r['import_rss_mb']:.0f} MB)   shape {tuple(r['shape'])}")
        lazy, eager = res["lazy"], res["eager"]
        print(f"ratio eager/lazy: time {eager['seconds'] / lazy['seconds']:.0f}x, "
              f"peak RSS {eager['peak_rss_mb'] / lazy['peak_rss_mb']:.1f}x; "
              f"lazy open added {lazy['peak_rss_mb'] - lazy['import_rss_mb']:.0f} MB over the "
              f"imports for a {size / 2**20:.0f} MB file")


if __name__ == "__main__":
    main()
