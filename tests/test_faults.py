"""Faults: a run killed with SIGKILL resumes to the same result, half-written checkpoints are never
resumed from, a non-finite loss stops the run naming the step, finished runs are not overwritten."""

import json
import re
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner
from xtc_tiny import make_tiny_glue, make_tiny_model, start_cli

from xtc.checkpoints import checkpoint_problem, resume_point, truncate_log
from xtc.cli import app
from xtc.pipeline import RunFolderError, prepare_run_folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_model(root / "teacher"), make_tiny_glue(root / "glue")


def _compress_args(tiny, out):
    teacher, glue = tiny
    # 8 steps an epoch: 12 steps cross an epoch boundary, and resuming from step 4 or 8 skips
    # already-seen batches of a shuffled epoch; dropout is on (the quantization stage's default is off), so
    # RNG states must be restored too
    return ["compress", "--teacher", teacher, "--task", "sst2", "--glue-dir", glue, "--weight-bits", "1",
            "--output", out, "--max-steps", "12", "--eval-steps", "4", "--batch-size", "4", "--lr", "5e-3",
            "--seed", "7", "--dropout", "0.1"]


def _invoke(args):
    """``xtc ARGS`` in this process, single-threaded like the subprocess (same float reductions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return result


def _trace(run):
    """Step-by-step numbers of the log that do not depend on where a run was resumed: dev loss and
    metric at each evaluation, gradient norm and learning rate at each logged step (the logged
    training loss is a mean since the previous log *of this process*, so it differs after a resume)."""
    records = [json.loads(line) for line in (run / "quantized" / "log.jsonl").read_text().splitlines()]
    keys = ("eval_loss", "eval_accuracy", "grad_norm", "learning_rate")
    return [(r["step"], k, r[k]) for r in records for k in keys if k in r]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _invoke(_compress_args(tiny, straight))

    proc = start_cli(_compress_args(tiny, killed), tmp_path / "killed.log", XTC_TEST_STEP_SLEEP=0.4)
    first = killed / "quantized" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere in steps 5..8
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert not (killed / "results.json").exists() and not (killed / "quantized" / "stage.json").exists()

    # a checkpoint cut short by the kill (here: a later one without its trainer_state.json and with a
    # truncated weights file) must never be resumed from
    ckpts = killed / "quantized" / "checkpoints"
    fake = ckpts / "checkpoint-10"
    shutil.copytree(ckpts / "checkpoint-4", fake)
    (fake / "trainer_state.json").unlink()
    weights = (fake / "model.safetensors").read_bytes()
    (fake / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    _invoke(_compress_args(tiny, killed) + ["--resume"])
    assert not fake.exists()
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert b["compressed"] == a["compressed"] and b["steps"] == a["steps"] == {"quantized": 12}
    # the same training, step by step, and the same final weights
    ta, tb = _trace(straight), _trace(killed)
    assert [r[:2] for r in tb] == [r[:2] for r in ta] and len(ta) >= 6
    assert [r[2] for r in tb] == pytest.approx([r[2] for r in ta], rel=1e-4, abs=1e-6)
    wa = load_file(straight / "quantized" / "model" / "model.safetensors")
    wb = load_file(killed / "quantized" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)


def _fake_checkpoint(folder, step):
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, folder / "model.safetensors")
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_resume_point_skips_and_deletes_incomplete_checkpoints(tmp_path):
    good = _fake_checkpoint(tmp_path / "checkpoint-4", 4)
    assert checkpoint_problem(good) is None and resume_point(tmp_path) == good
    no_state = _fake_checkpoint(tmp_path / "checkpoint-8", 8)
    (no_state / "trainer_state.json").unlink()
    half_state = _fake_checkpoint(tmp_path / "checkpoint-12", 12)
    (half_state / "trainer_state.json").write_text('{"global_st')
    short = _fake_checkpoint(tmp_path / "checkpoint-16", 16)
    raw = (short / "model.safetensors").read_bytes()
    (short / "model.safetensors").write_bytes(raw[:-10])
    cut_optimizer = _fake_checkpoint(tmp_path / "checkpoint-20", 20)
    raw = (cut_optimizer / "optimizer.pt").read_bytes()
    (cut_optimizer / "optimizer.pt").write_bytes(raw[: len(raw) - 30])
    no_weights = _fake_checkpoint(tmp_path / "checkpoint-24", 24)
    (no_weights / "model.safetensors").unlink()
    no_scheduler = _fake_checkpoint(tmp_path / "checkpoint-28", 28)
    (no_scheduler / "scheduler.pt").unlink()
    for bad in (no_state, half_state, short, cut_optimizer, no_weights, no_scheduler):
        assert checkpoint_problem(bad), bad
    assert resume_point(tmp_path, cleanup=False) == good and no_state.exists()
    assert resume_point(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert resume_point(tmp_path / "nothing-here") is None


def test_resume_truncates_the_log_to_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 7)) + '{"step": 7, "lo')
    truncate_log(log, 4)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_resume_refuses_to_overwrite_a_finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    (run / "config.yaml").write_text("task: sst2\n")
    with pytest.raises(RunFolderError, match="--overwrite"):
        prepare_run_folder(run, resume=False, overwrite=False)
    assert (run / "results.json").read_text() == "{}"
    # a half-finished run is not mixed with a new one either
    (run / "results.json").unlink()
    with pytest.raises(RunFolderError, match="--resume"):
        prepare_run_folder(run, resume=False, overwrite=False)
    prepare_run_folder(run, resume=True, overwrite=False)  # continuing it is fine
    assert (run / "config.yaml").exists()
    prepare_run_folder(run, resume=False, overwrite=True)  # --overwrite starts over
    assert run.is_dir() and not any(run.iterdir())


def test_resume_cli_refuses_finished_run_without_overwrite(tiny, tmp_path):
    teacher, glue = tiny
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"keep": 1}')
    result = CliRunner().invoke(app, ["compress", "--teacher", str(teacher), "--task", "sst2", "--glue-dir",
                                      str(glue), "--output", str(run), "--max-steps", "1"])
    assert result.exit_code == 2
    assert "already holds a finished run" in result.output and "--overwrite" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]
    assert (run / "results.json").read_text() == '{"keep": 1}'


def test_resuming_a_finished_stage_leaves_it_as_it_is(tiny, tmp_path):
    """A finished stage resumed again returns its summary and is not trained, evaluated or rewritten again
    (its budget ends inside an epoch, 6 of 8 steps: where a restarted Trainer can step past the end)."""
    from xtc import TrainConfig
    from xtc.pipeline import finetune

    teacher, glue = tiny
    out, config = tmp_path / "ft", TrainConfig(max_steps=6, eval_steps=3, batch_size=4, seed=7)
    first = finetune(str(teacher), "sst2", out, str(glue), config)
    weights, log = (out / "model" / "model.safetensors").read_bytes(), (out / "log.jsonl").read_text()
    again = finetune(str(teacher), "sst2", out, str(glue), config, resume=True)
    assert first["steps"] == again["steps"] == 6
    assert again["dev"] == pytest.approx(first["dev"])
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    assert (out / "log.jsonl").read_text() == log


def test_resume_nonfinite_loss_stops_naming_the_step(tiny, tmp_path):
    teacher, glue = tiny
    out = tmp_path / "nan"
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher), "--task", "sst2", "--glue-dir", str(glue),
                                      "--weight-bits", "2", "--output", str(out), "--max-steps", "6",
                                      "--eval-steps", "1", "--batch-size", "8", "--lr", "1e30"])
    assert result.exit_code == 2, result.output
    errors = re.findall(r"error: [^\r\n]*", result.output)  # (progress bars may precede it on its line)
    assert len(errors) == 1 and "Traceback" not in result.output
    # the training loss, or first the dev loss of the blown-up weights, is named with its step
    found = re.search(r"loss.* became (nan|inf|-inf) at step (\d+); stopped", errors[0])
    assert found, errors[0]
    step = int(found.group(2))
    assert step >= 2
    # the checkpoints before the bad step are kept and complete; nothing claims the stage finished
    kept = resume_point(out / "checkpoints", cleanup=False)
    assert kept is not None and int(kept.name.split("-")[1]) == step - 1
    assert not (out / "stage.json").exists() and not (out / "model").exists()


def _packed_fingerprint(model):
    """Everything a loaded packed model computes with: parameters, buffers (the packed codes and
    scales are non-persistent buffers), its config, and its logits on a fixed batch."""
    state = {f"p:{k}": v.detach().clone() for k, v in model.named_parameters()}
    state.update({f"b:{k}": v.detach().clone() for k, v in model.named_buffers()})
    ids = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 40, 41, 3, 0, 0]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != 0).long()).logits
    return state, model.config.to_dict(), logits


def _same(a, b):
    (sa, ca, la), (sb, cb, lb) = a, b
    return (sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
            and ca == cb and torch.equal(la, lb))


@pytest.mark.parametrize("bits", [1, 2])
def test_corrupt_packed_file_never_loads_silently_different(tmp_path, bits):
    packed = pytest.importorskip("xtc.packed")
    import struct

    import xtc
    from xtc.surgery import load_quantized

    model = load_quantized(make_tiny_model(tmp_path / "model", layers=1))
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=bits))
    path = packed.save_packed(model.eval(), tmp_path / "packed")
    clean = path.read_bytes()
    reference = _packed_fingerprint(packed.load_packed(path))
    header_end = 8 + struct.unpack("<Q", clean[:8])[0]
    # every byte of the length field, 40 positions across the JSON header, 40 across the payload, the last
    positions = sorted({*range(8), *range(8, header_end, max(1, (header_end - 8) // 40)),
                        *range(header_end, len(clean), max(1, (len(clean) - header_end) // 40)), len(clean) - 1})
    variants = [(f"byte {i} ^ {flip:#x}", clean[:i] + bytes([clean[i] ^ flip]) + clean[i + 1:])
                for i in positions for flip in (0x01, 0xFF)]
    variants += [(f"truncated to {n}", clean[:n]) for n in (0, 7, 8, header_end - 1, header_end, len(clean) - 1)]
    variants += [("1 byte appended", clean + b"\0"), ("empty header", struct.pack("<Q", 2) + b"{}")]
    loaded_same = []
    for what, data in variants:
        path.write_bytes(data)
        try:
            model = packed.load_packed(path)
        except packed.PackedFormatError as e:
            assert str(path) in str(e) or path.name in str(e), (what, str(e))
            continue
        except Exception as e:  # noqa: BLE001 - anything else is a bug of the loader
            pytest.fail(f"{what}: {type(e).__name__} instead of PackedFormatError: {e}")
        assert _same(_packed_fingerprint(model), reference), f"{what}: loaded silently with different weights"
        loaded_same.append(what)
    # a flip that still loads must be one that changes nothing (e.g. inside the header's padding)
    assert len(loaded_same) < len(variants) // 4, loaded_same


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_result_files_follow_the_umask(tmp_path, umask):
    """Result files are written atomically through a temporary file (mode 0600), then given the mode an
    ordinary file gets under the user's umask."""
    import os

    from xtc.io import write_json_atomic

    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "results.json", {"ok": True})
    finally:
        os.umask(previous)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o666 & ~umask
