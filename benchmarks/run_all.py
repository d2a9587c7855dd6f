"""Run every benchmark of ``make bench`` one after the other, each in its own process.

Usage::

    .venv/bin/python benchmarks/run_all.py [NAME ... | --science]

Without names, runs :data:`BENCHMARKS` (speed and memory) in order; ``--science`` runs
:data:`SCIENCE` (accuracy on held-out hard sessions); each prints its own figures,
measured side by side in that one run. Record them in benchmarks/README.md with the
machine they ran on.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Speed and memory (``make bench``, ~15 min): the pipeline first, then its parts.
BENCHMARKS = {
    "pipeline": ("bench_pipeline.py", []),
    "arpls": ("bench_arpls.py", []),
    "registration": ("bench_registration.py", []),
    "figures": ("bench_figures.py", []),
}
#: Accuracy on held-out hard sessions (``make bench-science``, ~1 h: they simulate and
#: run many sessions).
SCIENCE = {
    "detection": ("bench_detection.py", []),
    "events": ("bench_events.py", []),
    "neuropil": ("bench_neuropil.py", []),
}


def main(names: list[str]) -> int:
    """Run the named benchmarks (all by default); return the number that failed."""
    import os

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    failed = 0
    known = BENCHMARKS | SCIENCE
    if names == ["--science"]:
        names = list(SCIENCE)
    for name in names or list(BENCHMARKS):
        script, args = known[name]
        print(f"\n=== {name} ({script}) ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *args], cwd=HERE)
        print(f"--- {name}: {'ok' if code == 0 else f'FAILED ({code})'} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        failed += code != 0
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
