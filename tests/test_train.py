"""The optimizer of the quantization-aware stage: latent weights may learn faster than the rest."""

import pytest
import torch
from conftest import tiny_bert
from transformers import TrainingArguments

import xtc
from xtc.modules import QuantEmbedding, QuantLinear
from xtc.train import XTCTrainer


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_latent_weights_get_their_own_learning_rate_through_warmup_and_decay(tmp_path, scale):
    teacher, student = tiny_bert(layers=2), tiny_bert(layers=2)
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], learning_rate=1e-4, weight_decay=0.01,
                             warmup_steps=2, max_steps=10, lr_scheduler_type="linear")
    trainer = XTCTrainer(model=student, args=args, teacher=teacher, layer_map=[0, 1], latent_lr_scale=scale)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.create_optimizer()  # a second call (as Trainer may make) must not scale again
    latent = {id(m.weight) for m in student.modules() if isinstance(m, (QuantLinear, QuantEmbedding))}
    groups = trainer.optimizer.param_groups
    # every trainable parameter is in exactly one group; weight decay is kept as Trainer set it
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in student.parameters()) and len(seen) == len(set(seen))
    for g in groups:
        kinds = {id(p) in latent for p in g["params"]}
        assert len(kinds) == 1 or scale == 1.0  # a group holds latent weights only, or none (1.0: Trainer's groups)
        assert g["lr"] == pytest.approx(0.0)  # warm-up starts at 0 ...
        assert g["initial_lr"] == pytest.approx(1e-4 * (scale if kinds == {True} else 1.0))
    assert any(g["weight_decay"] == 0.0 for g in groups) and any(g["weight_decay"] > 0 for g in groups)
    for _ in range(5):  # ... and the schedule keeps the ratio all the way
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    rates = {id(p) in latent: g["lr"] for g in groups for p in g["params"]}
    assert rates[False] > 0 and rates[True] == pytest.approx(rates[False] * scale)


def test_latent_lr_scale_reaches_the_trainer_from_the_stage_config():
    from xtc.recipe import recipe_from_dict

    recipe = recipe_from_dict({"qat": {"latent_lr_scale": 20}})
    assert recipe.qat.latent_lr_scale == 20.0 and isinstance(recipe.qat.latent_lr_scale, float)



def test_group_by_length_batches_similar_lengths(tmp_path):
    """group_by_length: Trainer's length-grouped sampler runs on xtc's datasets, and its batches carry
    far less padding than random ones."""
    from transformers import AutoTokenizer

    from xtc.data import Example, TokenizedDataset, make_collator
    from xtc_tiny import make_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "m", layers=1))
    examples = [Example(" ".join(["good"] * (1 + (7 * i) % 40)), None, i % 2) for i in range(256)]
    train = TokenizedDataset(examples, tokenizer, max_length=64)

    def padded_tokens(group_by_length: bool) -> int:
        args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[],
                                 per_device_train_batch_size=8, seed=0,
                                 train_sampling_strategy="group_by_length" if group_by_length else "random")
        trainer = XTCTrainer(model=tiny_bert(layers=1), args=args, train_dataset=train,
                             data_collator=make_collator(tokenizer))
        batches = list(trainer.get_train_dataloader())
        assert sum(len(b["input_ids"]) for b in batches) == len(train)  # every example once
        return sum(b["input_ids"].numel() for b in batches)

    real = sum(train.lengths)
    assert padded_tokens(True) < real + 0.5 * (padded_tokens(False) - real)


def test_best_checkpoint_of_mrpc_is_picked_on_f1_and_accuracy_together():
    """An all-positive MRPC model (F1 81.2, accuracy 68.4) must not beat one that learnt something."""
    from xtc.data import get_task
    from xtc.train import SELECTION_KEY, _with_selection

    majority = _with_selection(get_task("mrpc"), {"f1": 0.812, "accuracy": 0.684})
    learnt = _with_selection(get_task("mrpc"), {"f1": 0.805, "accuracy": 0.725})
    assert learnt[SELECTION_KEY] > majority[SELECTION_KEY] and majority["f1"] > learnt["f1"]
    assert _with_selection(get_task("cola"), {"mcc": 0.3})[SELECTION_KEY] == 0.3  # one metric: that metric


