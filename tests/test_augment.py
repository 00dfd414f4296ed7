"""TinyBERT-style augmentation: replacement rate, seeding, each candidate source, odd inputs, file output."""

import json
import math

import pytest
import torch

from xtc.data.augment import (
    STOPWORDS,
    EmbeddingNeighbourCandidates,
    MaskedLMCandidates,
    WordVectorCandidates,
    augment_cmd,
    augment_examples,
    augment_task,
)
from xtc.data import Example, read_split, read_tsv, write_split


@pytest.fixture(scope="module")
def tokenizer():
    from conftest import MINILM
    from transformers import AutoTokenizer

    if not MINILM.exists():
        pytest.skip(f"shared models not found at {MINILM}")
    return AutoTokenizer.from_pretrained(str(MINILM))


@pytest.fixture(scope="module")
def tiny_mlm(tokenizer):
    """A tiny random BertForMaskedLM on the MiniLM vocabulary: fast, and its predictions are deterministic."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    return BertForMaskedLM(cfg).eval()


@pytest.fixture(scope="module")
def content_words(tokenizer):
    """Single-piece, non-stop vocabulary words: every one gets candidates from any source."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(3000, 8000)))
    return [w for w in vocab if w.isalpha() and len(w) > 3 and w not in STOPWORDS][:300]


def random_embeddings(tokenizer, dim=16):
    return torch.randn(len(tokenizer), dim, generator=torch.Generator().manual_seed(0))


