"""The CLI on your own data and with the ablation weight schemes."""

import json

import tiny_data
from typer.testing import CliRunner

from xtc.cli import app


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_cli_compress_distill_evaluate_on_a_csv_with_weight_schemes(tmp_path):
    model = tiny_data.make_model(tmp_path / "m", num_labels=2)
    rows = [f"{w} {w2},{int(w == 'good')}" for w in ("good", "bad") for w2 in ("movie", "film", "story", "plot")]
    (tmp_path / "reviews.csv").write_text("sentence,y\n" + "\n".join(rows) + "\n")
    data = ["--train-file", tmp_path / "reviews.csv", "--text-column", "sentence", "--label-column", "y",
            "--dev-fraction", 0.25]
    fast = ["--max-steps", 2, "--batch-size", 4, "--eval-steps", 2]
    code, out = _run("compress", "--model", model, "--teacher", model, "--weight-scheme", "absmean",
                     "--output", tmp_path / "run", *data, *fast)
    assert code == 0, out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"] == "reviews" and results["weight_bits"] == 2 and "macro_f1" in results["compressed"]
    cfg = json.loads((tmp_path / "run" / "quantized" / "model" / "config.json").read_text())
    assert cfg["xtc"]["weight_scheme"] == "absmean" and cfg["xtc"]["weight_bits"] == 2

    code, out = _run("distill", "--teacher", model, "--output", tmp_path / "kd", "--weight-scheme", "lsq",
                     "--weight-bits", 1, *data, *fast)
    assert code == 0, out
    cfg = json.loads((tmp_path / "kd" / "model" / "config.json").read_text())
    assert cfg["xtc"]["weight_scheme"] == "lsq" and cfg["xtc"]["weight_bits"] == 1
    code, out = _run("evaluate", tmp_path / "kd" / "model", *data)
    assert code == 0 and "macro_f1" in out, out


def test_cli_bad_input_is_one_line(tmp_path):
    model = tiny_data.make_model(tmp_path / "m")
    (tmp_path / "t.csv").write_text("text,label\na,1\nb,0\n")
    code, out = _run("distill", "--teacher", model, "--output", tmp_path / "kd", "--weight-scheme", "lsq",
                     "--train-file", tmp_path / "t.csv")
    assert code == 2 and "needs --weight-bits" in out
    code, out = _run("evaluate", model, "--train-file", tmp_path / "t.csv", "--label-column", "y")
    assert code == 2 and "no column 'y'" in out and "Traceback" not in out
    code, out = _run("evaluate", model)
    assert code == 2 and "--task" in out
