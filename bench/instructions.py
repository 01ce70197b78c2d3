"""Instructions per request, counted by valgrind: `make bench-instructions`.

CPU time on a shared VM drifts by tens of percent from one run to the next, even
best of three (`make bench-cpu`); an instruction count barely moves. This runs the
app in one process under callgrind (valgrind's instruction counter; redis-server
runs natively beside it) and counts, for each of `make bench-cpu`'s request
scenarios (the floor, a bare Flask endpoint, first), the instructions of the app's
process over 200 requests after 200 of warm-up. An instruction is not a unit of
time (a system call or a cache miss costs more than its count, and the kernel's side
is not counted), so this weighs a change to the Python side before and after;
`make bench` says what it does to throughput.
"""

import glob
import os
import subprocess
import sys
import tempfile

from bench.cpu import FLOOR, app_and_scenarios, serve
from bench.servers import RedisServer

COUNT = 200


def _dump(label):
    """Write callgrind's counters since the last dump, labelled, and zero them."""
    subprocess.run(
        ["callgrind_control", f"--dump={label}", str(os.getpid())],
        check=True,
        capture_output=True,
    )


def count_inside_valgrind():
    with RedisServer() as server:
        scenarios = app_and_scenarios(server.url, requests=2 * COUNT, seen=COUNT)
        for index, (app, make_environ) in enumerate(scenarios.values()):
            for environ in [make_environ() for _ in range(COUNT)]:  # warm-up
                serve(app, environ)
            environs = [make_environ() for _ in range(COUNT)]
            _dump("setup")
            for environ in environs:
                serve(app, environ)
            _dump(f"scenario-{index}")
    return list(scenarios)


def _instructions_by_label(out_dir):
    counts = {}
    for path in glob.glob(os.path.join(out_dir, "callgrind.out.*")):
        label = total = None
        with open(path) as dump:
            for line in dump:
                if line.startswith("desc: Trigger:"):
                    label = line.split()[-1]
                elif line.startswith("summary:"):
                    total = int(line.split()[1])
                    break
        if label and label.startswith("scenario-") and total is not None:
            counts[int(label.split("-")[1])] = total
    return counts


def main():
    if "--inside-valgrind" in sys.argv:
        for name in count_inside_valgrind():
            print(f"scenario: {name}")
        return
    with tempfile.TemporaryDirectory(prefix="flashcart-callgrind-") as out_dir:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(out_dir, 'callgrind.out')}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--inside-valgrind",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            sys.exit(f"the counted run failed:\n{run.stderr[-3000:]}")
        names = [line[10:] for line in run.stdout.splitlines() if line.startswith("scenario: ")]
        counts = _instructions_by_label(out_dir)
    per_request = {name: counts[index] / COUNT for index, name in enumerate(names)}
    health, floor = per_request["/healthz"], per_request[FLOOR]
    print(f"Instructions per request (callgrind, {COUNT} requests after {COUNT} of warm-up)")
    for name, instructions in per_request.items():
        print(
            f"   {name:<20} {instructions / 1000:7,.0f}k   /healthz/this "
            f"{health / instructions:.2f}   floor/this {floor / instructions:.2f}"
        )


if __name__ == "__main__":
    main()