def test_replacement_rate_is_replace_prob(tokenizer, content_words):
    words = content_words[:240]
    examples = [Example(" ".join(words[i:i + 40]), None, 0) for i in range(0, 240, 40)]
    copies, p = 20, 0.4
    out = augment_examples(examples, tokenizer, embedding_matrix=random_embeddings(tokenizer), copies=copies,
                           replace_prob=p, progress=False)
    augmented = out[len(examples):]
    assert len(augmented) == len(examples) * copies and all(ex.label is None for ex in augmented)
    assert out[:len(examples)] == examples  # originals first, untouched
    changed = total = 0
    for k, ex in enumerate(augmented):
        original = examples[k // copies].text_a.split()
        new = ex.text_a.split()
        assert len(new) == len(original)  # one word replaces one word; spaces kept
        # a candidate never equals its word, so every replacement shows as a changed word
        changed += sum(a != b for a, b in zip(original, new))
        total += len(original)
    sd = math.sqrt(p * (1 - p) / total)
    assert abs(changed / total - p) < 4 * sd, (changed / total, total)


def test_prob_zero_adds_nothing_prob_one_changes_every_word(tokenizer, content_words):
    examples = [Example(" ".join(content_words[:30]), None, 1)]
    emb = random_embeddings(tokenizer)
    # every copy equals the original, and duplicates are dropped (as in TinyBERT)
    assert augment_examples(examples, tokenizer, embedding_matrix=emb, replace_prob=0.0, progress=False) == examples
    out = augment_examples(examples, tokenizer, embedding_matrix=emb, replace_prob=1.0, copies=3, progress=False)
    for ex in out[1:]:
        assert all(a != b for a, b in zip(examples[0].text_a.split(), ex.text_a.split()))


def test_stop_words_punctuation_and_case(tokenizer):
    examples = [Example("The Movie was NOT great, but Paris is lovely.", "Keep me.", 1)]
    out = augment_examples(examples, tokenizer, embedding_matrix=random_embeddings(tokenizer), replace_prob=1.0,
                           copies=2, progress=False)
    for ex in out[1:]:
        words = ex.text_a.replace(",", " ,").replace(".", " .").split()
        assert words[0] == "The" and words[2] == "was" and words[3] == "NOT" and words[6] == "but"
        assert words[5] == "," and words[-1] == "."
        assert words[1][0].isupper() and words[1] != "Movie"  # replacement takes the word's case
        assert words[4] != "great" and words[4].islower()
        assert ex.text_b == "Keep me."  # only the first sentence unless both_sentences
    both = augment_examples(examples, tokenizer, embedding_matrix=random_embeddings(tokenizer), replace_prob=1.0,
                            copies=1, both_sentences=True, progress=False)
    assert both[1].text_b.endswith(" me.") and both[1].text_b != "Keep me."  # "me" is a stop word


def test_masked_lm_source_is_batched_and_matches_one_word_per_call(tokenizer, tiny_mlm):
    sentences = [tuple("the cat sat on the warm mat near a red door".split()),
                 tuple("a long story about small towns and quiet rivers".split())]
    queries = [(s, i) for s in sentences for i in range(len(s)) if s[i] not in STOPWORDS]
    calls = []
    hook = tiny_mlm.register_forward_hook(lambda m, a, out: calls.append(tuple(out.logits.shape)))
    try:
        exact = MaskedLMCandidates(tiny_mlm, tokenizer, top_k=5, mask_rate=0.0, batch_size=64)(queries)
        assert len(calls) == 1  # all rows in one forward
        assert calls[0] == (len(queries), len(tokenizer))  # one mask per row; vocabulary only at masks
        calls.clear()
        spread = MaskedLMCandidates(tiny_mlm, tokenizer, top_k=5, mask_rate=0.3, batch_size=2)(queries)
        # 3 masks a row (30 % of 13 and 11 tokens): 7 words -> 3 rows, 6 words -> 2 rows; batches of 2 rows
        assert len(calls) == 3 and sum(n for n, _ in calls) == len(queries)
    finally:
        hook.remove()
    assert all(len(c) == 5 for c in exact + spread)
    for (tokens, i), found in zip(queries, exact):
        assert tokens[i] not in found and all(w.isalnum() and not w.startswith("##") for w in found)
        # the batched, padded result equals one masked sentence through the model alone
        ids = tokenizer(" ".join(tokens), return_tensors="pt")["input_ids"]
        ids[0, i + 1] = tokenizer.mask_token_id
        with torch.no_grad():
            logits = tiny_mlm(input_ids=ids).logits[0, i + 1]
        top = tokenizer.convert_ids_to_tokens(logits.topk(40).indices.tolist())
        words = [w for w in top if w.isalnum() and not w.isdigit() and w != tokens[i]]  # plain words only
        assert found == words[:5]


def test_masked_lm_used_for_single_pieces_vectors_for_the_rest(tokenizer, tiny_mlm, tmp_path):
    glove = tmp_path / "vectors.txt"
    glove.write_text("3 2\n"  # a word2vec-style header is skipped
                     "antidisestablishmentarianism 1.0 0.1\n"
                     "doctrine 0.9 0.2\n"
                     "banana -1.0 0.0\n")
    source = WordVectorCandidates(glove, top_k=1)
    assert source([(("antidisestablishmentarianism",), 0)]) == [["doctrine"]]
    assert source([(("unknownword",), 0)]) == [[]]
    assert len(tokenizer.tokenize("antidisestablishmentarianism")) > 1
    examples = [Example("cat antidisestablishmentarianism", None, 0)]
    out = augment_examples(examples, tokenizer, mlm=tiny_mlm, word_vectors=glove, top_k=1, replace_prob=1.0,
                           copies=2, progress=False)
    assert len(out) == 2  # top_k=1: the one possible copy, its duplicate dropped
    cat = MaskedLMCandidates(tiny_mlm, tokenizer, top_k=1)([(("cat", "antidisestablishmentarianism"), 0)])[0][0]
    assert out[1].text_a == f"{cat} doctrine"


def test_embedding_neighbours(tokenizer):
    emb = random_embeddings(tokenizer)
    cat, dog = tokenizer.convert_tokens_to_ids(["cat", "dog"])
    emb[dog] = emb[cat] + 0.01  # make "dog" the nearest neighbour of "cat"
    source = EmbeddingNeighbourCandidates(emb, tokenizer, top_k=3)
    found = source([(("cat",), 0), (("Cat",), 0), (("unbelievably",), 0)])
    assert found[0][0] == "dog" and "cat" not in found[0]
    assert found[1][0] == "dog"  # uncased tokenizer: same row
    assert len(found[2]) == 3 and all(w.isalpha() for w in found[2])  # multi-piece: mean of the pieces
    assert "##" not in "".join(found[2])


def test_long_empty_and_odd_inputs_round_trip(tokenizer, content_words, tmp_path):
    long = " ".join(content_words[:200])
    examples = [Example(long, "short", 0), Example("", "", 1), Example("   ", "x", 0),
                Example("tabs\tand\u200bzero-width ☃ ünïcödé émoji 🙂 «quotes» \"x\"", "ok", 1)]
    out = augment_examples(examples, tokenizer, embedding_matrix=random_embeddings(tokenizer), copies=5,
                           replace_prob=1.0, max_length=32, progress=False)
    assert out[:4] == examples
    longs = [ex for ex in out[4:] if ex.text_b == "short"]
    assert len(longs) == 5
    for ex in longs:  # words past max_length word-pieces stay as they are
        words = ex.text_a.split()
        assert words[40:] == content_words[40:200] and words[:30] != content_words[:30]
    assert not any(ex.text_b in ("", "x") for ex in out[4:])  # nothing to change: no copies
    path = tmp_path / "train.tsv"
    write_split("rte", out, path)
    back = read_tsv("rte", path)
    assert len(back) == len(out) and [ex.label for ex in back] == [ex.label for ex in out]


def test_no_source_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="candidate source"):
        augment_examples([Example("a cat", None, 0)], tokenizer, progress=False)


