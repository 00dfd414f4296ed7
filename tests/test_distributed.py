"""Data-parallel training: two CPU processes (torchrun, gloo) give the same run as one process with
the same global batch.

Deterministic by construction: no dropout; every example has the same number of tokens, so no batch
is padded and the per-process means of the KD loss (each MSE averaged over real tokens) average to
exactly the global mean, as do DDP's averaged gradients; the sampler is seeded (data_seed), so
2 processes x 4 examples see, step by step, the same 8 examples as 1 process x 8. What is left is
float reduction order, hence the tolerance. The student is layer-reduced and quantized (W1A8) and
trained by KD from a separate teacher, so the DDP-wrapped student's attention scores must be captured
through the wrapper.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from xtc_tiny import cli_env, make_tiny_glue, make_tiny_model

RUN = """
def run(teacher, glue, out, batch):
    from xtc.pipeline import distill
    from xtc.recipe import QuantConfig
    from xtc.train import TrainConfig

    cfg = TrainConfig(max_steps=6, batch_size=int(batch), eval_batch_size=8, learning_rate=2e-3,
                      warmup_epochs=0.5, logging_steps=1, eval_steps=3, seed=3)
    distill(str(teacher), "sst2", out, glue_dir=str(glue), layers=[1], quant=QuantConfig(weight_bits=1), config=cfg)
"""
DRIVER = RUN + ("\nimport sys\nimport torch.distributed as dist\nrun(*sys.argv[1:5])\n"
                "if dist.is_initialized():\n    dist.destroy_process_group()  # a clean gloo shutdown\n")


def _run_here(*args):
    """The single-process run, in this process (single-threaded, like each torchrun worker)."""
    namespace = {}
    exec(RUN, namespace)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace["run"](*args)
    finally:
        torch.set_num_threads(threads)


def _run(cmd, log):
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=cli_env(), timeout=300).returncode
    assert code == 0, log.read_text()[-4000:]


def _records(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed support")
def test_distributed_two_processes_match_one_process(tmp_path):
    teacher = make_tiny_model(tmp_path / "teacher", layers=2, dropout=0.0)
    glue = make_tiny_glue(tmp_path / "glue", n_train=48, n_dev=8, length=(6, 6))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    one, two = tmp_path / "one", tmp_path / "two"
    _run_here(teacher, glue, one, 8)
    # --standalone: a local rendezvous on a free port
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
          teacher, glue, two, "4"], tmp_path / "two.log")

    ra, rb = _records(one), _records(two)
    la = [(r["step"], r["loss"]) for r in ra if "loss" in r]
    lb = [(r["step"], r["loss"]) for r in rb if "loss" in r]
    assert [s for s, _ in la] == [s for s, _ in lb] == list(range(1, 7))
    assert [v for _, v in lb] == pytest.approx([v for _, v in la], rel=2e-4, abs=1e-6)
    # the same evaluations, the same epochs (48 examples = 6 global batches of 8, in both runs)
    ea = [(r["step"], r["epoch"], r["eval_loss"]) for r in ra if "eval_loss" in r]
    eb = [(r["step"], r["epoch"], r["eval_loss"]) for r in rb if "eval_loss" in r]
    # (step 6 twice: the last evaluation of training, then the final one of the best checkpoint)
    assert [e[:2] for e in ea] == [e[:2] for e in eb] == [(3, 0.5), (6, 1.0), (6, 1.0)]
    assert [e[2] for e in eb] == pytest.approx([e[2] for e in ea], rel=2e-4)
    # one process wrote the results; the student weights agree
    sa = json.loads((one / "stage.json").read_text())
    sb = json.loads((two / "stage.json").read_text())
    assert sa["steps"] == sb["steps"] == 6 and sa["epochs"] == sb["epochs"] == 1.0
    wa, wb = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=1e-4, msg=k)
    # each process saved its RNG state into the checkpoints (resuming restores both)
    kept = sorted((two / "checkpoints").glob("checkpoint-*"))
    assert kept and all(sorted(p.name for p in c.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
                        for c in kept)


def test_distributed_teacher_frozen_outside_optimizer_and_capture_through_wrapper(tmp_path):
    """What each process does with the teacher: eval mode, no gradients, on the process's device, not
    in the optimizer; and the student's attention scores are captured through a DDP-like wrapper
    (an object with ``.module`` and no ``.config``), giving the same loss as the bare student."""
    from conftest import tiny_bert
    from transformers import TrainingArguments

    import xtc
    from xtc.train import XTCTrainer

    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher, student = tiny_bert(layers=2, **no_dropout), tiny_bert(layers=2, **no_dropout)
    student = xtc.quantize_(xtc.reduce_layers(student, [1]), xtc.XTCConfig(weight_bits=1)).train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2)
    trainer = XTCTrainer(model=student, args=args, teacher=teacher, layer_map=[1])
    trainer.create_optimizer()
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not teacher.training
    assert all(not p.requires_grad and id(p) not in in_optimizer for p in teacher.parameters())
    assert all(p.device == args.device for p in teacher.parameters())
    assert {id(p) for p in student.parameters() if p.requires_grad} <= in_optimizer

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like to compute_loss
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *a, **k):
            return self.module(*a, **k)

    ids = torch.randint(5, 1000, (2, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    bare = trainer.compute_loss(student, dict(batch))
    wrapped = trainer.compute_loss(Wrapper(student), dict(batch))
    assert torch.isfinite(bare) and torch.allclose(bare, wrapped)
    assert trainer._parts["att"] > 0  # attention scores were captured through the wrapper
    wrapped.backward()
    assert all(p.grad is None for p in teacher.parameters())
