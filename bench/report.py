"""Reports a person can open: `python -m bench.report bench/results/<file>.json`.

Draws the JSON of a `make bench` run (bench-*.json), of `python -m bench.logins`
(logins-*.json), of a drop rehearsal (`make rehearse`, rehearsal-*.json) or of a
storm (`make storm`, storm-*.json) as charts
in one self-contained HTML file beside it (same name, .html): PNGs drawn by
matplotlib's Agg canvas (no screen), embedded as data: URIs. Parts a JSON lacks (an
older run) are left out, so an old file can be drawn too.
"""

import argparse
import base64
import html
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
SIZE = (8.5, 4.0)
# One colour per answer, the same in every chart: green served, amber refused, red broken.
STATUS_COLOURS = {
    "200": "#2e7d32",
    "201": "#2e7d32",
    "409": "#f9a825",
    "429": "#ef6c00",
    "503": "#8e24aa",
}


@dataclass(frozen=True)
class Chart:
    title: str
    png: bytes
    note: str = ""


def _figure(rows=1, cols=1, size=SIZE, **grid):
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False, **grid)


def _chart(title, figure, note=""):
    figure.suptitle(title, fontsize=12, fontweight="bold")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return Chart(title, buffer.getvalue(), note)


def _paired_bars(axes, labels, left, right, names, colours=(None, None)):
    """Two bars per label (left, right); returns the left bars' x positions."""
    width = 0.4
    at = [x - width / 2 for x in range(len(labels))]
    axes.bar(at, left, width, label=names[0], color=colours[0])
    axes.bar([x + width for x in at], right, width, label=names[1], color=colours[1])
    axes.set_xticks(range(len(labels)), labels, fontsize=7)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return at


def _colour(status):
    return STATUS_COLOURS.get(str(status), "#c62828")


# -- make bench ------------------------------------------------------------------------


