"""benchmarks/bench_ablation.py starts, writes one JSON per row and skips finished rows (tiny model and data)."""

import importlib.util
import json
from pathlib import Path

import pytest
import tiny_data

from xtc.data import Example, write_split

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ablation.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ablation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_smoke_writes_rows_and_resumes(tmp_path, capsys):
    model = tiny_data.make_model(tmp_path / "m")
    for split, n in (("train", 16), ("dev", 8)):
        rows = [Example(f"{w} movie", None, int(w == "good")) for w in ("good", "bad") * (n // 2)]
        write_split("sst2", rows, tmp_path / "glue" / "SST-2" / f"{split}.tsv")
    bench = _bench()
    args = ["--model", model, "--glue-dir", str(tmp_path / "glue"), "--tasks", "sst2", "--rows", "lsq:2,absmean:2",
            "--smoke", "--batch-size", "4", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    bench.main(args)
    row = json.loads((tmp_path / "out" / "sst2-lsq-w2.json").read_text())
    assert row["scheme"] == "lsq" and row["weight_bits"] == 2 and row["smoke"] and row["steps"] == 2
    assert set(row["dev"]) == {"accuracy"} and "accuracy" in row["teacher_dev"]
    assert (tmp_path / "out" / "sst2-absmean-w2.json").exists() and (tmp_path / "out" / "teacher-sst2.json").exists()
    assert not (tmp_path / "work" / "sst2" / "lsq-w2" / "checkpoints").exists()  # dropped after the run
    capsys.readouterr()
    bench.main(args)  # every row done: nothing runs again
    assert "all rows done" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="absmean:1"):
        bench.main([*args, "--rows", "absmean:1"])
