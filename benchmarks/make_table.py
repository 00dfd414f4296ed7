"""Turn benchmarks/results/glue/*.json into the table of benchmarks/README.md and a plot of the
main dev metric against the real packed model size (benchmarks/metric_vs_size.png).

    python benchmarks/make_table.py
The table goes between the markers <!-- glue-table --> and <!-- /glue-table --> of the README.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from run_glue import ROWS as ROW_ORDER  # the table lists rows in the runner's order

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "glue"
README = HERE / "README.md"
TASK_ORDER = ["mrpc", "stsb", "rte", "cola", "sst2"]
FP32_MINILM_BYTES = 90_868_376  # model.safetensors of all-MiniLM-L6-v2 (FP32), for the size column


def load() -> dict:
    cells = defaultdict(list)
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        cells[(r["task"], r["row"])].append(r)
    return cells


def main_value(r: dict) -> float:
    return 100 * r["metrics"][r["main_metric"]]


def cell(runs: list[dict]) -> str:
    """All of the task's metrics (x100, in metric_names order), mean ± spread over seeds."""
    parts = []
    for name in runs[0]["metric_names"]:
        values = [100 * r["metrics"][name] for r in runs]
        parts.append(f"{values[0]:.1f}" if len(values) == 1 else
                     f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
    epochs = {r["epochs"] for r in runs}
    note = f" ({'/'.join(f'{e:g}' for e in sorted(epochs))} ep)"
    finals = [100 * r["dev_final"][r["main_metric"]] for r in runs if r.get("dev_final")]
    if len(finals) == len(runs):  # the last evaluation inside the budget, without checkpoint selection
        note += f" [end {statistics.mean(finals):.1f}]"
    return "/".join(parts) + note + (f" n={len(runs)}" if len(runs) > 1 else "")


def tasks_and_rows(keys) -> tuple[list[str], list[str]]:
    """The tasks and rows present among (task, row) keys, in the table's column and row order."""
    return ([t for t in TASK_ORDER if any(k[0] == t for k in keys)],
            [r for r in ROW_ORDER if any(k[1] == r for k in keys)])


def table(cells: dict) -> str:
    tasks, rows = tasks_and_rows(cells)
    head = ["row"] + [t for t in tasks] + ["avg", "vs teacher", "packed MB", "train wall (min, per task)"]
    teacher = {(t, r["seed"]): main_value(r) for t in tasks for r in cells.get((t, "teacher"), [])}
    teacher_mean = {t: statistics.mean(main_value(r) for r in cells[(t, "teacher")]) for t in tasks
                    if (t, "teacher") in cells}

    def gap(t: str, runs: list[dict]) -> float:
        # paired: each run against the teacher of its own seed (its distillation teacher), so a
        # one-seed row is not compared with a mean over seeds it never saw; the seeds' mean otherwise
        return statistics.mean(main_value(r) - teacher.get((t, r["seed"]), teacher_mean[t]) for r in runs)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        vals, out, sizes, walls = [], [row], [], []
        for t in tasks:
            runs = cells.get((t, row), [])
            out.append(cell(runs) if runs else "–")
            if runs:
                vals.append(statistics.mean(main_value(r) for r in runs))
                sizes += [r["packed_bytes"] for r in runs if r.get("packed_bytes")]
                walls += [r["train_wall_s"] / 60 for r in runs]
        complete = len(vals) == len(tasks)
        out.append(f"{statistics.mean(vals):.1f}" if complete else "–")
        # the goals are stated against the teacher: mean gap over the tasks this row has so far
        gaps = [gap(t, cells[(t, row)]) for t in tasks if (t, row) in cells and t in teacher_mean]
        out.append("" if row == "teacher" or not gaps else f"{statistics.mean(gaps):+.1f} ({len(gaps)} tasks)")
        out.append(f"{sizes[0] / 1e6:.2f}" if sizes else ("90.9 (FP32)" if row == "teacher" else "–"))
        out.append(f"{statistics.mean(walls):.0f}" if walls else "–")
        lines.append("| " + " | ".join(out) + " |")
    commands = sorted({r["command"] for runs in cells.values() for r in runs})
    single = sorted({runs[0]["seed"] for runs in cells.values() if len(runs) == 1})
    single_seeds = f", other cells are seed {'/'.join(map(str, single))}" if single else ""
    metric_note = ", ".join(f"{t}: {'/'.join(cells[next(k for k in cells if k[0] == t)][0]['metric_names'])}"
                            for t in tasks)
    return "\n".join(lines) + f"\n\nMetrics per task (x100, dev): {metric_note}; (N ep) = training epochs of the " \
        "row; cells are the best dev checkpoint (MRPC: selected on mean(F1, acc)), [end X] = the main metric " \
        "of the last evaluation inside the budget, without selection; a ± b n=N = mean and sample standard " \
        f"deviation over N seeds (each seed with its own teacher; [end X] and avg use the mean){single_seeds}; " \
        "avg = mean of each task's main metric " \
        "(first listed), best checkpoint, over all tasks; vs teacher = the row's mean gap to the teacher's main " \
        "metric over the tasks the row has run, each run against the teacher of its own seed." \
        "\n\nReproduce a cell:\n```\n" + \
        "\n".join(commands) + "\n```\n"


def plot(cells: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: pip install -e .[bench] for the plot")
        return
    # Colour says the row, marker the task: one legend entry per row and per task stays readable
    # as the table grows (an entry per point did not).
    points = {}  # (task, row) -> (MB, mean metric), for the rows that have a file size
    for (task, row), runs in cells.items():
        if task not in TASK_ORDER:  # as in the table: only the five tasks
            continue
        size = runs[0].get("packed_bytes") or (FP32_MINILM_BYTES if row == "teacher" else None)
        if size:
            points[task, row] = (size / 1e6, statistics.mean(main_value(r) for r in runs))
    # the same orders as the table's rows and columns, so the legends read like the table
    tasks, rows = tasks_and_rows(points)
    colours = {row: plt.cm.tab20(i % 20) for i, row in enumerate(rows)}
    markers = dict(zip(tasks, "os^Dv<>ph*"))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (task, row), (mb, value) in sorted(points.items()):
        ax.scatter(mb, value, color=colours[row], marker=markers[task], s=28)
    ax.set_xscale("log")
    ax.set_xlabel("model file size (MB, log scale; packed file for quantized rows)")
    ax.set_ylabel("dev metric (x100)")
    row_keys = [plt.Line2D([], [], ls="", marker="o", color=colours[r], label=r) for r in rows]
    task_keys = [plt.Line2D([], [], ls="", marker=markers[t], color="grey", label=t) for t in tasks]
    first = ax.legend(handles=row_keys, fontsize=7, title="row", title_fontsize=7,
                      loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    second = ax.legend(handles=task_keys, fontsize=7, title="task", title_fontsize=7,
                       loc="lower left", bbox_to_anchor=(1.01, 0.0))
    fig.tight_layout()
    # "tight" with the legends named, so that the image grows to hold them outside the axes
    fig.savefig(HERE / "metric_vs_size.png", dpi=120, bbox_inches="tight", bbox_extra_artists=[first, second])


def main():
    cells = load()
    text = README.read_text() if README.exists() else "<!-- glue-table -->\n<!-- /glue-table -->\n"
    start, end = "<!-- glue-table -->", "<!-- /glue-table -->"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    README.write_text(before + start + "\n" + table(cells) + end + after)
    plot(cells)
    print(table(cells))


if __name__ == "__main__":
    main()
