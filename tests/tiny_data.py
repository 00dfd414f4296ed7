"""NER-like sentences and a tiny BERT over their vocabulary (built by ``xtc_tiny.save_tiny_bert``), for
end-to-end runs on your-own-data tasks (sequence and token classification). Deterministic in its seed."""

from __future__ import annotations

import random
from pathlib import Path

from xtc_tiny import SPECIAL, save_tiny_bert

WORDS = ("the a good bad movie film story actor plot great awful fine dull city paris london anna bob "
         "visited met in at from likes hates and").split()
PIECES = ["##s", "##ed", "##ing"]
PERSONS, PLACES = ["anna", "bob"], ["paris", "london"]


def make_model(folder: Path, token_level: bool = False, layers: int = 2, num_labels: int = 2, seed: int = 0) -> str:
    return str(save_tiny_bert(folder, SPECIAL + WORDS + PIECES, layers, num_labels, seed, token_level=token_level))


def sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """NER-like sentences: ``anna visited paris`` -> B-PER O B-LOC (pluralised words split into pieces)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            if kind < 0.25:
                tokens.append(rng.choice(PERSONS))
                tags.append("B-PER")
            elif kind < 0.45:
                tokens.append(rng.choice(PLACES))
                tags.append("B-LOC")
                if rng.random() < 0.3:
                    tokens.append("city")
                    tags.append("I-LOC")
            else:
                tokens.append(rng.choice(["the", "visited", "met", "in", "films", "likes", "filmed"]))
                tags.append("O")
        out.append((tokens, tags))
    return out


def write_conll(path: Path, sents, sep: str = "\t") -> Path:
    path.write_text("\n\n".join("\n".join(f"{t}{sep}{g}" for t, g in zip(tokens, tags))
                                for tokens, tags in sents) + "\n")
    return path
