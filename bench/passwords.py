"""CPU per password check for each argon2id setting OWASP lists as equivalent:
`python -m bench.passwords` (`make bench-cpu` prints the same table).

OWASP's Password Storage Cheat Sheet lists five argon2id settings as equally strong
(memory traded for passes), and RFC 9106's "second recommended option" (64 MiB,
t=3, p=4) was the shipped default before. A login verifies one hash and a sign-up
makes one: both cost what `verify` costs here. Figures are the process's CPU time
per call (`time.process_time`, best of the rounds, so another process's load on the
box does not count), and wall time for one check on an idle core; with p > 1 argon2
runs its lanes on threads, so CPU is higher than wall time.
"""

import sys
import time

from argon2 import PasswordHasher

# (memory KiB, time cost, parallelism, label)
SHIPPED_BEFORE = (65536, 3, 4, "RFC 9106 second option (shipped until issue 21)")
OWASP = (
    (47104, 1, 1, "OWASP"),
    (19456, 2, 1, "OWASP"),
    (12288, 3, 1, "OWASP"),
    (9216, 4, 1, "OWASP"),
    (7168, 5, 1, "OWASP"),
)
PASSWORD = "correct horse battery staple"  # noqa: S105 - a benchmark input


def check_cost(memory_kib, time_cost, parallelism, checks, rounds):
    """(CPU ms, wall ms) per `verify`: the least over `rounds` of `checks` calls."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    stored = hasher.hash(PASSWORD)
    best_cpu = best_wall = None
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(checks):
            hasher.verify(stored, PASSWORD)
        cpu = (time.process_time() - cpu) / checks * 1000
        wall = (time.perf_counter() - wall) / checks * 1000
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
        best_wall = wall if best_wall is None else min(best_wall, wall)
    return best_cpu, best_wall


def table(checks=20, rounds=3, settings=(SHIPPED_BEFORE, *OWASP)):
    rows = []
    for memory_kib, time_cost, parallelism, label in settings:
        cpu, wall = check_cost(memory_kib, time_cost, parallelism, checks, rounds)
        rows.append(
            {
                "memory_kib": memory_kib,
                "time_cost": time_cost,
                "parallelism": parallelism,
                "label": label,
                "cpu_ms": cpu,
                "wall_ms": wall,
                "checks_per_core_s": 1000 / cpu,
            }
        )
    return rows


def print_table(rows, configured=None):
    print("\n3. One password check (argon2id verify), CPU ms (best of 3 rounds)")
    print(
        f"   {'memory':>9} {'t':>2} {'p':>2} | {'CPU ms':>7} {'wall ms':>7} "
        f"{'checks/s per core':>17}  setting"
    )
    for row in rows:
        params = (row["memory_kib"], row["time_cost"], row["parallelism"])
        mark = "  <- configured" if params == configured else ""
        print(
            f"   {row['memory_kib']:>5} KiB {row['time_cost']:>2} {row['parallelism']:>2} | "
            f"{row['cpu_ms']:>7.1f} {row['wall_ms']:>7.1f} {row['checks_per_core_s']:>17.0f}  "
            f"{row['label']}{mark}"
        )


def configured_parameters():
    from config import ProductionConfig as shipped

    return (shipped.ARGON2_MEMORY_KIB, shipped.ARGON2_TIME_COST, shipped.ARGON2_PARALLELISM)


def main():
    checks = 5 if "--quick" in sys.argv else 20
    print_table(table(checks=checks), configured_parameters())


if __name__ == "__main__":
    main()
