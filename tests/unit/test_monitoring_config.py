"""The shipped monitoring: Prometheus's config and alert rules (deploy/prometheus/),
checked and unit-tested by promtool, and the Grafana dashboard (deploy/grafana/),
whose every query must parse and name only series the app serves.

promtool comes with Debian's `prometheus` (.ci/run installs it); without it the
promtool checks skip and the rest still run. tests/system/test_prometheus.py runs
the rules and the dashboard's queries on a real Prometheus scraping the app.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support import compose
from tests.support.processes import ROOT
from tests.support.prometheus import (
    CONFIG,
    DASHBOARDS,
    DEPLOY,
    NOT_INSTALLED,
    PROMETHEUS_SERIES,
    PROMTOOL,
    RULE_TESTS,
    RULES,
    alert_rules,
    dashboard_exprs,
    metric_names,
    promtool,
    served_series,
)

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NOT_INSTALLED)


def copy_of_the_rules(tmp_path, change=None):
    """deploy/prometheus/ copied under tmp_path, `change(text)` applied to the rules;
    returns the copy's unit-test files."""
    copy = tmp_path / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", copy)
    rules = copy / "rules" / RULES.name
    if change:
        changed = change(rules.read_text())
        assert changed != rules.read_text(), "the change must change something"
        rules.write_text(changed)
    return copy, sorted((copy / "tests").glob("*.yml"))


@pytest.fixture(scope="module")
def app_series():
    """Every series name the app's /metrics announces (a bare testing app)."""
    from flashcart import create_app
    from tests.support.app import app_settings

    app = create_app(app_settings())
    return served_series(app.test_client().get("/metrics").get_data(as_text=True))


# -- promtool --------------------------------------------------------------------


@needs_promtool
def test_the_prometheus_config_and_its_rules_pass_promtool_check():
    checked = promtool("check", "config", CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(alert_rules())} rules found" in checked.stdout

    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_every_alert_passes_its_unit_tests_on_synthetic_series():
    tested = promtool("test", "rules", *RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_a_broken_rule_fails_the_check_and_a_changed_threshold_fails_the_unit_tests(tmp_path):
    broken, _ = copy_of_the_rules(
        tmp_path / "broken", lambda text: text.replace("== 0", "== = 0", 1)
    )
    assert promtool("check", "rules", broken / "rules" / RULES.name).returncode != 0
    assert promtool("check", "config", broken / "prometheus.yml").returncode != 0

    _, tests = copy_of_the_rules(
        tmp_path / "lenient", lambda text: text.replace("> 0.25", "> 0.5", 1)
    )
    tested = promtool("test", "rules", *tests)
    assert tested.returncode != 0
    assert "FlashcartReserveSlow" in tested.stdout + tested.stderr


# -- what the unit tests cover ---------------------------------------------------


def test_every_alert_is_unit_tested_both_firing_and_not_firing():
    firing, quiet = set(), set()
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        assert [Path(path.parent, f).resolve() for f in spec["rule_files"]] == [RULES.resolve()]
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_names_only_series_the_app_serves(app_series):
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - app_series - PROMETHEUS_SERIES
        assert unknown == set(), f"{rule['alert']} names series the app does not serve"


def test_every_alert_says_how_bad_it_is_and_where_the_runbook_is():
    monitoring = (Path(ROOT) / "docs" / "monitoring.md").read_text()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"] == "docs/monitoring.md#alerts"
        assert f"`{rule['alert']}`" in monitoring, f"{rule['alert']} has no runbook line"


def test_the_series_check_sees_every_kind_of_series():
    exposition = "\n".join(
        [
            "# TYPE flashcart_orders_total counter",
            "# TYPE flashcart_latency_seconds histogram",
            "# TYPE flashcart_stock_available gauge",
            'flashcart_stock_available{product_id="p"} 1.0',
        ]
    )
    assert served_series(exposition) == {
        "flashcart_orders_total",
        "flashcart_latency_seconds_bucket",
        "flashcart_latency_seconds_sum",
        "flashcart_latency_seconds_count",
        "flashcart_stock_available",
    }
    expr = 'sum by (product_id) (rate(flashcart_orders_total{endpoint="flashcart_x"}[1m])) / up'
    assert metric_names(expr) == {"flashcart_orders_total", "up"}


# -- the dashboard ---------------------------------------------------------------


def test_there_is_a_drop_dashboard_with_the_panels_a_drop_needs():
    assert [path.name for path in DASHBOARDS] == ["flashcart-drop.json"]
    named = {name for _, expr in dashboard_exprs(DASHBOARDS[0]) for name in metric_names(expr)}
    for series in (
        "flashcart_stock_available",
        "flashcart_reservations_total",
        "flashcart_holds",
        "flashcart_units_sold",
        "flashcart_http_request_duration_seconds_bucket",
        "flashcart_http_requests_total",
    ):
        assert series in named


def test_every_dashboard_query_names_only_series_the_app_serves(app_series):
    for path in DASHBOARDS:
        for title, expr in dashboard_exprs(path):
            unknown = metric_names(expr) - app_series - PROMETHEUS_SERIES
            assert metric_names(expr), f"{path.name}: {title}: {expr}"
            assert unknown == set(), f"{path.name}: {title}: {expr}"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    # promtool parses a rules file's every expression: one recording rule per query.
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr}
        for n, (_, expr) in enumerate(e for path in DASHBOARDS for e in dashboard_exprs(path))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout

    rules[0]["expr"] = "sum(rate(flashcart_http_requests_total[1m])"  # the check can fail
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", path).returncode != 0


# -- Grafana and compose wiring ----------------------------------------------------


def compose_services():
    return compose.load()["services"]


def mounts(service):
    """{path in the container: path in the repository} of a service's bind mounts."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = Path(ROOT, source)
    return found


def test_compose_runs_prometheus_with_the_repository_config_and_rules():
    prometheus = compose_services()["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    config = next(
        arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")
    )
    folder, name = config.rsplit("/", 1)
    assert mounts(prometheus)[folder] / name == CONFIG
    spec = yaml.safe_load(CONFIG.read_text())
    assert sorted(CONFIG.parent.glob(spec["rule_files"][0])) == [RULES]
    # Every service serving the API on gunicorn's port 8000 is scraped there.
    services = compose_services()
    gunicorns = [name for name, s in services.items() if "8000" in s.get("expose", [])]
    assert sorted(gunicorns) == ["api", "logins"]
    assert spec["scrape_configs"][0]["dns_sd_configs"][0]["names"] == gunicorns


def test_grafana_is_provisioned_with_the_prometheus_source_and_the_dashboards():
    grafana = compose_services()["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    provisioning = mounts(grafana)["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "flashcart.yml").read_text())
    (folder,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounts(grafana)[folder] == DASHBOARDS[0].parent
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        sources = {
            json.dumps(panel["datasource"], sort_keys=True)
            for panel in dashboard["panels"]
            if "datasource" in panel
        }
        assert sources == {json.dumps({"type": "prometheus", "uid": datasource["uid"]})}