def test_a_budget_shorter_than_an_epoch_is_still_evaluated(tmp_path):
    """Evaluation defaults to once per epoch; a half-epoch budget (SST-2 in benchmarks/run_glue.py) must still
    evaluate, and keep a model, at its end (Trainer evaluates on the last step)."""
    import json

    import tiny_data
    from test_custom_data import _csv

    from xtc.data import load_custom_task
    from xtc.pipeline import finetune
    from xtc.train import TrainConfig

    model = tiny_data.make_model(tmp_path / "m")
    rows = [f"{w} {w2},{w}" for w in ("good", "bad") for w2 in ("movie", "film", "story", "plot", "song", "show")]
    data = load_custom_task(_csv(tmp_path / "train.csv", rows), text_column="text", label_column="label",
                            dev_fraction=0.25, seed=0)
    summary = finetune(model, None, tmp_path / "ft", data=data,
                       config=TrainConfig(epochs=0.5, batch_size=2, logging_steps=1, warmup_epochs=0.0))
    evals = [json.loads(x) for x in (tmp_path / "ft" / "log.jsonl").read_text().splitlines() if "eval_runtime" in x]
    assert summary["steps"] == 3 and evals and evals[0]["step"] == 3
    assert (tmp_path / "ft" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("select_on", ["train:0.25", "last", "dev"])
def test_the_checkpoint_is_chosen_by_the_evaluation_select_on_names(tmp_path, select_on):
    """select_on=train:F holds out a part of the training set and keeps the checkpoint that scores best
    on it (dev is reported, never used to choose); last keeps the end of the budget; dev the best dev."""
    import json

    from xtc_tiny import make_tiny_glue, make_tiny_model

    from xtc.pipeline import finetune
    from xtc.train import TrainConfig

    model = make_tiny_model(tmp_path / "m", layers=1)
    glue = make_tiny_glue(tmp_path / "glue", n_train=24, n_dev=8)
    cfg = TrainConfig(max_steps=6, eval_steps=1, batch_size=4, learning_rate=1e-3, warmup_epochs=0.0,
                      select_on=select_on)
    summary = finetune(model, "sst2", tmp_path / "ft", str(glue), cfg)
    records = [json.loads(x) for x in (tmp_path / "ft" / "log.jsonl").read_text().splitlines() if "_runtime" in x]
    sets = 2 if select_on.startswith("train") else 1  # one log record per evaluation set
    by_step: dict = {}
    for record in records[:-sets]:  # the last records evaluate the kept checkpoint again
        by_step.setdefault(record["step"], {}).update(record)
    inside = list(by_step.values())
    assert len(inside) == 6
    assert set(summary["dev"]) == {"accuracy"} and summary["selected_on"] == select_on
    if select_on == "last":
        assert summary["best_step"] == 6 and summary["select"] is None
    elif select_on == "dev":
        best = max(inside, key=lambda e: e["eval_selection"])  # first of the ties, as Trainer keeps
        assert summary["best_step"] == best["step"] and summary["select"] is None
    else:
        assert "eval_select_accuracy" in inside[0] and "eval_dev_accuracy" in inside[0]
        best = max(inside, key=lambda e: e["eval_select_selection"])
        assert summary["best_step"] == best["step"]
        assert summary["dev"]["accuracy"] == pytest.approx(best["eval_dev_accuracy"])
        assert set(summary["select"]) == {"accuracy"}


def test_weight_average_puts_the_mean_of_the_last_steps_in_place():
    """average_last=0.5 over 4 steps: the weights after steps 3 and 4 are averaged, and the average is in
    the model when step 4 ends (before its evaluation and checkpoint); frozen parameters are left alone."""
    from types import SimpleNamespace

    from torch import nn

    from xtc.train import WeightAverage

    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    average, seen = WeightAverage(0.5), []
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(step))  # what the optimizer left after this step
            model.bias.fill_(float(step))
        seen.append(model.weight.detach().clone())
        average.on_step_end(None, SimpleNamespace(global_step=step, max_steps=4), None, model=model)
    assert torch.allclose(model.weight, (seen[2] + seen[3]) / 2)  # steps 3 and 4: 3.5
    assert torch.equal(model.bias, torch.full((2,), 4.0))


