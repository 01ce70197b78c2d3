"""The benchmark's CPU accounting: `make bench` splits each request's CPU between
gunicorn's workers, redis-server and wrk, so the split must count a process's
children (the workers), running or reaped (a recycled worker)."""

import subprocess
import sys
import textwrap

import pytest

from bench.servers import cpu_seconds

# A parent that starts a child; each burns CPU, then they wait to be told to go on.
FAMILY = textwrap.dedent(
    """
    import subprocess, sys, time

    def burn(seconds):
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\\n"
         "start = time.process_time()\\n"
         "while time.process_time() - start < 0.4: pass\\n"
         "print('child burnt', flush=True)\\n"
         "sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    child.stdout.readline()
    burn(0.2)
    print("both burnt", flush=True)
    sys.stdin.readline()
    child.communicate("go\\n")
    print("child reaped", flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(60)
def test_cpu_seconds_counts_running_and_reaped_children():
    family = subprocess.Popen(
        [sys.executable, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert family.stdout.readline() == "both burnt\n"
        running = cpu_seconds(family.pid)
        family.stdin.write("go\n")
        family.stdin.flush()
        assert family.stdout.readline() == "child reaped\n"
        reaped = cpu_seconds(family.pid)
    finally:
        family.communicate("go\n", timeout=10)
    # 0.4 s in the child, 0.2 s in the parent, and two interpreters starting (clock
    # ticks are 10 ms, and each of the four figures summed may lose one).
    assert 0.56 <= running < 1.0
    assert abs(reaped - running) <= 0.05


def test_the_storm_rate_at_capacity_counts_only_the_seconds_in_which_someone_was_refused():
    from bench.logins import _at_capacity

    logins = [(at, 0.05, 1.0) for at in (0.5, 1.2, 1.7, 5.0, 9.9)]
    refusals = [1.1, 5.5, 5.6]
    assert _at_capacity(logins, refusals) == 3 / 2  # seconds 1 and 5: three logins
    assert _at_capacity(logins, []) is None
