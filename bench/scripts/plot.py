"""Draw SVG plots of chorus-bench results: the fanout comparison and the spike scenario.

The input is one or more result folders written by compare.sh or scenarios.sh. Every
``*.json`` file in them that holds a load run (the ``scenario`` field is ``fanout`` or
``spike``) is read; other files are skipped. The plots use the per-second ``timeline`` of each
run, so results from before chorus-bench wrote timelines give bar charts only.

Outputs, in the ``--out`` folder:

* ``fanout-rate-timeline.svg``: per broker, side by side, deliveries per second and the p99
  publish->deliver latency of each second, for the fixed-rate fanout runs.
* ``fanout-bars.svg``: deliveries per broker CPU-second for every fanout workload found, and
  the whole-run p50 and p99 latency of the fixed-rate runs.
* ``spike-timeline.svg``: per broker, deliveries per second and the p50 and p99 latency of
  each second, with the seconds of the raised publish rate shaded.

matplotlib draws the plots: it is the standard, well-maintained plotting library for Python,
writes SVG without a display, and plot.sh installs it into a virtual environment from PyPI.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("svg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FuncFormatter  # noqa: E402

BROKER_NAMES = {"chorus": "chorusd", "nats": "NATS", "redis": "Redis", "mqtt": "Mosquitto"}
BROKER_ORDER = ["chorus", "nats", "redis", "mqtt"]
WORKLOAD_ORDER = ["fanout-rate", "fanout-lag", "fanout-max"]
WORKLOAD_LABELS = {
    "fanout-rate": "fixed rate",
    "fanout-lag": "max rate, backlog bounded",
    "fanout-max": "max rate, unbounded",
}


@dataclass
class Run:
    """One load run read from a chorus-bench JSON result."""

    path: Path
    data: dict
    folder_machine: dict

    @property
    def scenario(self) -> str:
        return self.data["scenario"]

    @property
    def broker(self) -> str:
        return self.data["broker"]

    @property
    def label(self) -> str:
        """Broker name, MQTT QoS and round, as the legends show them."""
        name = BROKER_NAMES.get(self.broker, self.broker)
        if self.data.get("mqtt_qos") is not None:
            name += f" QoS {self.data['mqtt_qos']}"
        round_match = re.search(r"-r(\d+)$", self.path.stem)
        if round_match:
            name += f" (round {round_match.group(1)})"
        return name

    @property
    def sort_key(self) -> tuple:
        broker = BROKER_ORDER.index(self.broker) if self.broker in BROKER_ORDER else 99
        return (broker, self.data.get("mqtt_qos") or 0, self.path.stem)

    @property
    def workload(self) -> str:
        """The compare.sh workload: fixed rate, or max rate with or without a lag bound."""
        parameters = self.data.get("parameters") or {}
        if isinstance(parameters.get("rate"), (int, float)):
            return "fanout-rate"
        max_lag = (parameters.get("load") or {}).get("max_lag", 0)
        return "fanout-lag" if max_lag else "fanout-max"

    @property
    def timeline(self) -> list[dict]:
        return self.data.get("timeline") or []

    def deliveries_per_cpu_sec(self) -> float | None:
        process = self.data.get("broker_process") or {}
        cpu_secs = process.get("cpu_secs")
        if not cpu_secs:
            return None
        return self.data["delivered"] / cpu_secs


def read_folder_machine(folder: Path) -> dict:
    """Read the ``key: value`` lines of a result folder's machine.txt, if there is one."""
    machine_file = folder / "machine.txt"
    if not machine_file.exists():
        return {}
    fields = {}
    for line in machine_file.read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def load_runs(folders: list[Path]) -> list[Run]:
    """Read every fanout and spike result in the folders."""
    runs = []
    for folder in folders:
        if not folder.is_dir():
            sys.exit(f"plot.py: {folder} is not a folder; give result folders such as "
                     "bench/results/compare")
        folder_machine = read_folder_machine(folder)
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                print(f"plot.py: skipped {path}: {error}", file=sys.stderr)
                continue
            if isinstance(data, dict) and data.get("scenario") in ("fanout", "spike"):
                runs.append(Run(path, data, folder_machine))
    return sorted(runs, key=lambda run: run.sort_key)


def machine_text(run: Run) -> str:
    """Describe the machine from the JSON's ``machine`` field, or else from machine.txt."""
    machine = run.data.get("machine")
    if machine:
        parts = []
        if machine.get("cores"):
            parts.append(f"{machine['cores']} cores")
        if machine.get("cpu"):
            parts.append(machine["cpu"])
        if machine.get("memory_mib"):
            parts.append(f"{machine['memory_mib'] / 1024:.0f} GiB")
        if machine.get("load_average"):
            parts.append(f"load average {machine['load_average'][0]:.1f} at start")
        return ", ".join(parts)
    folder = run.folder_machine
    if folder:
        parts = [f"{folder.get('cores', '?')} cores", folder.get("cpu", "")]
        if "load average at start" in folder:
            load = folder["load average at start"].split()[0]
            parts.append(f"load average {load} at start")
        return ", ".join(part for part in parts if part)
    return "machine not recorded"


