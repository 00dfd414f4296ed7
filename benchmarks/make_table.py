"""Turn benchmarks/results/*.json into the tables of benchmarks/README.md and README.md, and a plot of
the main dev metric against the real packed model size (benchmarks/metric_vs_size.png).

    python benchmarks/make_table.py
The GLUE table goes between <!-- glue-table --> and <!-- /glue-table --> of benchmarks/README.md; the
summary table between <!-- summary-table --> and <!-- /summary-table --> of README.md. Every gap is
printed twice: at the best dev checkpoint and at the end of the budget (no selection on dev).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from run_glue import ROWS  # the table lists rows in the runner's order

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "glue"
README = HERE / "README.md"
ROOT_README = HERE.parent / "README.md"
TASK_ORDER = ["mrpc", "stsb", "rte", "cola", "sst2"]
# model.safetensors of the FP32 pre-trained models, for the size columns
FP32_BYTES = {"minilm": 90_868_376, "mpnet": 437_971_872}
ROW_ORDER = list(ROWS)

# module_bits names as the tables spell them (BERT / MPNet layout)
_LINEAR_PARTS = {"intermediate": "FFN up", "output": "FFN down",
                 **{f"attention.self.{n}": n for n in ("query", "key", "value")},
                 **{f"attention.attn.{n[0]}": n for n in ("query", "key", "value")},
                 "attention.output.dense": "attention output", "attention.attn.o": "attention output"}


def base_row(row: str) -> str:
    """The runner's row of a result row (rows chosen on held-out data carry a suffix: _sel-...)."""
    return row.split("_sel-", 1)[0]


def teacher_of(row: str) -> str:
    return ROWS[base_row(row)].teacher_row if base_row(row) in ROWS else "teacher"


def load() -> dict:
    cells = defaultdict(list)
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        cells[(r["task"], r["row"])].append(r)
    return cells


def main_value(r: dict, end: bool = False) -> float:
    """The main metric x100: at the kept checkpoint, or (``end``) at the last evaluation of the budget."""
    return 100 * (r["dev_final"] if end else r["metrics"])[r["main_metric"]]


def cell(runs: list[dict]) -> str:
    """The task's main metric (x100), mean ± spread over seeds, its epochs and its end-of-budget value
    (the other metrics are in the result files)."""
    values = [main_value(r) for r in runs]
    text = f"{values[0]:.1f}" if len(values) == 1 else f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    note = ""
    finals = [main_value(r, end=True) for r in runs if r.get("dev_final")]
    if len(finals) == len(runs):  # the last evaluation inside the budget, without checkpoint selection
        note += f" [end {statistics.mean(finals):.1f}]"
    return text + note + (f" n={len(runs)}" if len(runs) > 1 else "")


def metric_name(cells: dict, task: str) -> str:
    """The main metric of ``task`` as its result files name it."""
    return cells[next(k for k in cells if k[0] == task)][0]["main_metric"]


def tasks_and_rows(keys) -> tuple[list[str], list[str]]:
    """The tasks and rows present among (task, row) keys, in the table's column and row order."""
    rows = {k[1] for k in keys}
    ordered = sorted(rows, key=lambda r: (ROW_ORDER.index(base_row(r)) if base_row(r) in ROW_ORDER else 999, r))
    return [t for t in TASK_ORDER if any(k[0] == t for k in keys)], ordered


def gaps(cells: dict, row: str, tasks: list[str], end: bool = False) -> list[float]:
    """Per task, the row's mean gap to its teacher's main metric, each run against the teacher of its
    own seed (its distillation teacher; the teachers' mean over seeds where that seed has none): the
    student at its best checkpoint or (``end``) at the end of its budget, the teacher as reported (the
    fixed reference of every row, as the issues state their goals)."""
    teacher_row = teacher_of(row)
    out = []
    for t in tasks:
        runs, teachers = cells.get((t, row), []), cells.get((t, teacher_row), [])
        if not runs or not teachers or (end and not all(r.get("dev_final") for r in runs)):
            continue
        by_seed = {r["seed"]: main_value(r) for r in teachers}
        mean = statistics.mean(by_seed.values())
        out.append(statistics.mean(main_value(r, end) - by_seed.get(r["seed"], mean) for r in runs))
    return out


