"""benchmarks/run_glue.py's rows are one table; every paper-scale row has a recipe in recipes/ that
trains the same student (layers, bits, learning rates, budget)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from xtc.config import TrainConfig
from xtc.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _benchmark_script(name: str):
    """benchmarks/NAME.py imported as module NAME."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_glue():
    return _benchmark_script("run_glue")


# row -> the recipe that reproduces it (a quantized row's recipe also trains its FP32 copy first)
RECIPES = {"mpnet_teacher": "mpnet-12l-fp32", "mpnet_12l_w2a8": "mpnet-12l-w2a8", "mpnet_12l_w1a8": "mpnet-12l-w1a8",
           "mpnet_6l_fp32_copy": "mpnet-6l-fp32", "mpnet_5l_fp32_copy": "mpnet-5l-fp32",
           "mpnet_6l_w2a8": "mpnet-6l-w2a8", "mpnet_6l_w1a8": "mpnet-6l-w1a8", "mpnet_5l_w1a8": "mpnet-5l-w1a8",
           "mpnet_minilm_fp32": "mpnet-minilm-fp32", "mpnet_minilm_w1a8": "mpnet-minilm-w1a8"}


def test_every_mpnet_row_has_a_recipe_that_trains_it(run_glue):
    mpnet_rows = {name for name, row in run_glue.ROWS.items() if row.family == "mpnet"}
    assert mpnet_rows == set(RECIPES)
    for name, recipe_name in RECIPES.items():
        row, recipe = run_glue.ROWS[name], load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml")
        start = run_glue.ROWS[row.start] if row.start in run_glue.ROWS else row
        assert tuple(recipe.layers or ()) == tuple(start.layers or ()), name
        first = start.start if start.start and start.start not in run_glue.ROWS else None
        assert (recipe.student or None) == (first and f"../shared/models/{first}"), name
        assert (recipe.quant.weight_bits if recipe.quant else 32) == row.bits, name
        assert recipe.finetune.learning_rate == run_glue.TEACHER_LR["mpnet"]
        assert recipe.qat.learning_rate == recipe.reduce.learning_rate == 5e-5  # the runner's --lr default
        assert recipe.finetune.epochs == recipe.qat.epochs == run_glue.DEFAULT_EPOCHS * row.epochs
        assert recipe.qat.group_by_length == row.length_grouped
        assert recipe.qat.dropout == row.dropout, name  # the rows trained with the model's own dropout
        assert recipe.qat.batch_size == (row.batch_size or TrainConfig().batch_size), name  # batch 32


def test_minilm_default_recipes_train_their_rows_with_xtcs_defaults(run_glue):
    """recipes/minilm-6l-w{1,2}a8.yaml say they are xtc's defaults and name the row that measured them."""
    from xtc.recipe import Recipe

    default = Recipe().qat
    for recipe_name, name in [("minilm-6l-w1a8", "6l_w1a8_warm10_drop0_bs16"),
                               ("minilm-6l-w2a8", "6l_w2a8_warm10_drop0_bs16")]:
        path = ROOT / "recipes" / f"{recipe_name}.yaml"
        row, recipe = run_glue.ROWS[name], load_recipe(path)
        assert name in path.read_text(), recipe_name
        assert recipe.quant.weight_bits == row.bits and recipe.layers is None, recipe_name
        qat = recipe.qat
        assert qat.epochs == run_glue.DEFAULT_EPOCHS * row.epochs, recipe_name
        # the row's warm-up: its multiple of the runner's one epoch; the recipe's: one epoch capped by the fraction
        assert min(qat.warmup_epochs, qat.max_warmup_fraction * qat.epochs) == pytest.approx(row.warmup), recipe_name
        assert qat.dropout == row.dropout == default.dropout, recipe_name
        assert qat.max_warmup_fraction == default.max_warmup_fraction, recipe_name
        assert qat.group_by_length == row.length_grouped == default.group_by_length, recipe_name
        assert qat.batch_size == row.batch_size == default.batch_size, recipe_name


def test_rows_name_their_teacher_and_start(run_glue):
    for name, row in run_glue.ROWS.items():
        assert row.teacher_row in run_glue.ROWS, name
        if row.start and row.start in run_glue.ROWS:
            assert run_glue.ROWS[row.start].family == row.family, name


@pytest.fixture(scope="module")
def run_embedding():
    return _benchmark_script("run_embedding")


def test_every_embedding_row_has_its_recipe(run_embedding):
    for name, row in run_embedding.ROWS.items():
        if row.recipe is None:
            continue
        recipe = load_recipe(ROOT / "recipes" / f"{row.recipe}.yaml")
        assert recipe.task == "embedding" and recipe.quant is not None, name
        assert recipe.qat.select_on == "last", name  # the rows report the end of the budget
        assert recipe.qat.batch_size == TrainConfig().batch_size, name  # as they were measured: batch 32
        assert (recipe.layers is None) == ("_6l_" not in name and "_5l_" not in name), name


def test_an_embedding_recipe_trains_the_row_it_names(run_embedding):
    """Every recipes/embedding-*.yaml names its row in its header ("Row NAME of benchmarks/run_embedding.py")
    and trains what that row trains (the row may be another recipe with changes): every setting equal but the
    paths."""
    import re
    from argparse import Namespace

    from xtc.recipe import with_overrides

    args = Namespace(glue_dir="glue", train_file=None)
    named = 0
    for path in sorted((ROOT / "recipes").glob("embedding-*.yaml")):
        match = re.search(r"Row (\w+) of benchmarks/run_embedding.py", path.read_text().splitlines()[0])
        assert match, f"{path.name} names no row of benchmarks/run_embedding.py"
        row = run_embedding.row_recipe(match[1], "model", 42, args)
        assert with_overrides(load_recipe(path), model="model", glue_dir="glue") == row, path.name
        named += 1
    assert named >= 4