def test_average_last_is_a_fraction():
    from xtc.errors import ConfigError
    from xtc.train import TrainConfig

    assert TrainConfig(average_last=0.25).average_last == 0.25
    with pytest.raises(ConfigError, match="average_last must be 0..1"):
        TrainConfig(average_last=1.5)


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_autocasts_the_training_forward_only(tmp_path, bf16):
    """TrainConfig.bf16: the KD forward of a training step (student and teacher) runs its matrix products
    in bfloat16; evaluation, the weights and the loss handed to the optimizer stay float32."""
    teacher, student = tiny_bert(layers=2), tiny_bert(layers=2)
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1)
    trainer = XTCTrainer(model=student, args=args, teacher=teacher, layer_map=[0, 1], bf16=bf16)
    seen = []
    for model in (student, teacher):
        model.bert.encoder.layer[0].attention.self.query.register_forward_hook(
            lambda m, i, out, who=model: seen.append((who is student, out.dtype)))
    batch = {"input_ids": torch.randint(1000, 2000, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    trained = torch.bfloat16 if bf16 else torch.float32
    assert sorted(seen) == [(False, trained), (True, trained)] and loss.dtype == torch.float32
    loss.backward()
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in student.parameters())
    seen.clear()
    student.eval()
    with torch.no_grad():
        trainer.compute_loss(student, dict(batch))
    assert seen == [(True, torch.float32)]  # evaluation: the student alone, in float32


def test_bf16_is_a_training_option_of_recipes_and_the_command_line():
    from xtc.errors import ConfigError
    from xtc.recipe import recipe_from_dict
    from xtc.train import TrainConfig

    from xtc.recipe import apply_options

    assert recipe_from_dict({"qat": {"bf16": True}}).qat.bf16 is True
    assert TrainConfig().bf16 is False
    given = apply_options(recipe_from_dict({}), {"bf16": True})  # --bf16: every training stage
    assert given.finetune.bf16 and given.reduce.bf16 and given.qat.bf16
    assert not apply_options(recipe_from_dict({"qat": {"bf16": True}}), {"bf16": False}).qat.bf16
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(bf16="yes")


def test_the_warmup_lasts_its_epochs_at_most_its_fraction_of_the_steps():
    from xtc.errors import ConfigError
    from xtc.recipe import apply_options, recipe_from_dict
    from xtc.train import TrainConfig, warmup_steps

    # 100 steps an epoch, 3 epochs: one epoch uncapped; a tenth of 300 steps under the quantization default
    assert warmup_steps(TrainConfig(epochs=3), 100, 300) == 100
    assert warmup_steps(TrainConfig(epochs=3, max_warmup_fraction=0.1), 100, 300) == 30
    # 18 epochs: the one-epoch warm-up is under the cap and stays what the paper has
    assert warmup_steps(TrainConfig(epochs=18, max_warmup_fraction=0.1), 100, 1800) == 100
    assert warmup_steps(TrainConfig(max_steps=5, warmup_epochs=2.0), 100, 5) == 5  # never past the budget
    recipe = recipe_from_dict({"qat": {"epochs": 3, "warmup_epochs": 1.0}})
    assert recipe.qat.max_warmup_fraction == 0.1  # the quantization stage's default, kept under a partial qat
    assert recipe.finetune.max_warmup_fraction == 1.0 and recipe.reduce.max_warmup_fraction == 1.0
    paper = apply_options(recipe, {"max_warmup_fraction": 1.0})  # the paper's one-epoch warm-up: one option
    assert paper.qat.max_warmup_fraction == 1.0 and warmup_steps(paper.qat, 100, 300) == 100
    with pytest.raises(ConfigError, match="max_warmup_fraction"):
        TrainConfig(max_warmup_fraction=1.5)


def test_ternary_first_trains_the_binary_linears_ternary_then_binary_and_evaluates_only_binary(tmp_path, monkeypatch):
    """Progressive bit reduction: with ternary_first=0.5 over 6 steps, steps 1-3 quantize the binary
    linears ternary, steps 4-6 binary; no evaluation scores the ternary model; the kept model is binary."""
    import json

    from xtc_tiny import make_tiny_glue, make_tiny_model

    from xtc.pipeline import distill
    from xtc.train import TernaryFirst

    teacher = make_tiny_model(tmp_path / "t", layers=1)
    glue = make_tiny_glue(tmp_path / "glue", n_train=24, n_dev=8)
    seen = []
    original = TernaryFirst.on_step_end

    def record(self, args, state, control, model=None, **kwargs):
        bits = {m.weight_bits for m in model.modules() if isinstance(m, QuantLinear)}
        seen.append((state.global_step, bits))  # the bits the step that just ended trained with
        return original(self, args, state, control, model=model, **kwargs)

    monkeypatch.setattr(TernaryFirst, "on_step_end", record)
    cfg = xtc.train.TrainConfig(max_steps=6, eval_steps=1, batch_size=4, learning_rate=1e-3, warmup_epochs=0.0,
                                ternary_first=0.5, select_on="dev")
    summary = distill(str(teacher), "sst2", tmp_path / "kd", str(glue), quant=xtc.XTCConfig(weight_bits=1), config=cfg)
    assert seen == [(1, {2}), (2, {2}), (3, {2}), (4, {1}), (5, {1}), (6, {1})]
    evals = [json.loads(x)["step"] for x in (tmp_path / "kd" / "log.jsonl").read_text().splitlines() if "eval_runtime" in x]
    assert evals[:-1] == [3, 4, 5, 6]  # from the switch on (step 3's model is binary when it is scored); last: kept
    assert summary["best_step"] >= 3
    kept = json.loads((tmp_path / "kd" / "model" / "config.json").read_text())["xtc"]
    assert kept["weight_bits"] == 1


def test_ternary_first_is_a_fraction_below_one_and_needs_binary_linears(tmp_path):
    from xtc.errors import ConfigError
    from xtc.train import TrainConfig

    assert TrainConfig(ternary_first=0.25).ternary_first == 0.25
    with pytest.raises(ConfigError, match="no binary part"):
        TrainConfig(ternary_first=1.0)
    with pytest.raises(ConfigError, match="ternary_first must be 0..1"):
        TrainConfig(ternary_first=-0.1)


@pytest.mark.parametrize("bits, cap", [(None, 1.0), ("1", 0.1)])
def test_xtc_distill_trains_with_the_defaults_of_the_stage_compress_would_run(tmp_path, monkeypatch, bits, cap):
    """FP32 layer reduction keeps the one-epoch warm-up; quantization-aware KD gets the warm-up cap."""
    from typer.testing import CliRunner

    import xtc.pipeline
    from xtc.cli import app

    seen = {}

    def fake_distill(teacher, task, output, glue_dir, config, **kwargs):
        seen["config"] = config
        return {"dev": {}}

    monkeypatch.setattr(xtc.pipeline, "distill", fake_distill)
    args = ["distill", "--teacher", str(tmp_path), "--task", "mrpc", "--layers", "0", "--output", str(tmp_path / "kd")]
    result = CliRunner().invoke(app, args + (["--weight-bits", bits] if bits else []))
    assert result.exit_code == 0, result.output
    assert seen["config"].max_warmup_fraction == cap


def test_dropout_zero_makes_the_training_forward_deterministic_and_leaves_the_config_alone():
    from xtc.train import set_dropout

    model = tiny_bert(layers=2)
    model.train()
    ids = torch.randint(5, 100, (2, 12))
    noisy = [model(input_ids=ids).logits for _ in range(2)]
    assert not torch.equal(*noisy)  # dropout 0.1 (tiny_bert's) is live in train mode
    assert set_dropout(model, 0.0) > 0
    quiet = [model(input_ids=ids).logits for _ in range(2)]
    assert torch.equal(*quiet)
    assert model.config.hidden_dropout_prob > 0  # the saved model keeps its own value


def test_the_stage_config_dropout_reaches_every_dropout_of_the_student_while_it_trains(tmp_path, monkeypatch):
    import json

    from xtc_tiny import make_tiny_glue, make_tiny_model

    from xtc.pipeline import distill
    from xtc.train import StepTimer

    teacher = make_tiny_model(tmp_path / "t", layers=1)
    glue = make_tiny_glue(tmp_path / "glue", n_train=24, n_dev=8)
    seen = []
    original = StepTimer.on_step_end

    def record(self, args, state, control, model=None, **kwargs):
        seen.append({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})
        return original(self, args, state, control, model=model, **kwargs)

    monkeypatch.setattr(StepTimer, "on_step_end", record)
    for p, out in ((0.0, "off"), (None, "own")):
        cfg = xtc.train.TrainConfig(max_steps=2, batch_size=4, warmup_epochs=0.0, select_on="last", dropout=p)
        distill(str(teacher), "sst2", tmp_path / out, str(glue), quant=xtc.XTCConfig(weight_bits=1), config=cfg)
    own = json.loads((teacher / "config.json").read_text())["hidden_dropout_prob"]
    assert own > 0 and seen == [{0.0}, {0.0}, {own}, {own}]
    saved = json.loads((tmp_path / "off" / "model" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == own


@pytest.mark.parametrize("value, message", [(1.0, "below 1"), (-0.1, "dropout must be 0..1"), ("0", "a number")])
def test_dropout_is_a_probability_below_one(value, message):
    from xtc.errors import ConfigError
    from xtc.train import TrainConfig

    assert TrainConfig(dropout=0.0).dropout == 0.0 and TrainConfig().dropout is None
    with pytest.raises(ConfigError, match=message):
        TrainConfig(dropout=value)


def test_the_quantization_stage_trains_without_dropout_by_default_and_a_recipe_can_keep_the_models():
    from xtc.recipe import apply_options, recipe_from_dict

    recipe = recipe_from_dict({"qat": {"epochs": 3}})
    assert recipe.qat.dropout == 0.0  # the quantization stage's default, kept under a partial qat
    assert recipe.finetune.dropout is None and recipe.reduce.dropout is None  # the teacher keeps its own
    assert recipe_from_dict({"qat": {"dropout": None}}).qat.dropout is None  # `dropout: null`: the model's own
    paper = apply_options(recipe, {"dropout": 0.1})  # BERT's own 0.1, as the paper trains: one option away
    assert paper.qat.dropout == 0.1