def table(cells: dict) -> str:
    tasks, rows = tasks_and_rows(cells)
    rows = [r for r in rows if r not in screened_only()]  # those have a table of their own
    head = ["row", "epochs"] + [t for t in tasks] + ["avg", "vs teacher: best", "vs teacher: end", "packed MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        epochs = sorted({r["epochs"] for t in tasks for r in cells.get((t, row), [])})
        vals, out, sizes = [], [row, "/".join(f"{e:.2g}" for e in epochs)], []
        for t in tasks:
            runs = cells.get((t, row), [])
            out.append(cell(runs) if runs else "–")
            if runs:
                vals.append(statistics.mean(main_value(r) for r in runs))
                sizes += [r["packed_bytes"] for r in runs if r.get("packed_bytes")]
        complete = len(vals) == len(tasks)
        out.append(f"{statistics.mean(vals):.1f}" if complete else "–")
        is_teacher = row == teacher_of(row)
        for end in (False, True):  # the goals are stated against the teacher, over the tasks run so far
            g = [] if is_teacher else gaps(cells, row, tasks, end)
            out.append(f"{statistics.mean(g):+.1f} ({len(g)} task{'s' if len(g) > 1 else ''})" if g else "")
        family = ROWS[base_row(row)].family if base_row(row) in ROWS else "minilm"
        out.append(f"{sizes[0] / 1e6:.2f}" if sizes else
                   (f"{FP32_BYTES[family] / 1e6:.1f} (FP32)" if is_teacher else "–"))
        lines.append("| " + " | ".join(out) + " |")
    shown = {k: runs for k, runs in cells.items() if k[1] in rows}
    commands = compact_commands(r["command"] for runs in shown.values() for r in runs)
    single = sorted({runs[0]["seed"] for runs in shown.values() if len(runs) == 1})
    single_seeds = f", other cells are seed {'/'.join(map(str, single))}" if single else ""
    metric_note = ", ".join(f"{t} {metric_name(cells, t)}" for t in tasks)
    return "\n".join(lines) + f"\n\nx100, dev: {metric_note}; epochs of the row's units (SST-2's budget is a sixth); cells are the best dev checkpoint " \
        "(MRPC: on mean(F1, acc)), [end X] = the main metric at the end of the budget; a ± b n=N = mean and " \
        f"standard deviation over N seeds{single_seeds}; avg = mean main metric, best checkpoint; vs teacher = " \
        "mean gap to the row's teacher (as reported) over the tasks run, each run against its own seed's " \
        "teacher: best = the student's best checkpoint, end = its end of budget. Rows that screen one change of " \
        "the binary recipe are in the screening table below." \
        "\n\nReproduce a cell:\n```\n" + \
        "\n".join(commands) + "\n```\n"


def compact_commands(commands) -> list[str]:
    """The one-unit commands recorded in the result files, merged into one runner command per row,
    extra flags and set of seeds, listing the tasks that ran with exactly those seeds."""
    import shlex

    units: dict = defaultdict(set)  # (rows, extra flags, task) -> seeds
    for command in set(commands):
        flags: dict = {}
        key = None
        for word in shlex.split(command)[2:]:
            if word.startswith("--"):
                key = word
                flags[key] = []
            elif key:
                flags[key].append(word)
        extra = tuple((k, tuple(v)) for k, v in sorted(flags.items()) if k not in ("--tasks", "--rows", "--seeds"))
        for task in flags.get("--tasks", []):
            units[(tuple(flags.get("--rows", [])), extra, task)].update(flags.get("--seeds", []))
    groups: dict = defaultdict(list)
    for (rows, extra, task), seeds in units.items():
        groups[(rows, extra, tuple(sorted(seeds)))].append(task)
    lines = []
    for (rows, extra, seeds), tasks in groups.items():
        ordered = sorted(tasks, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99)
        tail = "".join(f" {k} {' '.join(v)}" for k, v in extra)
        lines.append(f"python benchmarks/run_glue.py --rows {' '.join(rows)} --tasks {' '.join(ordered)} "
                     f"--seeds {' '.join(seeds)}{tail}")
    return sorted(lines, key=lambda line: (ROW_ORDER.index(line.split()[3]) if line.split()[3] in ROW_ORDER else 99,
                                           line))


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
        family = ROWS[base_row(row)].family if base_row(row) in ROWS else "minilm"
        size = runs[0].get("packed_bytes") or (FP32_BYTES[family] if row == teacher_of(row) else None)
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


# The rows of README.md's summary table: (label, result row, inference file, model key, packed variant)
SUMMARY = [
    ("MiniLM-L6, ternary, 9 epochs, short warm-up, no dropout, batch 32", "6l_w2a8_long_drop0",
     "inference.json", "minilm", "packed_w2a8"),
    ("MiniLM-L6, ternary, 9 epochs, the paper's warm-up and dropout", "6l_w2a8_long", "inference.json", "minilm",
     "packed_w2a8"),
    ("MiniLM-L6, ternary, 3 epochs, xtc's defaults", "6l_w2a8_warm10_drop0_bs16", "inference.json", "minilm",
     "packed_w2a8"),
    ("MiniLM-L6, ternary, 3 epochs, short warm-up, no dropout, batch 32", "6l_w2a8_warm10_drop0",
     "inference.json", "minilm", "packed_w2a8"),
    ("MiniLM-L6, ternary, 3 epochs, the paper's warm-up and dropout", "6l_w2a8", "inference.json", "minilm",
     "packed_w2a8"),
    ("MiniLM-L6, binary row-wise, 18 epochs", "6l_w1a8_xlong_row", "inference.json", "minilm", "packed_w1a8"),
    ("MiniLM-L6, binary, 3 epochs, xtc's defaults", "6l_w1a8_warm10_drop0_bs16", "inference.json", "minilm",
     "packed_w1a8"),
    ("MiniLM-L6, binary, 3 epochs, short warm-up, no dropout, batch 32", "6l_w1a8_warm10_drop0",
     "inference.json", "minilm", "packed_w1a8"),
    ("MiniLM-L6, binary, 3 epochs, the paper's warm-up and dropout", "6l_w1a8", "inference.json", "minilm",
     "packed_w1a8"),
    ("MiniLM-L6 -> 3 layers, binary, 3 epochs", "3l_w1a8", None, None, None),
    ("MPNet-base (BERT-base size), 12 layers, binary", "mpnet_12l_w1a8", None, None, None),
    ("MPNet-base -> 5 layers, binary", "mpnet_5l_w1a8", "inference_mpnet.json", "mpnet", "packed_student"),
]


def _latency(file: str | None, model: str | None, variant: str | None) -> tuple[str, str]:
    """``(x FP32, x ORT int8)`` of the 1-thread, batch-1 CPU-time medians of one inference result file."""
    path = HERE / "results" / (file or "")
    if not file or not path.exists():
        return "–", "–"
    m = json.loads(path.read_text())["models"].get(model, {})
    v = m.get("variants", {})
    if variant not in v or "fp32" not in v:
        return "–", "–"

    def ms(name):
        return v[name]["latency"]["t1_b1"]["cpu_median_ms"]

    ort = f"{ms(variant) / ms('ort_int8'):.2f}x" if "ort_int8" in v else "–"
    return f"{ms(variant) / ms('fp32'):.2f}x", ort


# issue 33's screening: (row, what it changes, the row it is compared with: same seed, budget and batches
# but for that one change)
SCREENING = (
    ("6l_w1a8_grouped", "length-grouped batches (xtc's default)", "6l_w1a8"),
    ("6l_w1a8_swa", "weights averaged over the last third", "6l_w1a8_grouped"),
    ("6l_w1a8_att01", "attention term weighted 0.1 (it is ~90 % of the loss at 1)", "6l_w1a8"),
    ("6l_w1a8_tern33", "ternary for the first third of the steps, then binary (`ternary_first`)", "6l_w1a8_grouped"),
    ("6l_w1a8_tern50", "ternary for the first half of the steps, then binary", "6l_w1a8_grouped"),
    ("6l_w1a8_warm10", "warm-up over a tenth of the budget instead of a third", "6l_w1a8_grouped"),
    ("6l_w1a8_warm10_random", "warm-up over a tenth of the budget, random batches", "6l_w1a8"),
    ("6l_w1a8_lsq", "learned scale per matrix (LSQ step size) instead of mean abs(W)", "6l_w1a8_grouped"),
    ("6l_w1a8_warm10_pred10", "prediction term weighted 10 instead of 1", "6l_w1a8_warm10"),
    ("6l_w1a8_warm10_lr2", "twice the learning rate (1e-4)", "6l_w1a8_warm10"),
    ("6l_w1a8_warm10_hid10", "hidden-state term weighted 10 instead of 1", "6l_w1a8_warm10"),
    ("6l_w1a8_warm10_row", "one weight scale per output row instead of one per matrix", "6l_w1a8_warm10"),
    ("6l_w1a8_warm10_lat30", "latent weights' rate 30x the learning rate instead of 10x", "6l_w1a8_warm10"),
    ("6l_w1a8_warm10_drop0", "the student's dropout off (0 instead of the model's 0.1)", "6l_w1a8_warm10"),
    ("6l_w2a8_warm10_drop0", "ternary (W2A8): the student's dropout off", "6l_w2a8_warm10"),
    ("6l_w1a8_warm10_drop0_bs16", "batch 16 instead of 32: twice the optimizer steps in 3 epochs", "6l_w1a8_warm10_drop0"),
    ("6l_w2a8_warm10_drop0_bs16", "ternary (W2A8) at batch 16 instead of 32", "6l_w2a8_warm10_drop0"),
    ("6l_w1a8_warm10_drop0_bs8", "batch 8 instead of 16: twice the steps again", "6l_w1a8_warm10_drop0_bs16"),
)
SCREEN_TASKS = ("mrpc", "stsb", "cola")


def screened_only() -> set[str]:
    """The rows that are screened changes (not also a baseline, nor a summary row such as xtc's defaults): the
    screening table shows them, the GLUE table does not."""
    return ({row for row, _, _ in SCREENING} - {baseline for _, _, baseline in SCREENING}
            - {row for _, row, *_ in SUMMARY})


def screening_table(cells: dict) -> str:
    """Each screened row against its baseline over the seeds both ran (paired): the mean main metric at
    the end of the budget, the mean best checkpoint in brackets, and how many seeds."""
    def reading(task, row, seeds):
        runs = [r for r in cells.get((task, row), []) if r["seed"] in seeds]
        return (f"{statistics.mean(main_value(r, end=True) for r in runs):.1f} "
                f"({statistics.mean(main_value(r) for r in runs):.1f})")

    def seeds_of(task, row):
        return {r["seed"] for r in cells.get((task, row), [])}

    label = {"mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA"}
    names = {t: f"{label[t]} {metric_name(cells, t)}" for t in SCREEN_TASKS if any(k[0] == t for k in cells)}
    lines = ["| row | what changes | baseline | " + " | ".join(names.values()) + " |",
             "|---|---|---|" + "---|" * len(names)]
    single = set()  # the seed of every cell that has one
    for row, what, baseline in SCREENING:
        values = []
        for t in names:
            seeds = seeds_of(t, row) & seeds_of(t, baseline)
            single |= seeds if len(seeds) == 1 else set()
            values.append(f"{reading(t, row, seeds)} vs {reading(t, baseline, seeds)}"
                          f"{f' n={len(seeds)}' if len(seeds) > 1 else ''}" if seeds else "–")
        lines.append(f"| `{row}` | {what} | `{baseline}` | " + " | ".join(values) + " |")
    return ("\n".join(lines) + "\n\n3 epochs, x100: the end of the budget, in brackets the best checkpoint (chosen "
            "on the dev set it reports); row vs baseline, each the mean over the seeds both ran (n of them where more "
            f"than one; seed {'/'.join(map(str, sorted(single)))} otherwise).\n")


# issue 32's goals at the paper's scale: (row, the most it may trail its teacher, end of budget)
MPNET_GAP_GOALS = (("mpnet_12l_w1a8", 1.0), ("mpnet_5l_w1a8", 2.5), ("mpnet_6l_w2a8", 1.0))


def mpnet_goals_table(cells: dict) -> str:
    """Issue 32's goals against the results so far: each gap at the end of the budget (best checkpoint
    beside it) over the tasks the row ran, and the 5-layer FP32 copy against all-MiniLM-L6-v2 under the
    same KD over the tasks both ran; met, or missed and by how much."""
    tasks = tasks_and_rows(cells)[0]
    lines = ["| goal | tasks | end of budget (best checkpoint) | verdict |", "|---|---|---|---|"]
    for row, allowed in MPNET_GAP_GOALS:
        end, best = gaps(cells, row, tasks, end=True), gaps(cells, row, tasks)
        ran = [t for t in tasks if cells.get((t, row)) and cells.get((t, teacher_of(row)))]
        if not end:
            lines.append(f"| `{row}` within {allowed:g} of the teacher | – | not run yet | – |")
            continue
        gap = statistics.mean(end)
        verdict = "met" if gap >= -allowed else f"missed by {-gap - allowed:.1f}"
        lines.append(f"| `{row}` within {allowed:g} of the teacher | {', '.join(ran)} | "
                     f"{gap:+.1f} ({statistics.mean(best):+.1f}) | {verdict} |")
    both = [t for t in tasks if cells.get((t, "mpnet_5l_fp32_copy")) and cells.get((t, "mpnet_minilm_fp32"))]
    if both:
        def mean_of(row, end):
            return statistics.mean(statistics.mean(main_value(r, end) for r in cells[(t, row)]) for t in both)

        margin = mean_of("mpnet_5l_fp32_copy", True) - mean_of("mpnet_minilm_fp32", True)
        best = mean_of("mpnet_5l_fp32_copy", False) - mean_of("mpnet_minilm_fp32", False)
        verdict = "met" if margin >= 0 else f"missed by {-margin:.1f}"
        lines.append(f"| `mpnet_5l_fp32_copy` at least `mpnet_minilm_fp32` | {', '.join(both)} | "
                     f"{margin:+.1f} ({best:+.1f}) | {verdict} |")
    return ("\n".join(lines) + "\n\nGaps: mean over the tasks of the main metric x100 against the row's teacher "
            "(the last row: the copy minus the MiniLM student); seed 42 unless the GLUE table says more.\n")


def summary_table(cells: dict) -> str:
    head = ["configuration", "bits", "layers", "MB", "x smaller", "GLUE gap, end of budget (best ckpt)",
            "CPU latency vs FP32", "vs ONNX Runtime int8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row, file, model, variant in SUMMARY:
        runs = [r for (t, name), rs in cells.items() if name == row and t in TASK_ORDER for r in rs]
        if not runs:
            continue
        tasks = [t for t in TASK_ORDER if (t, row) in cells]
        end, best = gaps(cells, row, tasks, end=True), gaps(cells, row, tasks)
        size = next((r["packed_bytes"] for r in runs if r.get("packed_bytes")), None)
        fp32 = FP32_BYTES[ROWS[row].family]
        seeds = sorted({len(cells[(t, row)]) for t in tasks})  # seeds per task, shown as "1-3 seeds"
        seeds_text = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"{seeds[0]}"
        gap = (f"{statistics.mean(end):+.1f} ({statistics.mean(best):+.1f}), {len(best)} task"
               f"{'s' if len(best) > 1 else ''}, {seeds_text} seed{'s' if seeds[-1] > 1 else ''}"
               ) if best and len(end) == len(best) else "–"
        lat_fp32, lat_ort = _latency(file, model, variant)
        lines.append("| " + " | ".join([label, f"W{runs[0]['weight_bits']}A8", str(runs[0]["layers"]),
                                        f"{size / 1e6:.2f}" if size else "–", f"{fp32 / size:.0f}x" if size else "–",
                                        gap, lat_fp32, lat_ort]) + " |")
    return "\n".join(lines) + "\n"


def ort_summary() -> str:
    """One line under README.md's summary table: packed latency over ONNX Runtime int8's in every cell of
    results/inference.json (models x W1A8/W2A8 x thread counts x batches), and how many meet issue 34's
    0.6x."""
    path = HERE / "results" / "inference.json"
    if not path.exists():
        return ""
    results = json.loads(path.read_text())
    per_model, met, cells = [], 0, 0
    for model, m in results["models"].items():
        v = m["variants"]
        if "ort_int8" not in v:
            continue
        ratios = []
        for variant in ("packed_w1a8", "packed_w2a8"):
            for key, ort in v["ort_int8"]["latency"].items():
                field = "median_ms" if key.startswith("t2") else "cpu_median_ms"  # as the tables: 2t wall, 1t CPU
                ratios.append(v[variant]["latency"][key][field] / ort[field])
        met, cells = met + sum(r <= 0.6 for r in ratios), cells + len(ratios)
        per_model.append(f"{model} {min(ratios):.2f}-{max(ratios):.2f}x")
    return (f"\nPacked W1A8 / W2A8 against ONNX Runtime int8 of the same model, batch 1 and 32, 1 and 2 threads "
            f"({results['machine']['cpu']}, `{results['command']}`): {', '.join(per_model)} of its latency; "
            f"at most 0.6x in {met} of {cells} cells.\n")


def training(seeds: list[dict]) -> str:
    """Training wall time of an embedding row in minutes (the range over its seeds, which may have run on
    different machines), with bf16 autocast or FP32 and the torch threads."""
    walls = [r.get("train_wall_s") for r in seeds]
    if not all(walls):
        return "–"
    minutes = sorted(sum(w.values()) / 60 if isinstance(w, dict) else w / 60 for w in walls)
    span = f"{minutes[0]:.0f}" if round(minutes[0]) == round(minutes[-1]) else f"{minutes[0]:.0f}-{minutes[-1]:.0f}"
    r = seeds[0]
    threads = r.get("threads")
    return f"{span} ({'bf16' if r.get('bf16') else 'FP32'}, {threads if threads else '?'})"


def embedding_table() -> str:
    """Sentence embedders (results/embedding/*.json): STS-B Spearman and MRPC retrieval at the end of the
    budget (best evaluation on the way beside it, labelled), file size, and throughput at batch 32 from
    results/inference_embed.json when it has the row's model."""
    files = sorted((HERE / "results" / "embedding").glob("*.json"))
    if not files:
        return "(no embedding results yet)\n"
    runs = [json.loads(f.read_text()) for f in files]
    speed = {}
    path = HERE / "results" / "inference_embed.json"
    if path.exists():
        for model, m in json.loads(path.read_text())["models"].items():
            for variant, v in m["variants"].items():
                lat = v["latency"].get("t1_b32") or {}
                ms = lat.get("cpu_median_ms") or lat.get("median_ms")
                if ms:
                    speed[(model, variant)] = 32 / ms * 1e3
    owner = {"minilm_fp32": ("minilm_embed", "fp32"), "minilm_w1a8": ("minilm_embed", "packed_student"),
             "mpnet_fp32": ("mpnet_embed", "fp32"), "mpnet_6l_w1a8": ("mpnet_embed", "packed_student")}
    head = ["row", "model", "bits", "layers", "epochs", "seeds", "STS-B Spearman, end (best eval)",
            "MRPC recall@1, end (at that eval)", "MRR, end", "file MB", "sentences/s, b32, 1 thread",
            "training: minutes (precision, threads)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_row = defaultdict(list)
    for r in runs:
        by_row[r["row"]].append(r)
    for seeds in sorted(by_row.values(), key=lambda rs: (rs[0]["model"], -rs[0]["weight_bits"], rs[0]["row"])):
        seeds.sort(key=lambda r: r["seed"])
        r = seeds[0]  # the row's settings and file: its first seed's

        def with_best(key, spread=False):  # mean over the seeds (± their standard deviation)
            ends = [100 * x["metrics"][key] for x in seeds]
            bests = [100 * x["best_dev"][key] for x in seeds if x.get("best_dev")]
            value = f"{statistics.mean(ends):.1f}"
            if spread and len(ends) > 1:
                value += f" ± {statistics.stdev(ends):.1f}"
            return value + (f" ({statistics.mean(bests):.1f})" if len(bests) == len(seeds) else "")

        def epochs(e):  # per stage (FP32 layer reduction + QAT) or a number
            return " + ".join(f"{v:g}" for v in e.values()) if isinstance(e, dict) else f"{e:g}" if e else "–"

        def bits(r):
            if r["weight_bits"] == 32:
                return "FP32"
            emb = r.get("embedding_bits")
            by_bits = defaultdict(list)  # {"intermediate": 2, "attention.attn.q": 2} -> "FFN up, query 2-bit"
            for name, b in (r.get("module_bits") or {}).items():
                by_bits[b].append(_LINEAR_PARTS.get(name, name))
            mixed = ", ".join(f"{', '.join(names)} {b}-bit" for b, names in by_bits.items())
            return (f"W{r['weight_bits']}A8" + (f", {mixed}" if mixed else "")
                    + (f", word emb. {emb}-bit" if emb and emb != r["weight_bits"] else "")
                    + (", row scales" if r.get("weight_groups") == "row" else ""))

        rate = speed.get(owner.get(r["row"], ("", "")))
        lines.append("| " + " | ".join([
            r["row"], r["model"], bits(r), str(r["layers"]), epochs(r["epochs"]),
            "/".join(str(x["seed"]) for x in seeds), with_best("stsb_spearman", spread=True),
            with_best("recall_at_1"), f"{statistics.mean(100 * x['metrics']['mrr'] for x in seeds):.1f}",
            f"{r['file_bytes'] / 1e6:.1f}", f"{rate:.0f}" if rate else "–", training(seeds)]) + " |")
    commands = sorted({r["command"] for r in runs})
    text = "\n".join(lines) + "\n\nCommands: " + "; ".join(f"`{c}`" for c in commands) + "\n"
    if path.exists():  # every variant timed, ONNX Runtime int8 of the FP32 models included
        results = json.loads(path.read_text())
        machine = results["machine"]
        text += (f"\nSpeed (`{results['command']}`; {machine['cpu']}, {' '.join(machine.get('isa') or [])}, "
                 f"load average {machine['load_average_at_start'][0]:.1f} at the start; 1 thread, CPU-time medians, "
                 f"{results['seq']} tokens):\n\n| model | variant | file MB | batch 1, ms | batch 32, sentences/s |\n"
                 "|---|---|---|---|---|\n")
        for model, m in results["models"].items():
            for variant, v in m["variants"].items():
                b1 = (v["latency"].get("t1_b1") or {}).get("cpu_median_ms")
                rate = speed.get((model, variant))
                text += (f"| {model} | {variant} | {m['file_bytes'][variant] / 1e6:.1f} | "
                         f"{f'{b1:.1f}' if b1 else '–'} | {f'{rate:.0f}' if rate else '–'} |\n")
    return text


def bf16_table() -> str:
    """bf16 autocast against FP32 training: the step-time ratio measured side by side
    (results/step_time_bf16.json) and the end-of-budget metrics of embedding rows that differ only in it."""
    text = ""
    path = HERE / "results" / "step_time_bf16.json"
    if path.exists():
        r = json.loads(path.read_text())
        med = r["median_s"]
        text += (f"Step time (`{r['command']}`, {r['torch_threads']} threads, {r.get('isa') or 'ISA not recorded'}): "
                 f"QAT + KD step of {r['task']}, batch {r['batch_size']}, FP32 {med['qat_kd']:.2f} s, bf16 autocast "
                 f"{med['qat_kd_bf16']:.2f} s: **{r['ratio_bf16_over_fp32']:.2f}x**.\n\n")
    pairs = [("minilm_w1a8", "minilm_w1a8_bf16")]
    lines = ["| rows (FP32 / bf16) | STS-B Spearman, end | MRPC recall@1, end | training minutes (threads) |",
             "|---|---|---|---|"]
    for a, b in pairs:
        fa, fb = (HERE / "results" / "embedding" / f"{x}-42.json" for x in (a, b))
        if not (fa.exists() and fb.exists()):
            continue
        ra, rb = json.loads(fa.read_text()), json.loads(fb.read_text())
        cell = lambda key: f"{100 * ra['metrics'][key]:.1f} / {100 * rb['metrics'][key]:.1f}"  # noqa: E731
        lines.append(f"| {a} / {b} | {cell('stsb_spearman')} | {cell('recall_at_1')} | {training([ra])} / {training([rb])} |")
    return text + ("\n".join(lines) + "\n" if len(lines) > 2 else "")


def _replace_between(path: Path, name: str, body: str) -> None:
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text() if path.exists() else f"{start}\n{end}\n"
    if start not in text:
        return
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(before + start + "\n" + body + end + after)


def main():
    cells = load()
    _replace_between(README, "glue-table", table(cells))
    _replace_between(ROOT_README, "summary-table", summary_table(cells) + ort_summary())
    from bench_inference import ort_table
    from bench_inference import table as inference_table

    _replace_between(README, "mpnet-goals-table", mpnet_goals_table(cells))
    _replace_between(README, "screening-table", screening_table(cells))
    _replace_between(README, "embedding-table", embedding_table())
    _replace_between(README, "bf16-table", bf16_table())
    kernels = HERE / "results" / "kernels.json"
    if kernels.exists():
        from bench_kernels import table as kernels_table

        _replace_between(README, "kernels-table", kernels_table(json.loads(kernels.read_text())) + "\n")
    for name in ("inference", "inference_mpnet", "inference_embed"):
        path = HERE / "results" / f"{name}.json"
        if path.exists():
            results = json.loads(path.read_text())
            machine = results["machine"]
            head = (f"`{results['command']}`: {machine['cpu']}, {machine.get('isa') or 'ISA not recorded'}, "
                    f"{machine['cores_visible']} cores, load average {machine['load_average_at_start'][0]:.1f} at the "
                    "start; milliseconds, in brackets the ratio to FP32; `2t b1` = 2 threads, batch 1 (wall time), "
                    "1 thread: CPU time.\n\n")
            _replace_between(README, f"{name.replace('_', '-')}-table", head + inference_table(results) + "\n")
            if name == "inference":
                _replace_between(README, "inference-ort-table", ort_table(results) + "\n")
    plot(cells)
    print(table(cells))
    print(summary_table(cells))
    print("end-of-budget gaps per row (vs each row's teacher, mean over the tasks run):")
    tasks, rows = tasks_and_rows(cells)
    for row in rows:
        g = gaps(cells, row, tasks, end=True)
        if g and row != teacher_of(row):
            print(f"  {row}: {statistics.mean(g):+.2f} over {len(g)} tasks")


if __name__ == "__main__":
    main()
