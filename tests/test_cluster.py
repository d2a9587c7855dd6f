"""Sessions on dask.distributed: a real ``dask scheduler`` and ``dask worker`` processes.

The shared run (conftest.py) used the default, a local cluster of one worker per core;
here OTHER goes through a scheduler and two workers started as a lab would start them on
a cluster's nodes, and every table must be byte-identical to the shared run's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import pytest

from calim_helpers.cli import main
from calim_helpers.workflow import cluster

distributed = pytest.importorskip("distributed")


def _dask(*args: str, log: Path) -> subprocess.Popen:
    """Start ``dask <args>`` (the console script of dask's own package) in its own group."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def dask_cluster(tmp_path):
    """A ``dask scheduler`` on the loopback interface and two ``dask worker`` processes."""
    file = tmp_path / "scheduler.json"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(file), log=tmp_path / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert file.exists(), (tmp_path / "scheduler.log").read_text()
        address = json.loads(file.read_text())["address"]
        for k in range(2):
            procs.append(_dask("worker", address, "--nthreads", "1", "--no-dashboard",
                               "--memory-limit", "2GB", "--name", f"w{k}",
                               log=tmp_path / f"worker{k}.log"))
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs[::-1]:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _tables(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))
            if "status" not in p.parts}


def test_a_run_on_a_dask_scheduler_gives_the_same_tables(e2e, dask_cluster, tmp_path,
                                                          capsys):
    out = tmp_path / "out"
    code = main(["run", str(e2e.other), "--out", str(out), *e2e.options,
                 "--scheduler", dask_cluster])
    assert code == e2e.code
    mine, shared = _tables(out / e2e.other.name), _tables(e2e.out / e2e.other.name)
    assert mine.keys() == shared.keys() and len(mine) > 10
    different = [name for name in mine if mine[name] != shared[name]]
    assert not different
    status = (out / e2e.other.name / "status" / "analysis.csv").read_text()
    assert status.count(",ok,") == 3  # the three sessions that can be processed
    # the sessions went through their steps ahead of the notebooks (workflow.ahead), and
    # the notebooks took those computations: no step was found done by an earlier task
    import pandas as pd

    for step in ("load", "rois", "arpls", "analysis"):
        table = pd.read_csv(out / e2e.other.name / "status" / f"{step}.csv")
        assert not table["cached"].any(), (step, table)


def test_workers_default_to_the_cores_and_are_checked():
    assert cluster.resolve_workers("auto") == cluster.machine_cores() >= 1
    assert cluster.resolve_workers(3) == 3
    for bad in (0, -1, True, "two", 1.5):
        with pytest.raises(ValueError, match="compute.workers"):
            cluster.resolve_workers(bad)


def test_no_cluster_for_one_worker_or_one_session_or_a_given_address():
    base = {"workers": 4, "worker_memory": "auto", "scheduler": "threads",
            "parallel_sessions": 1, "resume": True}
    for compute, n_sessions in ((base | {"workers": 1}, 5), (base, 1),
                                (base | {"scheduler": "tcp://127.0.0.1:8786"}, 5)):
        with cluster.cluster_for_run(compute, n_sessions) as used:
            assert used == compute


def test_a_local_cluster_is_started_and_closed():
    compute = {"workers": 2, "worker_memory": "1GB", "scheduler": "threads",
               "parallel_sessions": 1, "resume": True}
    with cluster.cluster_for_run(compute, 3) as used:
        address = used["scheduler"]
        assert address.startswith("tcp://127.0.0.1:")
        with distributed.Client(address, timeout=30) as client:
            info = client.scheduler_info()["workers"]
            assert len(info) == 2
            assert {w["nthreads"] for w in info.values()} == {1}
            assert {w["memory_limit"] for w in info.values()} == {10**9}
            # no dashboard: the workers do not sample their stacks for one
            profiling = client.run(dask.config.get, "distributed.worker.profile.enabled")
            assert set(profiling.values()) == {False}
    with pytest.raises(OSError):
        distributed.Client(address, timeout=2)