def date_text(runs: list[Run]) -> str:
    """Return the first and last start dates of the runs, in UTC to the minute."""
    dates = sorted(run.data.get("date", "") for run in runs if run.data.get("date"))
    if not dates:
        return "date not recorded"
    first = dates[0][:16].replace("T", " ")
    last = dates[-1][:16].replace("T", " ")
    if first == last:
        return f"{first} UTC"
    if first[:10] == last[:10]:
        return f"{first} to {last[11:]} UTC"
    return f"{first} to {last} UTC"


def title_for(heading: str, runs: list[Run]) -> str:
    return f"{heading}\n{machine_text(runs[0])}; {date_text(runs)}"


def timeline_series(run: Run, field: str) -> tuple[list[float], list[float]]:
    """Return x (middle of each second) and the field's values, NaN where it is absent."""
    xs, ys = [], []
    for entry in run.timeline:
        xs.append(entry["second"] + 0.5)
        value = entry.get(field)
        ys.append(math.nan if value is None else value)
    return xs, ys


def number_text(value, spec: str) -> str:
    """Format a parameter from the JSON, or "?" when it is missing or not a number."""
    if isinstance(value, (int, float)):
        return format(value, spec)
    return "?"


def thousands(value: float, _position: int) -> str:
    return f"{value:,.0f}"


def latency_formatter(value: float, _position: int) -> str:
    return f"{value:g}"


def set_latency_axis(axis) -> None:
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(latency_formatter))
    axis.grid(True, which="major", alpha=0.3)


def mark_publish_end(axis, run: Run) -> None:
    publish_secs = run.data.get("publish_secs")
    if publish_secs:
        axis.axvline(publish_secs, color="grey", linestyle="--", linewidth=0.8)


def timeline_grid(runs: list[Run], rows: int):
    """Create one column per run with shared axes per row."""
    columns = len(runs)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns + 0.8, 2.6 * rows + 1.2),
        sharex=True, sharey="row", squeeze=False, layout="constrained",
    )
    return figure, axes


def plot_fanout_timeline(runs: list[Run], out: Path) -> Path | None:
    runs = [run for run in runs if run.workload == "fanout-rate" and run.timeline]
    if not runs:
        return None
    figure, axes = timeline_grid(runs, rows=2)
    for column, run in enumerate(runs):
        top, bottom = axes[0][column], axes[1][column]
        top.set_title(run.label)
        xs, deliveries = timeline_series(run, "deliveries")
        top.step(xs, deliveries, where="mid", color="tab:blue")
        top.yaxis.set_major_formatter(FuncFormatter(thousands))
        top.set_ylim(bottom=0)
        top.grid(True, alpha=0.3)
        xs, p99 = timeline_series(run, "p99_ms")
        bottom.plot(xs, p99, marker=".", color="tab:red")
        set_latency_axis(bottom)
        bottom.set_xlabel("seconds since publishing started")
        for axis in (top, bottom):
            mark_publish_end(axis, run)
    axes[0][0].set_ylabel("deliveries per second")
    axes[1][0].set_ylabel("p99 publish→deliver (ms)")
    parameters = runs[0].data.get("parameters") or {}
    heading = (
        f"fanout: 1 topic, {number_text(parameters.get('subscribers'), ',')} subscribers, "
        f"{number_text(parameters.get('rate'), ',.0f')} messages/s "
        f"for {number_text(parameters.get('duration'), 'g')} s (dashed: last publish)"
    )
    figure.suptitle(title_for(heading, runs))
    return save(figure, out / "fanout-rate-timeline.svg")


def plot_fanout_bars(runs: list[Run], out: Path) -> Path | None:
    runs = [run for run in runs if run.scenario == "fanout"]
    if not runs:
        return None
    labels = []
    for run in runs:
        if run.label not in labels:
            labels.append(run.label)
    workloads = [w for w in WORKLOAD_ORDER if any(run.workload == w for run in runs)]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(max(9.0, 1.6 * len(labels) * 2), 4.6), layout="constrained"
    )
    draw_cpu_bars(left, runs, labels, workloads)
    draw_latency_bars(right, runs, labels)
    figure.suptitle(title_for("fanout: deliveries per broker CPU-second and latency", runs))
    return save(figure, out / "fanout-bars.svg")