def test_mpnet_goals_table_says_met_or_by_how_much_missed(run_glue, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import make_table

    def result(task, row, end, best=None):
        return {"task": task, "row": row, "seed": 42, "main_metric": "m", "metrics": {"m": (best or end) / 100},
                "dev_final": {"m": end / 100}}

    cells = {}
    for task, teacher, w1, copy, minilm in (("mrpc", 88.0, 86.0, 85.0, 86.0), ("rte", 60.0, 59.0, 55.0, 53.0)):
        cells[(task, "mpnet_teacher")] = [result(task, "mpnet_teacher", teacher)]
        cells[(task, "mpnet_5l_w1a8")] = [result(task, "mpnet_5l_w1a8", w1, best=w1 + 1)]
        cells[(task, "mpnet_5l_fp32_copy")] = [result(task, "mpnet_5l_fp32_copy", copy)]
        cells[(task, "mpnet_minilm_fp32")] = [result(task, "mpnet_minilm_fp32", minilm)]
    cells[("mrpc", "mpnet_12l_w1a8")] = [result("mrpc", "mpnet_12l_w1a8", 86.0)]
    text = make_table.mpnet_goals_table(cells)
    # 5L W1A8: -2.0 and -1.0, mean -1.5 at the end (-0.5 best) against 2.5 allowed
    assert "| `mpnet_5l_w1a8` within 2.5 of the teacher | mrpc, rte | -1.5 (-0.5) | met |" in text
    # 12L W1A8 ran on MRPC only: -2.0 against 1.0 allowed
    assert "| `mpnet_12l_w1a8` within 1 of the teacher | mrpc | -2.0 (-2.0) | missed by 1.0 |" in text
    assert "| `mpnet_6l_w2a8` within 1 of the teacher | – | not run yet | – |" in text
    # the copy trails MiniLM on MRPC by 1 and leads on RTE by 2: +0.5 on the mean
    assert "| `mpnet_5l_fp32_copy` at least `mpnet_minilm_fp32` | mrpc, rte | +0.5 (+0.5) | met |" in text


def test_screening_rows_and_their_baselines_are_rows_of_the_runner(run_glue, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import make_table

    for row, _, baseline in make_table.SCREENING:
        assert row in run_glue.ROWS and baseline in run_glue.ROWS, row
    run = {"task": "mrpc", "row": "6l_w1a8_lsq", "seed": 42, "main_metric": "f1", "metrics": {"f1": 0.83},
           "dev_final": {"f1": 0.82}, "epochs": 3, "command": "python benchmarks/run_glue.py --tasks mrpc"}
    base = {**run, "row": "6l_w1a8_grouped", "metrics": {"f1": 0.81}, "dev_final": {"f1": 0.80}}
    text = make_table.screening_table({("mrpc", "6l_w1a8_lsq"): [run], ("mrpc", "6l_w1a8_grouped"): [base]})
    assert "| `6l_w1a8_lsq` |" in text and "| 82.0 (83.0) vs 80.0 (81.0) |" in text
    # a second seed of both is averaged, paired; a seed only the baseline ran is left out of both means
    run43 = {**run, "seed": 43, "metrics": {"f1": 0.85}, "dev_final": {"f1": 0.84}}
    base43 = {**base, "seed": 43, "metrics": {"f1": 0.81}, "dev_final": {"f1": 0.78}}
    base44 = {**base, "seed": 44, "metrics": {"f1": 0.10}, "dev_final": {"f1": 0.10}}
    cells = {("mrpc", "6l_w1a8_lsq"): [run, run43], ("mrpc", "6l_w1a8_grouped"): [base, base43, base44]}
    assert "| 83.0 (84.0) vs 79.0 (81.0) n=2 |" in make_table.screening_table(cells)
    # a screened change is not a row of the main GLUE table; its baseline is
    glue = make_table.table(cells)
    assert "| 6l_w1a8_lsq |" not in glue and "| 6l_w1a8_grouped |" in glue


def test_summary_table_says_how_many_seeds_each_gap_averages(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import make_table

    def result(task, row, seed, value):
        return {"task": task, "row": row, "seed": seed, "main_metric": "m", "metrics": {"m": value / 100},
                "dev_final": {"m": value / 100}, "weight_bits": 2, "layers": 6, "packed_bytes": None}

    cells = {("mrpc", "teacher"): [result("mrpc", "teacher", s, 86.0) for s in (42, 43)],
             ("rte", "teacher"): [result("rte", "teacher", 42, 60.0)],
             ("mrpc", "6l_w2a8_long_drop0"): [result("mrpc", "6l_w2a8_long_drop0", 42, 85.0),
                                              result("mrpc", "6l_w2a8_long_drop0", 43, 84.0)],
             ("rte", "6l_w2a8_long_drop0"): [result("rte", "6l_w2a8_long_drop0", 42, 58.0)]}
    line = next(x for x in make_table.summary_table(cells).splitlines() if "9 epochs, short warm-up" in x)
    # MRPC -1.5 over two seeds, RTE -2.0 over one: -1.75 over two tasks
    assert "| -1.8 (-1.8), 2 tasks, 1-2 seeds |" in line
    cells = {k: v[:1] for k, v in cells.items()}
    line = next(x for x in make_table.summary_table(cells).splitlines() if "9 epochs, short warm-up" in x)
    assert "| -1.5 (-1.5), 2 tasks, 1 seed |" in line