def test_which_runs_send_their_steps_to_workers():
    from calim_helpers.workflow.cluster import on_workers

    threads = {"scheduler": "threads", "workers": 2}
    assert on_workers(threads, 2) and not on_workers(threads, 1)  # one session: the kernel
    assert not on_workers(threads | {"workers": 1}, 4)
    assert not on_workers({"scheduler": "synchronous", "workers": 2}, 4)
    assert on_workers({"scheduler": "tcp://127.0.0.1:8786", "workers": 1}, 1)


def test_the_workers_warm_up_beside_the_run_and_a_failed_warm_up_is_only_logged(
        monkeypatch, caplog):
    """cluster_for_run yields before the warm-up ends and waits for it on exit; a warm-up
    that fails leaves the run going, with a warning in the log."""
    started, release = threading.Event(), threading.Event()

    def slow_then_fail(address, n_workers):
        started.set()
        assert release.wait(30)
        raise RuntimeError("no warm-up here")

    monkeypatch.setattr(cluster, "_warm_one_worker", slow_then_fail)
    compute = {"workers": 2, "worker_memory": "1GB", "scheduler": "threads",
               "parallel_sessions": 1, "resume": True}
    with caplog.at_level(logging.WARNING, logger="calim.run"), \
            cluster.cluster_for_run(compute, 2) as used:
        assert started.wait(30)  # yielded while the warm-up still runs
        assert used["scheduler"].startswith("tcp://127.0.0.1:")
        release.set()
    assert "warming the dask workers failed (RuntimeError: no warm-up here)" in caplog.text


def test_a_module_is_imported_in_the_background_once(tmp_path, monkeypatch):
    (tmp_path / "calim_bg_probe.py").write_text("import time\ntime.sleep(0.2)\nVALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calim_bg_probe", raising=False)
    cluster.import_in_background("calim_bg_probe")
    started = [t for t in threading.enumerate() if t.name == "calim-import"]
    assert started  # the caller does not wait for the import
    import calim_bg_probe  # a user of the module waits for it, and gets it whole

    assert calim_bg_probe.VALUE == 7
    for t in started:
        t.join(timeout=10)
    cluster.import_in_background("calim_bg_probe")  # imported: no thread
    assert not [t for t in threading.enumerate() if t.name == "calim-import"]
    monkeypatch.delitem(sys.modules, "calim_bg_probe")


def test_workers_are_the_cores_a_step_computes_on_in_the_kernel(tmp_path, monkeypatch):
    """Without a cluster, ``compute.workers`` threads compute a step's chunks and BLAS,
    shared by the sessions running at once (``--workers 1``: one core)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from calim_helpers import demo
    from calim_helpers.workflow import runner
    from calim_helpers.workflow.experiment import Experiment

    seen = []

    def probe(experiment, session):
        blas = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
        seen.append((dask.config.get("num_workers"), blas))
        return {}

    monkeypatch.setitem(runner.STEPS, "load", probe)
    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # BLAS loaded
    exp_dir = demo.write_demo_experiment(tmp_path, n_frames=20, frame_shape=(32, 40), seed=1)
    e = Experiment.open(exp_dir, tmp_path / "out")
    n = len(e.sessions)
    assert n >= 2
    for workers, parallel, threads in ((1, 1, 1), (2, 1, 2), (2, 2, 1), (3, 1, 3)):
        seen.clear()
        compute = {"scheduler": "threads", "workers": workers, "parallel_sessions": parallel,
                   "resume": False}
        assert (runner.run_step("load", e, compute=compute)["status"] == "ok").all()
        assert [s[0] for s in seen] == [threads] * n
        assert all(s[1] <= {threads} for s in seen), (workers, parallel, seen)  # or no BLAS
    assert dask.config.get("num_workers", None) is None  # nothing left set
