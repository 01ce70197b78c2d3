"""Process tools for tests that start servers: the repository's root, stopping a
process, waiting for a condition, a process's children and the CPU it has used
(read from /proc). The benchmark (bench/servers.py) uses them too."""

import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stop(process, timeout=15):
    """SIGTERM `process` (gunicorn's master then stops its workers); SIGKILL it if it
    has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(check, what, timeout=20, interval=0.1):
    """`check()`'s first true answer, asked every `interval` s (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except Exception:  # noqa: BLE001, S110 - still starting
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(interval)


def _stat(pid):
    """/proc/<pid>/stat's fields after the command name (state is [0], ppid [1])."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def _children_stats(pid):
    """{child pid: its stat fields} for the processes whose parent is `pid`."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
        except OSError:  # gone meanwhile
            continue
        if fields[1] == str(pid):
            stats[int(entry)] = fields
    return stats


def children(pid):
    """Pids of the live children of `pid` (a gunicorn master's workers)."""
    return sorted(child for child, fields in _children_stats(pid).items() if fields[0] != "Z")


def _live_children_ticks(pid):
    return sum(int(f[11]) + int(f[12]) for f in _children_stats(pid).values())  # utime, stime


def cpu_seconds(pid):
    """CPU seconds (user + system) used so far by a process and its children: those
    it has reaped (a recycled gunicorn worker) and those still running."""
    while True:
        before = _stat(pid)
        live = _live_children_ticks(pid)
        after = _stat(pid)
        # A child reaped during the scan would be in neither sum: look again.
        if before[13:15] == after[13:15]:  # cutime, cstime
            return (sum(int(x) for x in after[11:15]) + live) / os.sysconf("SC_CLK_TCK")


def settled_cpu_seconds(pids, interval=0.05, timeout=2.0):
    """{name: `cpu_seconds`} for `pids` (name -> pid) once none of them used any CPU
    for `interval` s (or after `timeout` s): requests still queued when a load
    generator stops are served after it, and a new worker boots after its fork."""
    readings = {name: cpu_seconds(pid) for name, pid in pids.items()}
    deadline = time.monotonic() + timeout
    while readings and time.monotonic() < deadline:
        time.sleep(interval)
        latest = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if latest == readings:
            break
        readings = latest
    return readings
