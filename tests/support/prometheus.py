"""Prometheus for tests: promtool, the repository's rules and dashboards, the series
the app serves, and a real `prometheus` server scraping a test's API.

Debian's `prometheus` package has both binaries (.ci/run installs it); tests that
need one skip where it is absent.
"""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NOT_INSTALLED = "needs Debian's prometheus (apt-get install prometheus; .ci/run installs it)"

DEPLOY = Path(ROOT) / "deploy"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "flashcart.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
JOB = "flashcart"  # the rules select the API's targets by it

# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up"}

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\b(flashcart_[a-z0-9_]+|up)\b")


def promtool(*args):
    """`promtool args...`: the finished process (its output is text)."""
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules(path=RULES):
    """Every alerting rule of a rules file (dicts: alert, expr, for, labels...)."""
    groups = yaml.safe_load(Path(path).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs(path):
    """[(panel title, PromQL expression)] of a Grafana dashboard, rows' panels too."""
    dashboard = json.loads(Path(path).read_text())
    found = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))

    walk(dashboard["panels"])
    return found


def metric_names(expr):
    """The series a PromQL expression names (FlashCart's and `up`); label values and
    label names are not series."""
    return set(_METRIC.findall(_QUOTED.sub('""', expr)))


def served_series(exposition):
    """Every series name an exposition's `# TYPE` lines announce, samples or not: a
    counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, a gauge's name."""
    names = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split()
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
        else:
            names.add(name)
    return names


class PrometheusServer:
    """Debian's `prometheus` scraping `targets` (host:port) as job "flashcart" every
    `interval`, evaluating `rule_files` as often, its storage in `workdir`. A context
    manager: ready inside, stopped after."""

    def __init__(self, targets, workdir, rule_files=(), interval="1s"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir)
        self.config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": list(targets)}]}],
        }
        self.process = None

    def __enter__(self):
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        log = self.workdir / "prometheus.log"
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                cwd=self.workdir,
                env={**os.environ},
                stdout=output,
                stderr=output,
            )
        try:
            wait_for(lambda: self.process.poll() is not None or self.get("/-/ready"), "prometheus")
        except BaseException:
            stop(self.process)
            raise
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{log.read_text()[-4000:]}")
        return self

    def __exit__(self, *exc):
        stop(self.process)

    def get(self, path, **params):
        """GET a path of its HTTP API: the decoded JSON (or text) answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:  # noqa: S310 - loopback
            body = response.read().decode()
        return json.loads(body) if body.startswith("{") else body

    def query(self, expr):
        """An instant query's answer: {"resultType": ..., "result": [...]}; raises on an
        expression Prometheus refuses (HTTP 400)."""
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]

    def values(self, expr):
        """{frozenset of labels: value} of an instant vector query."""
        return {
            frozenset(sample["metric"].items()): float(sample["value"][1])
            for sample in self.query(expr)["result"]
        }

    def wait_for_value(self, expr, check, what, timeout=20):
        """Until `check(values(expr))` is true; returns those values."""
        deadline = time.monotonic() + timeout
        while True:
            values = self.values(expr)
            if check(values):
                return values
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {expr} gave {values}")
            time.sleep(0.2)