@pytest.fixture(scope="module")
def tiny_glue_and_model(tmp_path_factory, tokenizer, tiny_mlm):
    from conftest import GLUE

    root = tmp_path_factory.mktemp("aug")
    write_split("rte", read_split("rte", GLUE, "train")[:12], root / "glue" / "RTE" / "train.tsv")
    write_split("rte", read_split("rte", GLUE, "dev")[:5], root / "glue" / "RTE" / "dev.tsv")
    tiny_mlm.save_pretrained(root / "mlm")
    tokenizer.save_pretrained(root / "mlm")
    return root / "glue", root / "mlm"


def test_augment_task_writes_a_glue_dir_and_is_seeded(tiny_glue_and_model, tmp_path):
    glue, mlm = tiny_glue_and_model
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        summary = augment_task("rte", glue, tmp_path / name, copies=3, model=mlm, mlm=mlm, seed=seed,
                               progress=False)
        runs[name] = (tmp_path / name / "RTE" / "train.tsv").read_bytes()
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]
    train = read_split("rte", tmp_path / "a", "train")
    originals = read_split("rte", glue, "train")
    assert train[:12] == originals and len(train) == 12 + 36
    assert all(ex.label is None for ex in train[12:])
    assert (tmp_path / "a" / "RTE" / "dev.tsv").read_bytes() == (glue / "RTE" / "dev.tsv").read_bytes()
    recorded = json.loads((tmp_path / "a" / "RTE" / "augment.json").read_text())
    assert recorded["augmented"] == 36 and recorded["options"]["copies"] == 3
    assert summary["original"] == 12

    # the CLI entry point, with the embedding-neighbour fallback only
    augment_cmd("RTE", glue, tmp_path / "cli", model=str(mlm), copies=2)
    assert len(read_split("rte", tmp_path / "cli", "train")) == 12 + 24


def test_distil_on_augmented_data_mixes_labelled_and_unlabelled(tmp_path):
    """The augmented file holds labelled originals and unlabelled copies; training batches mix both."""
    from typer.testing import CliRunner
    from xtc_tiny import make_tiny_glue, make_tiny_model

    from xtc.cli import app

    teacher, glue = make_tiny_model(tmp_path / "teacher"), make_tiny_glue(tmp_path / "glue", n_train=8, n_dev=4)
    augment_task("sst2", glue, tmp_path / "aug", copies=3, model=teacher, seed=0, progress=False)
    train = read_split("sst2", tmp_path / "aug", "train")
    assert any(ex.label is None for ex in train) and any(ex.label is not None for ex in train)
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher), "--task", "sst2", "--glue-dir",
                                      str(glue), "--output", str(tmp_path / "out"), "--weight-bits", "1",
                                      "--augment", str(tmp_path / "aug" / "SST-2" / "train.tsv"),
                                      "--max-steps", "4", "--batch-size", "8"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "out" / "model" / "config.json").exists()
