"""The reports: a results JSON becomes one HTML page whose charts are real PNGs."""

import json
import pathlib
import shutil
import subprocess
import sys

from matplotlib.image import imread

from bench import report
from bench.tests.pages import REHEARSAL_TITLES, assert_drawn, read_page

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH_TITLES = [
    "Redis level: reservations/s by clients",
    "HTTP level: requests/s against /healthz",
    "HTTP level: latency percentiles",
    "The drop: units sold over time",
    "Logins/s: the host's capacity and as shipped",
    "Reservations before, during and after the login storm",
]


def copy(tmp_path, name):
    return shutil.copy(FIXTURES / name, tmp_path / name)


def test_a_bench_run_is_drawn_beside_its_json_with_a_chart_per_part(tmp_path):
    path = report.write(copy(tmp_path, "bench-quick.json"))

    assert path == str(tmp_path / "bench-quick.html")
    assert_drawn(read_page(path), BENCH_TITLES)


def test_an_older_bench_run_without_the_curves_is_still_drawn(tmp_path):
    old = json.loads((FIXTURES / "bench-quick.json").read_text())
    del old["drop"]["sold_over_time"]
    for key in ("timeline", "reserve_before", "reserve_after"):
        del old["logins"]["storm"][key]
    del old["redis"]
    source = tmp_path / "bench-old.json"
    source.write_text(json.dumps(old))

    assert_drawn(read_page(report.write(str(source))), BENCH_TITLES[1:])


def test_a_rehearsal_is_drawn_as_units_sold_statuses_and_latency_over_time(tmp_path):
    path = report.write(copy(tmp_path, "rehearsal.json"))

    page = read_page(path)
    assert_drawn(page, REHEARSAL_TITLES)
    assert "Drop rehearsal against http://127.0.0.1" in pathlib.Path(path).read_text()


def test_the_command_draws_an_old_json_and_can_write_the_charts_as_images(tmp_path):
    source = copy(tmp_path, "rehearsal.json")

    done = subprocess.run(
        [sys.executable, "-m", "bench.report", source, "--images", str(tmp_path / "images")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert f"Report: {tmp_path / 'rehearsal.html'}" in done.stdout
    images = sorted((tmp_path / "images").iterdir())
    assert [p.name for p in images] == [
        "latency-percentiles-per-second.png",
        "requests-s-by-status.png",
        "units-sold-over-time.png",
    ]
    assert all(imread(p).shape[0] > 100 for p in images)


def test_a_run_measured_against_the_floor_draws_the_floor_beside_each_scenario(tmp_path):
    run = json.loads((FIXTURES / "bench-quick.json").read_text())
    for row in run["http"]:
        row["floor"] = row.pop("health")
    source = tmp_path / "bench-floor.json"
    source.write_text(json.dumps(run))

    page = read_page(report.write(str(source)))
    titles = [title.replace("/healthz", "the floor") for title in BENCH_TITLES]
    assert_drawn(page, titles)


def test_a_storm_is_drawn_as_answers_and_p99_per_second_under_its_faults(tmp_path):
    source = copy(tmp_path, "storm.json")

    done = subprocess.run(
        [sys.executable, "-m", "bench.report", source, "--images", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert f"Report: {tmp_path / 'storm.html'}" in done.stdout
    page = read_page(tmp_path / "storm.html")
    assert_drawn(page, ["The storm: answers per second under the faults"])
    picture = imread(tmp_path / "the-storm-answers-per-second-under-the-faults.png")
    assert picture.shape[:2] == (600, 1000)  # two panels, 10 x 6 inches at 100 dpi
