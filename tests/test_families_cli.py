"""Every supported family through every path of the command line, the packed file included:
compress (layer reduction, then W1A8 with distillation), export, size and predict."""

import re

import pytest
import torch
from typer.testing import CliRunner
from xtc_tiny import SPECIAL, WORDS, make_tiny_glue

from xtc.cli import app

COMMON = dict(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=80, num_labels=2)


def _tiny(family: str, folder):
    """A tiny random classifier of ``family`` with a WordPiece tokenizer over the tiny vocabulary."""
    import transformers as T

    torch.manual_seed(0)
    inputs = ["input_ids", "attention_mask"]
    if family == "bert":
        model, inputs = T.BertForSequenceClassification(T.BertConfig(**COMMON)), inputs + ["token_type_ids"]
    elif family == "roberta":
        model = T.RobertaForSequenceClassification(T.RobertaConfig(**COMMON, pad_token_id=0))
    elif family == "mpnet":
        model = T.MPNetForSequenceClassification(T.MPNetConfig(**COMMON, pad_token_id=0))
    elif family == "deberta-v2":
        model = T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
            relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16, share_att_key=True,
            norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0, **COMMON))
    else:
        raise AssertionError(family)
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + list(WORDS)) + "\n")
    T.BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_input_names=inputs).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def _ok(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    return result.stdout


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet", "deberta-v2"])
def test_family_through_compress_export_size_predict(family, tmp_path):
    teacher = _tiny(family, tmp_path / "teacher")
    glue = make_tiny_glue(tmp_path / "glue", n_train=16, n_dev=8)
    run = tmp_path / "run"
    _ok(["compress", "--teacher", teacher, "--task", "sst2", "--glue-dir", glue, "--layers", "0,2",
         "--weight-bits", "1", "--max-steps", "2", "--eval-steps", "2", "--output", run])
    packed = tmp_path / "packed"
    _ok(["export", run, packed])
    size = _ok(["size", packed])
    assert "whole file" in size
    (tmp_path / "in.txt").write_text("good movie\nbad film and a long dull story\n")
    out = _ok(["predict", packed, "-i", tmp_path / "in.txt"]).splitlines()
    assert out[0].split("\t")[:2] == ["label", "score"] and len(out) == 3
    assert all(re.fullmatch(r"\S+\t0\.\d+\t0\.\d+\t0\.\d+", line) for line in out[1:])
