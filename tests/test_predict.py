"""``xtc predict``: a line's prediction depends on that line alone (never on the batch size or its
neighbours), and an input that mixes single sentences and pairs is refused with its line number."""

import re

import pytest
import torch
from typer.testing import CliRunner
from xtc_tiny import make_tiny_model, tiny_sentences

import xtc
from xtc.cli import app
from xtc.errors import InputError
from xtc.packed import export
from xtc.packed.cli import parse_input, predict


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("predict")
    src = make_tiny_model(root / "src", layers=2, num_labels=2, dropout=0.0)
    model = xtc.load_quantized(src).eval()
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1))
    run = root / "run"
    model.save_pretrained(run / "quantized" / "model")
    AutoTokenizer.from_pretrained(src).save_pretrained(run / "quantized" / "model")
    export(run, root / "packed")
    return root / "packed"


def _scores(packed, lines, batch_size):
    header, rows = predict(packed, lines, batch_size=batch_size)
    return rows


def test_a_line_scores_the_same_whatever_its_batch_and_neighbours(packed):
    pairs = [f"{a}\t{b}" for (a, _), (b, _) in zip(tiny_sentences(40, seed=1), tiny_sentences(40, seed=2))]
    probe = pairs[0]
    alone = _scores(packed, [probe], 1)[0]
    for batch_size in (1, 7, 32):
        rows = _scores(packed, pairs, batch_size)
        assert rows[0] == alone, batch_size
        # the same line among other neighbours, in the middle, with blank lines around it
        mixed = pairs[20:27] + ["", probe, "   "] + pairs[5:9] + [""]
        rows = _scores(packed, mixed, batch_size)
        assert len(rows) == len(mixed) - 3  # blank lines are skipped, not scored
        assert rows[7] == alone, batch_size
    # and the pair is really read as a pair: as one sentence it scores differently
    joined = _scores(packed, [probe.replace("\t", " ")], 1)[0]
    assert joined != alone


def test_trailing_blank_line_does_not_change_a_pair(packed):
    runner = CliRunner()
    one = runner.invoke(app, ["predict", str(packed)], input="good movie\tbad film\n")
    two = runner.invoke(app, ["predict", str(packed)], input="good movie\tbad film\n\n")
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    assert one.stdout.splitlines()[1] == two.stdout.splitlines()[1]


def test_mixed_or_ambiguous_input_is_refused_with_its_line_number():
    assert parse_input(["a\tb", "", "c\td"]) == ([1, 3], ["a", "c"], ["b", "d"])
    assert parse_input(["a", "b"]) == ([1, 2], ["a", "b"], None)
    with pytest.raises(InputError, match=r"line 3 is a single sentence .* line 1 is a sentence pair"):
        parse_input(["a\tb", "c\td", "e"])
    with pytest.raises(InputError, match=r"line 2 is a sentence pair .* line 1 is a single sentence"):
        parse_input(["a", "b\tc"])
    with pytest.raises(InputError, match="line 2 has 2 tabs"):
        parse_input(["a\tb", "c\td\te"])
    with pytest.raises(InputError, match="no sentences"):
        parse_input(["", "  "])


def test_predict_cli_refuses_mixed_input_in_one_line(packed):
    result = CliRunner().invoke(app, ["predict", str(packed)], input="good movie\tbad film\ngreat\n")
    assert result.exit_code == 2
    errors = re.findall(r"error: [^\n]*", result.output)
    assert len(errors) == 1 and "line 2" in errors[0] and "Traceback" not in result.output


def test_regression_rows_match_the_model(packed):
    # the rows come back in input order, one per non-blank line, whatever the length buckets
    lines = [s for s, _ in tiny_sentences(12, seed=3, length=(1, 9))]
    rows = _scores(packed, lines, 5)
    singles = [_scores(packed, [line], 1)[0] for line in lines]
    assert rows == singles
    assert torch.tensor([float(r[1]) for r in rows]).min() >= 0.5