def draw_cpu_bars(axis, runs: list[Run], labels: list[str], workloads: list[str]) -> None:
    width = 0.8 / max(len(workloads), 1)
    for index, workload in enumerate(workloads):
        values = []
        for label in labels:
            match = [r for r in runs if r.label == label and r.workload == workload]
            value = match[0].deliveries_per_cpu_sec() if match else None
            values.append(math.nan if value is None else value)
        positions = [i + (index - (len(workloads) - 1) / 2) * width for i in range(len(labels))]
        axis.bar(positions, values, width, label=WORKLOAD_LABELS[workload])
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(thousands))
    axis.set_ylabel("deliveries per broker CPU-second")
    axis.set_title("broker CPU efficiency (higher is better)")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize="small")


def draw_latency_bars(axis, runs: list[Run], labels: list[str]) -> None:
    fixed = [run for run in runs if run.workload == "fanout-rate"]
    width = 0.38
    for index, (field, color) in enumerate((("p50", "tab:blue"), ("p99", "tab:red"))):
        values = []
        for label in labels:
            match = [r for r in fixed if r.label == label]
            value = match[0].data["publish_deliver_ms"][field] if match else None
            values.append(math.nan if not value else value)
        positions = [i + (index - 0.5) * width for i in range(len(labels))]
        axis.bar(positions, values, width, label=field, color=color)
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    set_latency_axis(axis)
    axis.set_ylabel("publish→deliver (ms)")
    rate = (fixed[0].data.get("parameters") or {}).get("rate") if fixed else None
    rate_text = f"{rate:,.0f} messages/s" if isinstance(rate, (int, float)) else "fixed rate"
    axis.set_title(f"whole-run latency at {rate_text} (lower is better)")
    axis.legend(fontsize="small")


def spike_window(run: Run) -> tuple[float, float] | None:
    parameters = run.data.get("parameters") or {}
    before, spike = parameters.get("before"), parameters.get("spike_secs")
    if before is None or spike is None:
        return None
    return before, before + spike


def plot_spike_timeline(runs: list[Run], out: Path) -> Path | None:
    runs = [run for run in runs if run.scenario == "spike" and run.timeline]
    if not runs:
        return None
    figure, axes = timeline_grid(runs, rows=2)
    for column, run in enumerate(runs):
        top, bottom = axes[0][column], axes[1][column]
        top.set_title(run.label)
        xs, deliveries = timeline_series(run, "deliveries")
        top.step(xs, deliveries, where="mid", color="tab:blue")
        top.yaxis.set_major_formatter(FuncFormatter(thousands))
        top.set_ylim(bottom=0)
        top.grid(True, alpha=0.3)
        for field, color in (("p50_ms", "tab:blue"), ("p99_ms", "tab:red"), ("max_ms", "grey")):
            xs, values = timeline_series(run, field)
            bottom.plot(xs, values, marker=".", color=color, label=field.removesuffix("_ms"))
        set_latency_axis(bottom)
        bottom.set_xlabel("seconds since publishing started (delivery time)")
        bottom.legend(fontsize="small")
        window = spike_window(run)
        if window:
            for axis in (top, bottom):
                axis.axvspan(*window, color="orange", alpha=0.15, linewidth=0)
    axes[0][0].set_ylabel("deliveries per second")
    axes[1][0].set_ylabel("publish→deliver (ms)")
    parameters = runs[0].data.get("parameters") or {}
    heading = (
        f"spike: {number_text(parameters.get('subscribers'), ',')} subscribers, "
        f"{number_text(parameters.get('rate'), ',.0f')} messages/s, "
        f"×{number_text(parameters.get('factor'), 'g')} in the shaded seconds (by send time)"
    )
    figure.suptitle(title_for(heading, runs))
    return save(figure, out / "spike-timeline.svg")


def save(figure, path: Path) -> Path:
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw SVG plots of chorus-bench fanout and spike results."
    )
    parser.add_argument("folders", nargs="+", type=Path,
                        help="result folders written by compare.sh or scenarios.sh")
    parser.add_argument("--out", type=Path, default=Path("bench/results/plots"),
                        help="folder for the SVG files (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        print("plot.py: no fanout or spike results in the given folders", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    # Text stays text in the SVG, and a fixed hash salt keeps the element ids the same from
    # one run to the next, so unchanged results give unchanged files.
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["svg.hashsalt"] = "chorus-bench"
    plots = [
        plot_fanout_timeline(runs, args.out),
        plot_fanout_bars(runs, args.out),
        plot_spike_timeline(runs, args.out),
    ]
    written = [path for path in plots if path is not None]
    for path in written:
        print(path)
    if not written:
        print("plot.py: the results have no timeline to plot", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