def redis_chart(rows):
    figure, ((rate, p99),) = _figure(1, 2)
    clients = [row["clients"] for row in rows]
    for kind, label in (
        ("script", "single script (yardstick)"),
        ("engine", "the engine"),
        ("naive", "first design (one watched hash)"),
    ):
        rate.plot(clients, [row[kind]["successes_per_s"] for row in rows], "o-", label=label)
        p99.plot(clients, [row[kind]["p99_ms"] for row in rows], "o-", label=label)
    for axes, label in ((rate, "reservations/s"), (p99, "p99 latency, ms")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(clients, [str(c) for c in clients])
        axes.set_xlabel("concurrent clients")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    rate.set_ylim(bottom=0)
    # p99 spans milliseconds to seconds; its low corner has room for the legend.
    p99.set_yscale("log")
    p99.legend(fontsize=8, loc="upper left")
    ratios = ", ".join(f"{row['clients']}: {row['ratio']:.2f}" for row in rows)
    return _chart(
        "Redis level: reservations/s by clients",
        figure,
        f"The engine against the yardstick, by clients: {ratios}.",
    )


def _row_label(row):
    return f"{row['scenario']}\n{row['connections']} conns"


def http_rate_chart(rows):
    """Each scenario beside its baseline: the floor (bench/floor.py), or in runs before
    the floor, the app's own /healthz."""
    figure, ((axes,),) = _figure()
    floor = "floor" in rows[0]
    baseline = "floor" if floor else "health"
    scenario = [row["result"]["requests_per_s"] for row in rows]
    at = _paired_bars(
        axes,
        [_row_label(row) for row in rows],
        scenario,
        [row[baseline]["requests_per_s"] for row in rows],
        ("scenario", "the floor beside it" if floor else "/healthz beside it"),
        ("#1565c0", "#90a4ae"),
    )
    for x, row, height in zip(at, rows, scenario, strict=True):
        axes.annotate(
            f"×{row['ratio']:.2f}",
            (x, height),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    axes.set_ylabel("requests/s")
    if floor:
        return _chart(
            "HTTP level: requests/s against the floor",
            figure,
            "Each scenario beside the floor (a bare Flask endpoint on 4 sync gunicorn "
            "workers) measured in alternation with it; the figure over a bar is the ratio.",
        )
    return _chart(
        "HTTP level: requests/s against /healthz",
        figure,
        "Each scenario beside the /healthz baseline measured in alternation with it; "
        "the figure over a bar is the ratio.",
    )


def http_latency_chart(rows):
    figure, ((axes,),) = _figure()
    _paired_bars(
        axes,
        [_row_label(row) for row in rows],
        [row["result"]["p50_ms"] for row in rows],
        [row["result"]["p99_ms"] for row in rows],
        ("p50", "p99"),
    )
    axes.set_ylabel("latency, ms")
    return _chart("HTTP level: latency percentiles", figure)


def drop_chart(drop):
    figure, ((sold, answers),) = _figure(1, 2)
    curve = drop.get("sold_over_time")
    if curve:
        times, units = zip(*curve, strict=True)
        sold.step(times, units, where="post", color="#2e7d32", label="units reserved")
    else:
        sold.text(0.5, 0.5, "not recorded in this run", ha="center", transform=sold.transAxes)
    sold.axhline(drop["units"], color="#616161", linestyle="--", label=f"stock: {drop['units']}")
    if drop.get("sold_out_after_s") is not None:
        sold.axvline(drop["sold_out_after_s"], color="#c62828", linestyle=":", label="sold out")
    sold.set_xlabel("seconds since the drop opened")
    sold.set_ylabel("units")
    sold.set_ylim(0, drop["units"] * 1.1)
    sold.legend(fontsize=8, loc="lower right")
    sold.grid(alpha=0.3)
    statuses = sorted(drop["statuses"].items())
    answers.bar(
        range(len(statuses)),
        [n for _, n in statuses],
        color=[_colour(status) for status, _ in statuses],
    )
    answers.set_xticks(range(len(statuses)), [status for status, _ in statuses])
    answers.set_yscale("log")
    answers.set_ylim(bottom=1)
    answers.set_xlabel("HTTP status")
    answers.set_ylabel("answers")
    answers.grid(axis="y", alpha=0.3)
    return _chart(
        "The drop: units sold over time",
        figure,
        f"{drop['units']} units, {drop['users']} users, {drop['connections']} connections: "
        f"{drop['reservations']} reservations, oversold {drop['oversold']}, "
        f"p99 {drop['p99_ms']:.1f} ms.",
    )


def logins_chart(logins):
    figure, ((axes,),) = _figure()
    rows = [("every login checked", row) for row in logins["capacity"]]
    rows += [("as shipped", row) for row in logins.get("shipped", [])]
    labels = [f"{name}\n{row['connections']} conns" for name, row in rows]
    axes.bar(labels, [row["logins_per_s"] for _, row in rows], color="#1565c0")
    for x, (_, row) in enumerate(rows):
        axes.annotate(
            f"p99 {row['result']['p99_ms']:.0f} ms",
            (x, row["logins_per_s"]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    axes.set_ylabel("logins/s")
    axes.grid(axis="y", alpha=0.3)
    return _chart("Logins/s: the host's capacity and as shipped", figure)


def storm_chart(storm):
    timeline = storm.get("timeline")
    if timeline:
        figure, ((axes,),) = _figure()
        times = [point["t"] for point in timeline]
        for key, style in (("reserve_p50_ms", "-"), ("reserve_p99_ms", "-")):
            axes.plot(times, [point[key] for point in timeline], style, label=key[8:11])
        axes.set_yscale("log")
        axes.set_ylabel("reserve latency, ms")
        axes.set_xlabel("seconds since the storm began")
        axes.axvspan(0, storm["storm_s"], color="#ffe0b2", alpha=0.5, label="the storm")
        logins = axes.twinx()
        logins.plot(
            times,
            [point["logins"] for point in timeline],
            color="#616161",
            linewidth=0.8,
            label="logins/s",
        )
        logins.set_ylabel("logins/s")
        handles = axes.get_legend_handles_labels()
        more = logins.get_legend_handles_labels()
        axes.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper right")
        axes.grid(alpha=0.3)
    else:
        figure, ((axes,),) = _figure()
        phases = [
            (label, storm[key])
            for label, key in (
                ("before", "reserve_before"),
                ("without the storm", "reserve_calm"),
                ("during", "reserve_during"),
                ("after", "reserve_after"),
            )
            if key in storm and not (key == "reserve_calm" and "reserve_before" in storm)
        ]
        _paired_bars(
            axes,
            [label for label, _ in phases],
            [phase["p50_ms"] or 0 for _, phase in phases],
            [phase["p99_ms"] or 0 for _, phase in phases],
            ("p50", "p99"),
        )
        axes.set_ylabel("reserve latency, ms")
    return _chart(
        "Reservations before, during and after the login storm",
        figure,
        f"{storm['accounts']} accounts logging in over {storm['arrival_s']:.0f} s while "
        f"reservations arrive at {storm['reserve_rate']}/s; "
        f"{storm['logins']} logged in, {storm['left']} left.",
    )


def logins_charts(logins):
    charts = [logins_chart(logins)] if logins.get("capacity") else []
    if logins.get("storm"):
        charts.append(storm_chart(logins["storm"]))
    return charts


def bench_charts(report):
    charts = []
    if report.get("redis"):
        charts.append(redis_chart(report["redis"]))
    if report.get("http"):
        charts += [http_rate_chart(report["http"]), http_latency_chart(report["http"])]
    if report.get("drop"):
        charts.append(drop_chart(report["drop"]))
    if report.get("logins"):
        charts += logins_charts(report["logins"])
    return charts


# -- make rehearse ---------------------------------------------------------------------


def _seconds(rehearsal):
    """Every second of the rehearsal, from its first to one past its last."""
    return range(max((row["t"] for row in rehearsal["seconds"]), default=0) + 2)


def _per_second(axes, seconds, values, **style):
    """A value per second drawn as a step over that second (None: a gap)."""
    axes.plot(
        list(seconds),
        [float("nan") if value is None else value for value in values],
        drawstyle="steps-post",
        **style,
    )


def _pairs(points):
    return zip(points, points[1:], strict=False)


def _mark_the_opening(axes, rehearsal):
    if rehearsal.get("drop_opened_s") is not None:
        axes.axvline(rehearsal["drop_opened_s"], color="#616161", linestyle=":", label="drop opens")


def sold_chart(rehearsal):
    figure, ((axes,),) = _figure()
    units, opened = rehearsal["units"], rehearsal.get("drop_opened_s")
    stock = rehearsal.get("stock") or []
    reserved = rehearsal.get("reserved_s") or []
    placed = rehearsal.get("orders_placed_s") or []
    if stock:
        axes.step(
            [t for t, _ in stock],
            [units - available for _, available in stock],
            where="post",
            color="#2e7d32",
            label="units taken (stock − available, as polled)",
        )
    for times, colour, label in (
        (reserved, "#f9a825", "units reserved (as answered)"),
        (placed, "#1565c0", "orders placed"),
    ):
        if times:
            axes.step([0, *times], range(len(times) + 1), where="post", color=colour, label=label)
    axes.axhline(units, color="#616161", linestyle="--", label=f"stock: {units}")
    _mark_the_opening(axes, rehearsal)
    if opened is not None:
        # The sign-ups before the drop are another chart's: show the selling.
        changes = [t for (t, before), (_, after) in _pairs(stock) if after != before]
        axes.set_xlim(max(0, opened - 1), max([opened, *changes, *reserved, *placed]) + 2)
    axes.set_xlabel("seconds since the rehearsal began")
    axes.set_ylabel("units")
    axes.set_ylim(0, units * 1.1)
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(alpha=0.3)
    audit = rehearsal.get("audit") or {}
    return _chart(
        "Units sold over time",
        figure,
        f"{units} units, limit {rehearsal['limit']} per customer, "
        f"{rehearsal['shoppers']} shoppers: sold {audit.get('sold')}, held "
        f"{audit.get('held')}, oversold {rehearsal.get('oversold')}.",
    )


def status_chart(rehearsal):
    figure, ((axes,),) = _figure()
    counts = defaultdict(dict)
    for row in rehearsal["seconds"]:
        for status, n in row["statuses"].items():
            counts[(row["name"], status)][row["t"]] = n
    seconds = _seconds(rehearsal)
    for (name, status), by_second in sorted(counts.items()):
        _per_second(
            axes,
            seconds,
            [by_second.get(t, 0) for t in seconds],
            label=f"{name} {status}",
            # The drop's own request in its status's colour; the others dashed.
            color=_colour(status) if name == "reserve" else None,
            linestyle="-" if name == "reserve" else "--",
        )
    _mark_the_opening(axes, rehearsal)
    axes.set_xlim(0, seconds[-1])
    axes.set_xlabel("seconds since the rehearsal began")
    axes.set_ylabel("requests/s")
    axes.legend(fontsize=7, ncol=2)
    axes.grid(alpha=0.3)
    return _chart(
        "Requests/s by status",
        figure,
        "Each request counts in the second it was sent. Status 0: no answer "
        "(a connection error or timeout).",
    )


def rehearsal_latency_chart(rehearsal):
    figure, ((axes,),) = _figure()
    names = {row["name"] for row in rehearsal["seconds"]}
    # The drop's own request when there is one; otherwise whatever was sent.
    shown = ["reserve"] if "reserve" in names else sorted(names)
    seconds = _seconds(rehearsal)
    for name in shown:
        rows = {row["t"]: row for row in rehearsal["seconds"] if row["name"] == name}
        for key, colour in (("p50_ms", "#1565c0"), ("p95_ms", "#f9a825"), ("p99_ms", "#c62828")):
            _per_second(
                axes,
                seconds,
                [rows[t][key] if t in rows else None for t in seconds],
                color=colour,
                label=f"{name} {key[:3]}",
            )
    _mark_the_opening(axes, rehearsal)
    axes.set_xlim(0, seconds[-1])
    axes.set_xlabel("seconds since the rehearsal began")
    axes.set_ylabel("latency, ms")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return _chart(
        "Latency percentiles per second",
        figure,
        "Of the requests sent in each second: 50th, 95th and 99th percentile.",
    )


def rehearsal_charts(rehearsal):
    return [sold_chart(rehearsal), status_chart(rehearsal), rehearsal_latency_chart(rehearsal)]


# -- make storm ------------------------------------------------------------------------

FAULT_COLOURS = {"primary": "#c62828", "freeze": "#1565c0", "worker": "#9e9e9e"}
FAULT_NAMES = {
    "primary": "Redis primary killed (to recovery)",
    "freeze": "database frozen (to recovery)",
    "worker": "gunicorn worker killed",
}


def _status_group(status):
    """Answers grouped for the chart: served, refused as expected, retry, no answer."""
    if status == "-":
        return "no answer"
    code = int(status)
    if code < 400:
        return "2xx"
    if code == 503:
        return "503 (Retry-After)"
    if code < 500:
        return "4xx refusals"
    return "5xx other"


GROUP_COLOURS = {
    "2xx": "#2e7d32",
    "4xx refusals": "#f9a825",
    "503 (Retry-After)": "#8e24aa",
    "no answer": "#212121",
    "5xx other": "#c62828",
}


def _mark_faults(axes, storm, labelled):
    for fault in storm["faults"]:
        kind = fault["kind"]
        label = FAULT_NAMES[kind] if kind not in labelled else None
        labelled.add(kind)
        if kind == "worker":
            axes.axvline(fault["start"], color=FAULT_COLOURS[kind], linewidth=0.5, label=label)
        else:
            end = max(fault["end"], fault["recovered"] or fault["end"])
            axes.axvspan(fault["start"], end, color=FAULT_COLOURS[kind], alpha=0.25, label=label)


def faults_timeline_chart(storm):
    """Answers per second by kind and the p99 per second, under the faults' spans."""
    figure, ((answers,), (latency,)) = _figure(
        2, 1, size=(10, 6), sharex=True, height_ratios=(3, 2)
    )
    rows = storm["per_second"]
    seconds = [row["t"] for row in rows]
    groups = defaultdict(lambda: [0] * len(rows))
    for n, row in enumerate(rows):
        for status, count in row["statuses"].items():
            groups[_status_group(status)][n] += count
    for name in GROUP_COLOURS:
        if name in groups:
            _per_second(answers, seconds, groups[name], label=name, color=GROUP_COLOURS[name])
    _mark_faults(answers, storm, set())
    answers.set_ylabel("answers/s")
    answers.legend(fontsize=7, ncol=3, loc="upper right")
    answers.grid(alpha=0.3)
    _per_second(latency, seconds, [row["p99_ms"] for row in rows], color="#212121", label="p99")
    _mark_faults(latency, storm, {"primary", "freeze", "worker"})
    latency.set_yscale("log")
    latency.set_ylabel("p99 per second, ms")
    latency.set_xlabel("seconds since the storm began")
    latency.set_xlim(0, seconds[-1] + 1 if seconds else 1)
    latency.grid(alpha=0.3)
    rec = storm["recoveries"]
    primary = rec["primary"]
    return _chart(
        "The storm: answers per second under the faults",
        figure,
        f"{storm['seconds']:.0f} s. Recovered (median, max s): Redis primary "
        f"{primary['median_s']}, {primary['max_s']} over {primary['count']} kills; database "
        f"{rec['freeze']['median_s']}, {rec['freeze']['max_s']} over {rec['freeze']['count']} "
        f"freezes; workers replaced {rec['worker']['median_s']}, {rec['worker']['max_s']} over "
        f"{rec['worker']['count']} kills. p99 outside the faults' spans "
        f"{storm['latency']['outside_p99_ms']} ms.",
    )


# -- the page ----------------------------------------------------------------------------


def charts(report):
    """The charts for one JSON report, whichever tool wrote it."""
    if report.get("kind") == "rehearsal":
        return rehearsal_charts(report)
    if report.get("kind") == "storm":
        return [faults_timeline_chart(report)]
    if "capacity" in report:  # python -m bench.logins
        return logins_charts(report)
    return bench_charts(report)


def _heading(report):
    if report.get("kind") == "rehearsal":
        return f"Drop rehearsal against {report['target']}, {report['when']}"
    if report.get("kind") == "storm":
        return f"FlashCart storm, {report['when']}"
    if "capacity" in report:
        return "FlashCart logins benchmark"
    return f"FlashCart benchmark, {report.get('when', '')} on {report.get('machine', '')}"


def render(report, source=""):
    """The HTML page: a heading, then each chart with its note."""
    heading = html.escape(_heading(report))
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{heading}</title>",
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#212121}"
        "img{max-width:100%}figure{margin:2em 0}figcaption{color:#616161}</style>",
        f"</head><body><h1>{heading}</h1>",
    ]
    if source:
        parts.append(f"<p>From <code>{html.escape(source)}</code>.</p>")
    for chart in charts(report):
        data = base64.b64encode(chart.png).decode("ascii")
        title = html.escape(chart.title)
        parts.append(f"<figure><h2>{title}</h2>")
        parts.append(f'<img alt="{title}" src="data:image/png;base64,{data}">')
        if chart.note:
            parts.append(f"<figcaption>{html.escape(chart.note)}</figcaption>")
        parts.append("</figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(json_path, html_path=None):
    """Write the report for `json_path` (beside it unless told); returns its path."""
    with open(json_path) as source:
        report = json.load(source)
    html_path = html_path or os.path.splitext(json_path)[0] + ".html"
    with open(html_path, "w") as out:
        out.write(render(report, os.path.basename(json_path)))
    return html_path


def write_images(json_path, folder):
    """Each chart of `json_path` as its own PNG in `folder` (for a page of docs)."""
    with open(json_path) as source:
        report = json.load(source)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for chart in charts(report):
        slug = "-".join("".join(c if c.isalnum() else " " for c in chart.title).lower().split())
        paths.append(os.path.join(folder, f"{slug}.png"))
        with open(paths[-1], "wb") as out:
            out.write(chart.png)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="results JSON (bench/results/*.json)")
    parser.add_argument("--images", metavar="DIR", help="also write each chart as a PNG there")
    args = parser.parse_args()
    for path in args.json:
        print(f"Report: {write(path)}")
        for image in write_images(path, args.images) if args.images else ():
            print(f"Image: {image}")


if __name__ == "__main__":
    main()
