"""Self-contained tiny models and GLUE folders for end-to-end tests (no download, no shared/ needed).

``make_tiny_model`` saves a random 2-layer BERT classifier with its own 60-word WordPiece tokenizer;
``make_tiny_glue`` writes an SST-2 train/dev pair in the GLUE TSV layout whose label is learnable
(it depends on the first word). Both are deterministic in their seed.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the a good bad movie film story actor plot scene great awful fine dull funny sad long short "
         "bright dark happy angry calm loud quiet fast slow warm cold new old big small red blue green "
         "black white day night year city music song book game team play run walk talk sing read write "
         "love hate like").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = set(WORDS[: len(WORDS) // 2])


def save_tiny_bert(folder: Path, vocab_words: list[str], layers: int = 2, num_labels: int = 2, seed: int = 0,
                   hidden: int = 32, dropout: float = 0.1, token_level: bool = False) -> Path:
    """A random BERT (sequence or token classifier) with a WordPiece tokenizer over ``vocab_words``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(vocab_words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)  # transformers 5: vocab=, not vocab_file=
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab_words), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=64,
                     num_labels=num_labels, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    (BertForTokenClassification if token_level else BertForSequenceClassification)(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_model(folder: Path, layers: int = 2, num_labels: int = 2, dropout: float = 0.1, seed: int = 0,
                    hidden: int = 32) -> Path:
    return save_tiny_bert(folder, SPECIAL + list(WORDS), layers, num_labels, seed, hidden, dropout)


def tiny_sentences(n: int, seed: int = 0, length: tuple[int, int] = (3, 8)) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(*length))]
        out.append((" ".join(words), int(words[0] in POSITIVE)))
    return out


def make_tiny_glue(glue_dir: Path, n_train: int = 32, n_dev: int = 16, seed: int = 0,
                   length: tuple[int, int] = (3, 8)) -> Path:
    """``glue_dir/SST-2/{train,dev}.tsv``; ``length`` = (min, max) words per sentence."""
    from xtc.data import Example, write_split

    glue_dir = Path(glue_dir)
    for split, n, s in (("train", n_train, seed), ("dev", n_dev, seed + 1)):
        examples = [Example(text, None, label) for text, label in tiny_sentences(n, s, length)]
        write_split("sst2", examples, glue_dir / "SST-2" / f"{split}.tsv")
    return glue_dir


# A CLI process whose training steps can be slowed down (XTC_TEST_STEP_SLEEP seconds each), so that a
# test can SIGKILL it at a chosen point of a real run.
_CLI = """
import os, sys, time
sleep = float(os.environ.get("XTC_TEST_STEP_SLEEP", "0"))
if sleep:
    from xtc import train
    original = train.XTCTrainer.training_step
    def slow(self, *a, **k):
        time.sleep(sleep)
        return original(self, *a, **k)
    train.XTCTrainer.training_step = slow
from xtc.cli import app
app(prog_name="xtc")
"""


def cli_env(**extra) -> dict:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_cli(args: list[str], log: Path, **env):
    """``xtc ARGS`` in a subprocess (its stdout+stderr go to ``log``)."""
    import subprocess
    import sys

    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-c", _CLI, *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                            env=cli_env(**env))


def run_cli(args: list[str], log: Path, timeout: float = 300, **env) -> int:
    p = start_cli(args, log, **env)
    try:
        return p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
