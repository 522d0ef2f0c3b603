"""The benchmark's run-queue figure: time a process was runnable with no free core.

Three busy processes pinned to one CPU take turns on it, so each runs about a third of the time
and waits two thirds (more if the machine is busy, never less); a process that exits has no
figure rather than a wrong one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from bench.harness import CpuMeter, ProcessTree, waited_s

pytestmark = pytest.mark.skipif(
    not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat"), reason="no schedstat here"
)

SPIN = "import os; os.sched_setaffinity(0, {%d}); print('up', flush=True)\nwhile True: pass"


def _spinners(n: int, cpu: int) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN % cpu], stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "up"  # pinned and spinning
    return procs


def _stop(procs) -> None:
    for p in procs:
        p.kill()
        p.wait()
        p.stdout.close()


def _used(procs, at_least_s: float) -> None:
    """Until the processes together used `at_least_s` of CPU (a measurement, not a sync sleep)."""
    deadline = time.monotonic() + 30
    while sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs) < at_least_s:
        assert time.monotonic() < deadline, "the spinners did not run"
        time.sleep(0.05)


def test_three_processes_sharing_one_cpu_each_wait_for_it():
    procs = _spinners(3, min(os.sched_getaffinity(0)))
    try:
        meter = CpuMeter({f"spin{i}": psutil.Process(p.pid) for i, p in enumerate(procs)}).start()
        _used(procs, 1.5)
        cpu = meter.stop()
        for i in range(3):
            # One CPU among three: about 33% run and 67% waited each (run time read as waiting
            # would show ~33% here).
            assert cpu[f"spin{i}"] < 50, cpu
            assert meter.waited[f"spin{i}"] > 50, meter.waited
        assert meter.waited["runner"] is not None  # the measuring process itself, mostly asleep
    finally:
        _stop(procs)


def test_a_tree_sums_its_processes_and_a_gone_process_has_no_figure():
    procs = _spinners(2, min(os.sched_getaffinity(0)))
    try:
        _used(procs, 1.0)
        parent = ProcessTree(os.getpid())  # the spinners are this process's children
        alone = [waited_s(psutil.Process(p.pid)) for p in procs]
        assert all(w is not None and w > 0 for w in alone), alone
        assert parent.waited() >= sum(alone)  # later, and with this process's own threads
    finally:
        gone = psutil.Process(procs[0].pid)
        _stop(procs)
    assert waited_s(gone) is None


# A parent that only waits for its child, which spins.
BUSY_CHILD = (
    "import subprocess, sys\n"
    "spin = 'print(\"up\", flush=True)\\nwhile True: pass'\n"
    "subprocess.Popen([sys.executable, '-c', spin], stdout=sys.stdout).wait()\n"
)


def test_a_process_tree_splits_its_cpu_by_role():
    """The busy child of an idle parent shows under its own role, the parent's (idle) share under
    `main`: a sum read as the parent's would show the parent busy."""
    parent = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        tree = ProcessTree(parent.pid)
        meter = CpuMeter({"tree": tree}).start()
        (child,) = tree.children()
        _used([child], 0.5)
        meter.stop()
        split = meter.by_role["tree"]
        assert set(split) == {"main", os.path.basename(sys.executable)}
        assert split["main"] < 20 < split[os.path.basename(sys.executable)]
        # ...and its memory is the tree's too: the parent's own RSS plus the child's
        assert tree.memory_info().rss > psutil.Process.memory_info(tree).rss + child.memory_info().rss // 2
    finally:
        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_a_backend_cli_child_is_named_by_its_subcommand():
    from bench.harness import _role

    assert _role(["/x/python", "-m", "backend.cli", "worker", "--partitions", "2"]) == "worker"
    assert _role(["/usr/bin/valkey-server", "*:6379"]) == "valkey-server"
