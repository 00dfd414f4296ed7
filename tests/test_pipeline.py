"""End to end: the whole compress pipeline on a tiny random BERT, and a short run on the local MiniLM."""

import json

import pytest
import torch
from conftest import GLUE, MINILM, tiny_bert
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import xtc
from xtc.data import get_task, read_split, write_split
from xtc.recipe import QuantConfig, Recipe, load_recipe, recipe_from_dict, RecipeError
from xtc.train import TrainConfig


def small_glue(tmp_path, task="mrpc", n_train=64, n_dev=32):
    """A GLUE-layout folder holding the first examples of the real task files."""
    spec = get_task(task)
    out = tmp_path / "glue"
    write_split(spec, read_split(spec, GLUE, "train")[:n_train], out / spec.dir_name / "train.tsv")
    write_split(spec, read_split(spec, GLUE, "dev")[:n_dev], out / spec.dir_name / "dev.tsv")
    return out


def tiny_model_dir(tmp_path, layers=4):
    path = tmp_path / "tiny-bert"
    tiny_bert(layers=layers).save_pretrained(path)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(path)
    return path


def losses(stage_dir):
    rows = [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_end_to_end_tiny_bert_loss_falls_and_outputs_appear(tmp_path, shared):
    glue = small_glue(tmp_path)
    fast = dict(batch_size=16, eval_batch_size=32, logging_steps=2, max_length=64, warmup_epochs=0.0)
    recipe = Recipe(
        model=str(tiny_model_dir(tmp_path)), task="mrpc", glue_dir=str(glue), layers=[0, 2],
        quant=QuantConfig(weight_bits=1, activation_bits=8),
        finetune=TrainConfig(max_steps=8, learning_rate=1e-3, **fast),
        reduce=TrainConfig(max_steps=12, learning_rate=1e-3, eval_steps=6, **fast),
        qat=TrainConfig(max_steps=24, learning_rate=1e-2, eval_steps=12, **fast),
    )
    run = tmp_path / "run"
    results = xtc.pipeline.compress(recipe, run)

    for stage in ("teacher", "reduced", "quantized"):
        assert (run / stage / "stage.json").exists() and (run / stage / "model" / "config.json").exists()
    kd = losses(run / "quantized")
    assert len(kd) >= 6 and sum(kd[-3:]) < sum(kd[:3])  # the KD loss falls
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk == results
    assert results["task"] == "mrpc" and results["weight_bits"] == 1 and results["layers"] == [0, 2]
    assert results["embedding_bits"] == 1  # the word embedding has the linears' bits unless told otherwise
    assert set(results["compressed"]) == {"f1", "accuracy"} and set(results["teacher"]) == {"f1", "accuracy"}
    assert results["steps"] == {"teacher": 8, "reduced": 12, "quantized": 24}
    assert results["xtc_version"] == xtc.__version__
    assert load_recipe(run / "config.yaml") == recipe

    # the best checkpoint loads with plain from_pretrained (latent weights) and with xtc (quantized)
    plain = AutoModelForSequenceClassification.from_pretrained(run / "quantized" / "model")
    assert plain.config.num_hidden_layers == 2 and plain.config.xtc_layer_map == [0, 2]
    quantized = xtc.load_quantized(run / "quantized" / "model")
    assert xtc.surgery.is_quantized(quantized)
    metrics = xtc.pipeline.evaluate(str(run / "quantized" / "model"), "mrpc", str(glue))["dev"]
    assert metrics["accuracy"] == pytest.approx(results["compressed"]["accuracy"])

    with pytest.raises(xtc.pipeline.RunFolderError, match="--overwrite"):
        xtc.pipeline.compress(recipe, run)


def test_recipes_in_repo_parse_and_unknown_keys_are_named():
    from pathlib import Path

    recipes = sorted(Path(__file__).resolve().parents[1].glob("recipes/*.yaml"))
    assert len(recipes) >= 11
    for path in recipes:
        recipe = load_recipe(path)
        for stage in (recipe.finetune, recipe.reduce, recipe.qat):
            assert isinstance(stage.learning_rate, float) and isinstance(stage.epochs, float)
    with pytest.raises(RecipeError, match="learning_rate must be a number"):
        recipe_from_dict({"qat": {"learning_rate": "fast"}})
    with pytest.raises(RecipeError, match="learning_rat.*known keys: epochs"):
        recipe_from_dict({"qat": {"learning_rat": 1e-4}})
    with pytest.raises(RecipeError, match="known keys: model"):
        recipe_from_dict({"modle": "x"})


@pytest.mark.slow
def test_short_run_on_local_minilm(tmp_path, shared):
    """A few steps of each stage on the real MiniLM and a GLUE subset: the pipeline works at full size."""
    glue = small_glue(tmp_path, "stsb", n_train=48, n_dev=48)
    fast = dict(batch_size=16, eval_batch_size=48, logging_steps=1, max_length=64, warmup_epochs=0.0)
    recipe = Recipe(
        model=str(MINILM), task="stsb", glue_dir=str(glue), layers=[1, 3, 5],
        quant=QuantConfig(weight_bits=2, activation_bits=8),
        finetune=TrainConfig(max_steps=3, learning_rate=5e-5, **fast),
        reduce=TrainConfig(max_steps=3, learning_rate=5e-5, **fast),
        qat=TrainConfig(max_steps=3, learning_rate=5e-5, **fast),
    )
    results = xtc.pipeline.compress(recipe, tmp_path / "run")
    assert set(results["compressed"]) == {"pearson", "spearmanr"}
    assert all(-1.0 <= v <= 1.0 for v in results["compressed"].values())
    assert all(torch.isfinite(torch.tensor(x)) for x in losses(tmp_path / "run" / "quantized"))
