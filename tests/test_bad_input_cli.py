"""Bad input through the CLI: one line `error: ...` naming the input and what would fix it, exit code
2, no traceback, and nothing written (the output folder is not even created)."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner
from xtc_tiny import make_tiny_glue, make_tiny_model

import xtc
from xtc.cli import app


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    return make_tiny_model(root / "teacher", layers=2), make_tiny_glue(root / "glue", n_train=8, n_dev=4)


def _fails(args, *expected):
    """Run ``xtc ARGS``; it must fail with one error line containing every ``expected`` piece."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    errors = re.findall(r"error: [^\r\n]*", result.output)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for piece in expected:
        assert str(piece) in errors[0], (piece, errors[0])
    return errors[0]


def _compress(tiny, out, *extra, glue=None):
    teacher, default_glue = tiny
    return ["compress", "--teacher", teacher, "--task", "sst2", "--glue-dir", glue or default_glue,
            "--output", out, "--max-steps", "1", *extra]


def _glue_copy(tiny, tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(tiny[1], glue)
    return glue


def test_bad_input_missing_data_folder(tiny, tmp_path):
    out = tmp_path / "run"
    _fails(_compress(tiny, out, glue=tmp_path / "nowhere"), "nowhere", "does not exist", "--glue-dir")
    glue = tmp_path / "empty_glue"
    glue.mkdir()
    _fails(_compress(tiny, out, glue=glue), "no SST-2/ folder", "--glue-dir")
    assert not out.exists()


def test_bad_input_missing_or_unreadable_file(tiny, tmp_path):
    glue, out = _glue_copy(tiny, tmp_path), tmp_path / "run"
    (glue / "SST-2" / "dev.tsv").unlink()
    _fails(_compress(tiny, out, glue=glue), "dev.tsv", "not found", "train.tsv")  # lists what is there
    (glue / "SST-2" / "dev.tsv").mkdir()  # a folder where the file should be
    _fails(_compress(tiny, out, glue=glue), "dev.tsv")
    assert not out.exists()


def test_bad_input_wrong_number_of_columns(tiny, tmp_path):
    glue, out = _glue_copy(tiny, tmp_path), tmp_path / "run"
    train = glue / "SST-2" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[3] += "\textra"
    train.write_text("\n".join(lines) + "\n")
    _fails(_compress(tiny, out, glue=glue), f"{train}:4:", "expected 2 tab-separated columns, got 3")
    assert not out.exists()


def test_bad_input_unknown_label(tiny, tmp_path):
    glue, out = _glue_copy(tiny, tmp_path), tmp_path / "run"
    dev = glue / "SST-2" / "dev.tsv"
    lines = dev.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tpositive"
    dev.write_text("\n".join(lines) + "\n")
    _fails(_compress(tiny, out, glue=glue), f"{dev}:3:", "'positive'", "is not one of 0, 1")
    assert not out.exists()


def test_bad_input_empty_split(tiny, tmp_path):
    glue, out = _glue_copy(tiny, tmp_path), tmp_path / "run"
    train = glue / "SST-2" / "train.tsv"
    train.write_text("sentence\tlabel\n")
    _fails(_compress(tiny, out, glue=glue), str(train), "no examples")
    assert not out.exists()


def test_bad_input_not_utf8(tiny, tmp_path):
    glue, out = _glue_copy(tiny, tmp_path), tmp_path / "run"
    train = glue / "SST-2" / "train.tsv"
    raw = train.read_bytes().split(b"\n")
    raw[5] = raw[5].replace(b"the", b"th\xe9", 1) if b"the" in raw[5] else b"caf\xe9 " + raw[5]
    train.write_bytes(b"\n".join(raw))
    _fails(_compress(tiny, out, glue=glue), f"{train}:6:", "not valid UTF-8", "UTF-8")
    assert not out.exists()


def test_bad_input_augmented_train_file(tiny, tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "augmented.tsv"
    bad.write_text("sentence\tlabel\na b c\t7\n")
    _fails(_compress(tiny, out, "--augment", bad), f"{bad}:2:", "'7'")
    _fails(_compress(tiny, out, "--augment", tmp_path / "missing.tsv"), "missing.tsv")
    assert not out.exists()


def test_bad_input_model_folder_not_a_model(tiny, tmp_path):
    out = tmp_path / "run"
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    _fails(_compress(tiny, out) + ["--teacher", folder], str(folder), "not a transformers model", "config.json")
    _fails(_compress(tiny, out) + ["--teacher", tmp_path / "no_such_model"], "no_such_model", "does not exist")
    (folder / "config.json").write_text("{not json")
    (folder / "model.safetensors").write_bytes(b"")
    _fails(_compress(tiny, out) + ["--teacher", folder], str(folder))
    # the stage commands too
    _fails(["distill", "--teacher", folder, "--task", "sst2", "--glue-dir", tiny[1], "--output", out], str(folder))
    _fails(["finetune", "--model", tmp_path / "nope", "--task", "sst2", "--glue-dir", tiny[1], "--output", out],
           "nope", "does not exist")
    assert not out.exists()


def test_bad_input_unsupported_architecture(tiny, tmp_path):
    from transformers import GPT2Config

    out = tmp_path / "run"
    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=2, n_embd=32, n_head=4, architectures=["GPT2LMHeadModel"]).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    message = _fails(_compress(tiny, out) + ["--teacher", folder], "'gpt2'", "GPT2LMHeadModel",
                     "supported model types: bert, roberta")
    assert "distilbert" in message
    _fails(["distill", "--teacher", folder, "--task", "sst2", "--glue-dir", tiny[1], "--output", out], "'gpt2'")
    assert not out.exists()


def test_bad_input_layers_out_of_range_or_repeated(tiny, tmp_path):
    out = tmp_path / "run"
    _fails(_compress(tiny, out, "--layers", "0,2"), "[2] out of range", "2 layers, numbered 0..1")
    _fails(_compress(tiny, out, "--layers", "1,1"), "repeats [1]", "once")
    _fails(_compress(tiny, out, "--layers", "-1"), "[-1] out of range")
    _fails(["distill", "--teacher", tiny[0], "--task", "sst2", "--glue-dir", tiny[1], "--output", out,
            "--layers", "0,5"], "out of range")
    _fails(_compress(tiny, out, "--layers", "one,two"), "--layers", "'one,two'", "1,3,5")
    assert not out.exists()


def test_bad_input_unsupported_bits(tiny, tmp_path):
    out = tmp_path / "run"
    _fails(_compress(tiny, out, "--weight-bits", "0"), "weight_bits must be 1..16", "got 0")
    _fails(_compress(tiny, out, "--weight-bits", "17"), "got 17")
    _fails(_compress(tiny, out, "--activation-bits", "1"), "activation_bits must be 4..16")
    _fails(["distill", "--teacher", tiny[0], "--task", "sst2", "--glue-dir", tiny[1], "--output", out,
            "--weight-bits", "40"], "got 40")
    assert not out.exists()


def test_bad_input_groups(tiny, tmp_path):
    out = tmp_path / "run"
    _fails(_compress(tiny, out, "--groups", "rows"), "--groups", "'rows'", "'row'")
    _fails(_compress(tiny, out, "--groups", "0"), "groups must be an integer >= 1 or 'row'", "got 0")
    _fails(_compress(tiny, out, "--groups", "7"), "groups=7 does not divide", "'row'")
    assert not out.exists()


def test_bad_input_recipe_unknown_key(tiny, tmp_path):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: sst2\nlayer: [1, 3]\n")
    _fails(["compress", "--recipe", recipe, "--output", out], str(recipe), "unknown key(s) layer",
           "known keys: model, task")
    recipe.write_text("task: sst2\nqat:\n  learning_rte: 1e-4\n")
    _fails(["compress", "--recipe", recipe, "--output", out], "learning_rte", "qat", "learning_rate")
    recipe.write_text("task: [unclosed\n")
    _fails(["compress", "--recipe", recipe, "--output", out], "not valid YAML")
    _fails(["compress", "--recipe", tmp_path / "missing.yaml", "--output", out], "missing.yaml", "not found")
    assert not out.exists()


def test_bad_input_unknown_task(tiny, tmp_path):
    out = tmp_path / "run"
    _fails(_compress(tiny, out) + ["--task", "sst3"], "'sst3'", "known tasks: cola")
    assert not out.exists()


def test_bad_input_leaves_an_existing_run_untouched(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"done": True}))
    _fails(_compress(tiny, out, "--layers", "7", "--overwrite"), "out of range")
    assert json.loads((out / "results.json").read_text()) == {"done": True}  # --overwrite did not wipe it


def test_groups_latent_lr_scale_and_batching_options_reach_the_run(tiny, tmp_path):
    """The good values of the options land in the run's recipe and in the trained model; batches are
    length-grouped unless --random-batches says otherwise."""
    from xtc.recipe import Recipe, load_recipe

    assert Recipe().qat.group_by_length and Recipe().finetune.group_by_length
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [str(a) for a in _compress(tiny, out, "--groups", "row", "--latent-lr-scale", "3",
                                                                 "--random-batches")])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(out / "config.yaml")
    assert recipe.quant.groups == "row" and recipe.qat.latent_lr_scale == 3.0
    assert not recipe.qat.group_by_length and not recipe.finetune.group_by_length
    model = xtc.load_quantized(out / "quantized" / "model")
    up = model.bert.encoder.layer[0].intermediate.dense
    assert up.groups == up.out_features
