"""The suite stands on its own: nothing under tests/ imports the benchmark (bench/).

The dependency points the other way: bench/ reuses the suite's process tools
(tests/support/processes.py, tests/support/ports.py). The benchmark's own tests are
in bench/tests/ and are not walked here.
"""

import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]
DYNAMIC_IMPORTS = {"__import__", "import_module"}


def _is_bench(module):
    return module == "bench" or module.startswith("bench.")


def bench_imports(source, filename="<source>"):
    """(line, imported name) for every import of bench in `source`: import statements,
    and __import__ / importlib.import_module calls with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _is_bench(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_bench(node.module):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in DYNAMIC_IMPORTS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _is_bench(first.value)
            ):
                found.append((node.lineno, first.value))
    return found


def test_the_guard_sees_every_form_of_import():
    source = (
        "import bench\n"
        "import os, bench.servers as servers\n"
        "from bench.servers import ROOT\n"
        "from bench import app\n"
        "importlib.import_module('bench.app')\n"
        "__import__('bench')\n"
        # Not imports of bench:
        "import benchmark\n"
        "from tests.support import bench_tools\n"
        "from . import bench\n"
        "run('bench.app:create()')\n"
    )
    assert bench_imports(source) == [
        (1, "bench"),
        (2, "bench.servers"),
        (3, "bench.servers"),
        (4, "bench"),
        (5, "bench.app"),
        (6, "bench"),
    ]


def test_nothing_under_tests_imports_bench():
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        found = bench_imports(path.read_text(), str(path))
        if found:
            offenders[str(path.relative_to(TESTS.parent))] = found
    assert offenders == {}, "tests/ must not import bench/ (bench may import tests.support)"
