"""Run every benchmark of ``make bench`` one after the other, each in its own process.

Usage::

    .venv/bin/python benchmarks/run_all.py [NAME ...]

Without names, runs all of :data:`BENCHMARKS` in order; each prints its own figures,
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

#: (script, arguments): the pipeline first (the issue's headline figures), then the parts.
BENCHMARKS = {
    "pipeline": ("bench_pipeline.py", []),
    "arpls": ("bench_arpls.py", []),
    "registration": ("bench_registration.py", []),
    "figures": ("bench_figures.py", []),
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
    for name in names or list(BENCHMARKS):
        script, args = BENCHMARKS[name]
        print(f"\n=== {name} ({script}) ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *args], cwd=HERE)
        print(f"--- {name}: {'ok' if code == 0 else f'FAILED ({code})'} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        failed += code != 0
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
