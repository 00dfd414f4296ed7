"""The embedding task on a tiny model: pooling as sentence-transformers pools, the KD loss on
embeddings, compress -> export -> `xtc embed`, and the metrics."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from xtc_tiny import WORDS, make_tiny_model

import xtc
from xtc.data import Example, write_split
from xtc.data.embedding import load_embedding_task, retrieval
from xtc.embedding import Pooling, encode, pool, read_pooling
from xtc.errors import DataError, InputError


def _st_files(folder: Path, mode: str = "mean", normalize: bool = True) -> Path:
    """The sentence-transformers files that say how ``folder``'s model pools."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": mode == "max",
        "pooling_mode_mean_sqrt_len_tokens": False}))
    return folder


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(n)]


def _tiny_embedding_data(root: Path) -> tuple[Path, Path]:
    """A sentences file and a GLUE folder with STS-B and MRPC dev pairs (tiny words, random gold)."""
    rng = random.Random(3)
    glue = root / "glue"
    a, b = _sentences(24, 1), _sentences(24, 2)
    write_split("stsb", [Example(x, y, round(rng.uniform(0, 5), 2)) for x, y in zip(a, b)],
                glue / "STS-B" / "dev.tsv")
    write_split("mrpc", [Example(x, y, i % 2) for i, (x, y) in enumerate(zip(b, a))], glue / "MRPC" / "dev.tsv")
    corpus = root / "sentences.txt"
    corpus.write_text("\n".join(_sentences(64, 4)) + "\n\n")
    return corpus, glue


def test_read_pooling_follows_the_sentence_transformers_files(tmp_path, caplog):
    model = make_tiny_model(tmp_path / "m")
    assert read_pooling(str(model)) == Pooling("mean", True)  # no files: mean + normalise, said aloud
    assert "no sentence-transformers modules.json" in caplog.text
    assert read_pooling(str(_st_files(model, "cls", normalize=False))) == Pooling("cls", False)
    assert read_pooling(str(_st_files(model, "max"))) == Pooling("max", True)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(InputError, match="pooling xtc does not do"):
        read_pooling(str(model))


@pytest.mark.parametrize("mode,normalize", [("mean", True), ("cls", False), ("max", True)])
def test_pooling_matches_sentence_transformers(tmp_path, mode, normalize):
    """xtc's encoder (the teacher of the embedding task) gives sentence-transformers' own embeddings."""
    st = pytest.importorskip("sentence_transformers")
    folder = _st_files(make_tiny_model(tmp_path / "m", dropout=0.0), mode, normalize)
    from xtc.data.embedding import embedding_task
    from xtc.models import load_model, load_tokenizer

    task = embedding_task(read_pooling(str(folder)))
    ours = encode(load_model(str(folder), task), load_tokenizer(str(folder)), _sentences(20, 7))
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(_sentences(20, 7), convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_pool_excludes_padding():
    states = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = states.clone()
    padded[0, 3:] = 1e4  # whatever the padded positions hold
    for mode in ("mean", "max", "cls"):
        torch.testing.assert_close(pool(states, mask, Pooling(mode, False))[0], pool(padded, mask, Pooling(mode, False))[0])
    unit = pool(states, mask, Pooling("mean", True))
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))


def test_retrieval_metrics_by_hand():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    # query 0 -> target 1: candidate 1 is (1, 0): rank 1; query 1 -> target 2: rank 1;
    # query 2 -> target 0: (1, .1) scores below (1,0)? cos((1,1),(1,.1)) = .77 vs (1,0) .707 and (0,1) .707: rank 1
    assert retrieval(q, c, [1, 2, 0]) == {"recall_at_1": 1.0, "mrr": 1.0}
    # query 0's target (1, .1) is second to (1, 0); query 1's (1, 0) is last; query 2's (0, 1) ties with
    # (1, 0) behind (1, .1): a tie counts against the target, rank 3
    got = retrieval(q, c, [0, 1, 2])
    assert got["recall_at_1"] == pytest.approx(0.0)
    assert got["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)


def test_embedding_loss_is_zero_only_for_the_teacher_itself(tmp_path):
    from xtc.data.embedding import embedding_task
    from xtc.distillation import Distiller
    from xtc.models import load_model

    folder = make_tiny_model(tmp_path / "m", dropout=0.0)
    task = embedding_task(Pooling())
    teacher, student = load_model(str(folder), task), load_model(str(folder), task)
    batch = {"input_ids": torch.tensor([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    distiller = Distiller(teacher, student, list(range(2)))
    assert distiller.pooling == Pooling()
    loss, _, parts = distiller(**batch)
    assert set(parts) == {"emb", "att", "hid"} and float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    loss, _, parts = distiller(**batch)
    assert parts["emb"] > 0 and loss.requires_grad


def test_similarity_loss_compares_how_the_sentences_of_a_batch_relate():
    from xtc.config import DistillConfig
    from xtc.distillation import similarity_loss
    from xtc.errors import ConfigError

    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # each vector rescaled, or the whole batch rotated: every pair keeps its cosine
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    assert float(similarity_loss(t * torch.tensor([[2.0], [0.5], [3.0]]), t)) == pytest.approx(0.0, abs=1e-7)
    assert float(similarity_loss(t @ rotation, t)) == pytest.approx(0.0, abs=1e-6)
    # the second vector turned onto the first: pair (0,1) goes from cosine 0 to 1, pair (1,2) from
    # 1/sqrt2 to 1/sqrt2 (unchanged), pair (0,2) unchanged: MSE over the three pairs = 1/3
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert float(similarity_loss(s, t)) == pytest.approx(1 / 3)
    assert float(similarity_loss(s[:1], t[:1])) == 0.0  # one sentence: no pairs
    with pytest.raises(ConfigError, match="sim_weight"):
        DistillConfig(sim_weight=-1)


def test_similarity_term_joins_the_loss_when_weighted(tmp_path):
    from xtc.config import DistillConfig
    from xtc.data.embedding import embedding_task
    from xtc.distillation import Distiller
    from xtc.models import load_model

    folder = make_tiny_model(tmp_path / "m", dropout=0.0)
    task = embedding_task(Pooling())
    teacher, student = load_model(str(folder), task), load_model(str(folder), task)
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    batch = {"input_ids": torch.tensor([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0], [2, 12, 5, 3, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])}
    plain, _, parts = Distiller(teacher, student, [0, 1])(**batch)
    assert "sim" not in parts
    both, _, parts = Distiller(teacher, student, [0, 1], DistillConfig(sim_weight=100.0))(**batch)
    assert parts["sim"] > 0
    assert float(both.detach()) == pytest.approx(float(plain.detach()) + 100.0 * parts["sim"], rel=1e-5)


def test_compress_export_embed_end_to_end(tmp_path):
    """Compress a tiny embedder at W1A8 with a copied layer, pack it, and embed: `xtc embed` writes what
    the Python API computes, the packed model matches the training model, and the file has no pooler."""
    folder = _st_files(make_tiny_model(tmp_path / "m", layers=2, hidden=64), "mean")
    corpus, glue = _tiny_embedding_data(tmp_path)
    recipe = xtc.Recipe(model=str(folder), task="embedding", glue_dir=str(glue), train_file=str(corpus),
                        layers=[1], seed=0,
                        reduce=xtc.TrainConfig(max_steps=4, batch_size=16, eval_steps=2, learning_rate=1e-3),
                        qat=xtc.TrainConfig(max_steps=6, batch_size=16, eval_steps=3, learning_rate=1e-3,
                                            logging_steps=2))
    results = xtc.compress(recipe, tmp_path / "run")
    assert set(results["teacher"]) == {"stsb_spearman", "recall_at_1", "mrr"}
    assert results["weight_bits"] == 1 and results["num_layers"] == 1 and "finetune" not in results["steps"]
    assert not (tmp_path / "run" / "teacher").exists()  # the embedder itself is the teacher
    log = [json.loads(x) for x in (tmp_path / "run" / "quantized" / "log.jsonl").read_text().splitlines()]
    assert any("loss_emb" in r for r in log) and any("eval_stsb_spearman" in r for r in log)

    file = xtc.export(tmp_path / "run", tmp_path / "packed")
    packed = xtc.load_packed(file)
    assert packed.pooler is None and not any("pooler" in k for k in packed.state_dict())
    sentences = _sentences(15, 9)
    from xtc.models import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "packed"))
    api = encode(packed, tokenizer, sentences)
    trained = xtc.load_quantized(tmp_path / "run" / "quantized" / "model").eval()
    # the packed file keeps LayerNorm and embeddings in float16 (the default): the same vectors to ~1e-4
    np.testing.assert_allclose(api, encode(trained, tokenizer, sentences), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(api, axis=1), 1.0, atol=1e-5)

    text = tmp_path / "in.txt"
    text.write_text("\n".join(sentences[:7]) + "\n\n" + "\n".join(sentences[7:]) + "\n")
    cli = [sys.executable, "-m", "xtc.cli", "embed", str(tmp_path / "packed"), "-i", str(text)]
    run = subprocess.run(cli + ["-o", str(tmp_path / "v.npy")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "skipped 1 blank line" in run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), api)
    run = subprocess.run(cli + ["--batch-size", "1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(np.array([json.loads(x) for x in run.stdout.splitlines()], dtype=np.float32), api)


def test_embed_refuses_a_classifier_and_bad_input(tmp_path):
    from xtc.packed.cli import embed

    src = make_tiny_model(tmp_path / "m")
    model = xtc.quantize_(xtc.load_quantized(src), xtc.XTCConfig(weight_bits=1)).eval()
    from xtc.models import load_tokenizer

    xtc.save_packed(model, tmp_path / "packed", tokenizer=load_tokenizer(str(src)))
    with pytest.raises(InputError, match="a classifier, not a sentence embedder"):
        embed(tmp_path / "packed", ["a sentence"])
    run = subprocess.run([sys.executable, "-m", "xtc.cli", "embed", str(tmp_path / "packed"), "-i",
                          str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert run.returncode == 2 and "no such file" in run.stderr and "Traceback" not in run.stderr


def test_embedding_task_refuses_what_does_not_apply(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    corpus, glue = _tiny_embedding_data(tmp_path)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no sentences"):
        load_embedding_task(str(folder), str(tmp_path / "empty.txt"), str(glue))
    with pytest.raises(DataError, match="load_embedding_task"):
        xtc.data.get_task("embedding")
    data = load_embedding_task(str(folder), str(corpus), str(glue))
    assert len(data[1]) == 64 and all(e.text_b is None and e.label is None for e in data[1])
    with pytest.raises(xtc.errors.ConfigError, match="needs labelled training data"):
        xtc.distill(str(folder), None, tmp_path / "d", data=data, quant=xtc.XTCConfig(),
                    config=xtc.TrainConfig(max_steps=1, select_on="train:0.2"))
    assert not (tmp_path / "d").exists()


def test_packed_embedder_as_a_sentence_transformer(tmp_path):
    """The two-line adapter: SentenceTransformer.encode of the packed model equals xtc.encode."""
    pytest.importorskip("sentence_transformers")
    from xtc.data.embedding import embedding_task
    from xtc.models import load_model, load_tokenizer

    folder = _st_files(make_tiny_model(tmp_path / "m", hidden=64), "mean")
    model = xtc.quantize_(load_model(str(folder), embedding_task(Pooling())), xtc.XTCConfig(weight_bits=1)).eval()
    xtc.save_packed(model, tmp_path / "packed", tokenizer=load_tokenizer(str(folder)))
    st = xtc.packed.sentence_transformer(tmp_path / "packed")
    sentences = _sentences(12, 5)
    ours = encode(xtc.load_packed(tmp_path / "packed"), load_tokenizer(str(tmp_path / "packed")), sentences)
    # sentence-transformers pads each batch to its longest sentence; xtc batches equal lengths: ~1e-6 apart
    np.testing.assert_allclose(st.encode(sentences, convert_to_numpy=True), ours, atol=1e-4)


def test_cli_compress_task_embedding(tmp_path):
    """`xtc compress --task embedding --train-file SENTENCES`: the teacher is the model itself, the
    sentences file is the training data, and config.yaml records it."""
    folder = _st_files(make_tiny_model(tmp_path / "m"), "mean")
    corpus, glue = _tiny_embedding_data(tmp_path)
    run = subprocess.run([sys.executable, "-m", "xtc.cli", "compress", "--task", "embedding", "--model", str(folder),
                          "--train-file", str(corpus), "--glue-dir", str(glue), "--max-steps", "2",
                          "--output", str(tmp_path / "run")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "embedding dev stsb_spearman" in run.stdout
    assert f"train_file: {corpus}" in (tmp_path / "run" / "config.yaml").read_text()
    bad = subprocess.run([sys.executable, "-m", "xtc.cli", "compress", "--task", "embedding", "--model", str(folder),
                          "--dev-file", str(corpus), "--output", str(tmp_path / "run2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "do not apply" in bad.stderr and not (tmp_path / "run2").exists()
