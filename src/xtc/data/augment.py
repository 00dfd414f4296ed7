"""TinyBERT-style data augmentation (docs/method.md, "Data augmentation"): offline, seeded and batched.

Each word of a training sentence is replaced, with probability ``replace_prob``, by a random one of its
``top_k`` candidates. Where the candidates come from depends on the word, as in TinyBERT:

* one word-piece for the tokenizer -> a masked language model's top predictions at that position
  (:class:`MaskedLMCandidates`);
* several word-pieces -> nearest neighbours in a GloVe-format word-vector file (:class:`WordVectorCandidates`);
* no masked LM or vectors at hand -> nearest neighbours among the rows of the teacher's own input
  embedding matrix (:class:`EmbeddingNeighbourCandidates`), so augmentation always works offline.

Differences from TinyBERT's script, all for speed or for faithful text:

* candidates are computed once per word occurrence and the ``copies`` are sampled from them (as TinyBERT
  does), but the masked LM runs batched, and one row masks several words spread over the sentence
  (``mask_rate`` of its tokens, 15 % as in BERT's pre-training), not one forward pass per word;
* text between replaced words is kept byte for byte (TinyBERT re-joins lower-cased word-pieces), and a
  replacement takes the case of the word it replaces;
* a candidate never equals the word itself, so ``replace_prob`` is the real rate of change of the words
  that have candidates; stop words (TinyBERT's list) and words without letters are kept.

Augmented examples carry label None: the teacher supplies the targets (docs/method.md).
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from .glue import get_task, load_split, write_split
from .tasks import Example

# BERT's basic tokenizer, as a regex: runs of letters/digits are words, every other visible char stands alone.
WORD_RE = re.compile(r"[^\W_]+|\S")
_WORD = re.compile(r"[^\W_]+")
_HAS_LETTER = re.compile(r"[^\W\d_]")

# TinyBERT's stop-word list (NLTK English), without the forms that the split above cuts at the apostrophe.
# Keeping them unchanged also keeps negations ("not", "no", "nor"), which would often flip a label.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is
are was were be been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there when where why how all any both each few
more most other some such no nor not only own same so than too very s t can will just don should now d ll
m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won
wouldn
""".split())

# tasks the paper augments 30x (small ones); 20x for SST-2/QNLI and anything else
_COPIES = {"cola": 30, "mrpc": 30, "stsb": 30, "rte": 30}
DEFAULT_COPIES = 20

Query = tuple[tuple[str, ...], int]  # (the tokens of a sentence, index of the word to replace)


def _is_word(token: str) -> bool:
    """A candidate must be one plain word (no '##' piece, punctuation, [unused0] or special token)."""
    return bool(_WORD.fullmatch(token)) and bool(_HAS_LETTER.search(token))


def _match_case(candidate: str, word: str) -> str:
    if len(word) > 1 and word.isupper():
        return candidate.upper()
    if word[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


def _clean_candidates(tokens: Sequence[str], word: str, top_k: int, exclude: Sequence[str] = ()) -> list[str]:
    """The first ``top_k`` distinct plain words of ``tokens`` other than ``word`` itself and ``exclude``
    (ignoring case)."""
    seen, out = {word.lower(), *(x.lower() for x in exclude)}, []
    for tok in tokens:
        tok = tok.lstrip("Ġ▁")  # byte-level BPE / sentencepiece word-start markers
        if _is_word(tok) and tok.lower() not in seen:
            seen.add(tok.lower())
            out.append(tok)
            if len(out) == top_k:
                break
    return out


# ---------------------------------------------------------------------------------------------------
# Candidate sources


class CandidateSource:
    """Replacement candidates for words in context.

    ``source(queries)`` answers many queries at once (so a source can batch model calls); each answer
    is a list of at most ``top_k`` words, empty when the source knows nothing better than the word.
    """

    top_k: int

    def __call__(self, queries: Sequence[Query], progress: bool = False) -> list[list[str]]:
        raise NotImplementedError


class _NeighbourSource(CandidateSource):
    """Context-free sources: the answer depends only on the word, so it is computed once per word."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self._cache: dict[str, list[str]] = {}

    def __call__(self, queries: Sequence[Query], progress: bool = False) -> list[list[str]]:
        words = [tokens[i] for tokens, i in queries]
        todo = sorted({w for w in words if w not in self._cache})
        if todo:
            self._cache.update(zip(todo, self._lookup(todo)))
        return [self._cache[w] for w in words]

    def _lookup(self, words: list[str]) -> list[list[str]]:
        raise NotImplementedError

    @staticmethod
    def _nearest(query: torch.Tensor, matrix: torch.Tensor, k: int) -> list[list[int]]:
        """Row indices of the ``k`` most cosine-similar rows of ``matrix`` (rows unit-norm) per query row."""
        query = torch.nn.functional.normalize(query.float(), dim=-1)
        out = []
        for chunk in query.split(1024):  # bounds the (chunk x vocabulary) score matrix
            out += (chunk @ matrix.T).topk(min(k, len(matrix)), dim=-1).indices.tolist()
        return out


class WordVectorCandidates(_NeighbourSource):
    """Nearest neighbours in a GloVe-format text file (``word v1 v2 ...`` per line; a word2vec
    ``count dim`` header line is skipped). ``max_words`` keeps only the first (most frequent) words,
    which bounds loading time and memory for big files."""

    def __init__(self, path: str | Path, top_k: int = 15, max_words: int | None = None):
        super().__init__(top_k)
        words, rows, dim = [], [], None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").rstrip().split(" ")
                if dim is None and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec header
                if len(parts) < 2:
                    continue
                dim = dim or len(parts) - 1
                if len(parts) - 1 != dim:  # e.g. GloVe 840B has a few "words" containing spaces
                    continue
                words.append(parts[0])
                rows.append([float(x) for x in parts[1:]])
                if max_words and len(words) >= max_words:
                    break
        if not words:
            raise DataError(f"{path}: no word vectors found; expected GloVe text lines 'word v1 v2 ...'")
        self.words = words
        self.index: dict[str, int] = {}
        for i, w in enumerate(words):
            self.index.setdefault(w, i)
        self.matrix = torch.nn.functional.normalize(torch.tensor(rows), dim=-1)

    def _lookup(self, words: list[str]) -> list[list[str]]:
        # vectors may be lower-cased (GloVe 6B) or cased (840B): try the word as written, then lower-cased
        rows = {w: self.index.get(w, self.index.get(w.lower())) for w in words}
        known = [w for w in words if rows[w] is not None]
        answers = {w: [] for w in words}
        if known:
            # a few extra neighbours make room for the ones filtered out (the word itself, punctuation)
            found = self._nearest(self.matrix[[rows[w] for w in known]], self.matrix, 2 * self.top_k + 10)
            for w, ids in zip(known, found):
                answers[w] = _clean_candidates([self.words[i] for i in ids], w, self.top_k)
        return [answers[w] for w in words]


class EmbeddingNeighbourCandidates(_NeighbourSource):
    """Nearest neighbours in a model's input word-embedding matrix, among the whole-word tokens of its
    vocabulary. A single-piece word is its own row; a multi-piece word is the mean of its pieces' rows."""

    def __init__(self, embedding_matrix: torch.Tensor, tokenizer, top_k: int = 15):
        super().__init__(top_k)
        self.tokenizer = tokenizer
        self.embeddings = embedding_matrix.detach().float()
        tokens = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), len(self.embeddings)))))
        special = set(tokenizer.all_special_ids)
        whole = [i for i, t in enumerate(tokens) if i not in special and _is_word(t.lstrip("Ġ▁"))]
        self.tokens = [tokens[i] for i in whole]
        self.matrix = torch.nn.functional.normalize(self.embeddings[whole], dim=-1)

    def _lookup(self, words: list[str]) -> list[list[str]]:
        pieces = self.tokenizer(words, add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        usable = [j for j, ids in enumerate(pieces) if ids and unk not in ids]  # an [UNK] row means nothing
        answers: list[list[str]] = [[] for _ in words]
        if usable:
            query = torch.stack([self.embeddings[pieces[j]].mean(0) for j in usable])
            found = self._nearest(query, self.matrix, 2 * self.top_k + 10)
            for j, ids in zip(usable, found):
                # a multi-piece word's mean lies near its own pieces ("un" for "unbelievably"): skip them
                own = [p.lstrip("#Ġ▁") for p in self.tokenizer.convert_ids_to_tokens(pieces[j])]
                answers[j] = _clean_candidates([self.tokens[i] for i in ids], words[j], self.top_k, own)
        return answers


class MaskedLMCandidates(CandidateSource):
    """Top predictions of a masked language model (any ``AutoModelForMaskedLM``) at the word's position.

    Rows are batched, sorted by length (little padding), and each row masks up to ``mask_rate`` of its
    tokens at once (at least one; spread evenly over the sentence): a 50-token sentence with 20
    candidate words costs 3 rows, not 20. ``mask_rate=0`` masks one word per row, as TinyBERT does.
    The vocabulary projection runs only at masked positions, which halves the cost of a small model.
    """

    def __init__(self, model, tokenizer=None, top_k: int = 15, *, batch_size: int = 64, max_length: int = 128,
                 mask_rate: float = 0.15):
        if isinstance(model, (str, Path)):
            model, tokenizer = load_masked_lm(model)
        if tokenizer is None:
            raise ConfigError("MaskedLMCandidates needs the tokenizer of the masked LM")
        if tokenizer.mask_token_id is None:
            raise ConfigError("the masked LM's tokenizer has no mask token")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.top_k, self.batch_size, self.max_length, self.mask_rate = top_k, batch_size, max_length, mask_rate
        self._pieces: dict[str, list[int]] = {}

    def _piece_ids(self, tokens: set[str]) -> None:
        todo = sorted(tokens - self._pieces.keys())
        if todo:  # one batched tokenizer call for every new word
            self._pieces.update(zip(todo, self.tokenizer(todo, add_special_tokens=False)["input_ids"]))

    def __call__(self, queries: Sequence[Query], progress: bool = False) -> list[list[str]]:
        answers: list[list[str]] = [[] for _ in queries]
        by_sentence: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        for q, (tokens, i) in enumerate(queries):
            by_sentence.setdefault(tokens, []).append((q, i))
        self._piece_ids({t for tokens in by_sentence for t in tokens})

        tok = self.tokenizer
        rows = []  # (input ids, [(position of a [MASK], query number, word)])
        for tokens, asked in by_sentence.items():
            ids, where = [tok.cls_token_id], {}
            for i, t in enumerate(tokens):
                pieces = self._pieces[t]
                if len(ids) + len(pieces) > self.max_length - 1:
                    break  # truncated: words beyond keep no candidates
                if len(pieces) == 1:
                    where[i] = len(ids)
                ids += pieces
            ids.append(tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id)
            asked = [(q, i) for q, i in asked if i in where]  # multi-piece here or cut off: no answer
            if not asked:
                continue
            per_row = max(1, int(self.mask_rate * len(ids)))
            n_rows = math.ceil(len(asked) / per_row)
            for r in range(n_rows):  # row r masks words r, r + n_rows, ...: spread over the sentence
                masked = [(where[i], q, tokens[i]) for q, i in asked[r::n_rows]]
                row = list(ids)
                for pos, _, _ in masked:
                    row[pos] = tok.mask_token_id
                rows.append((row, masked))

        rows.sort(key=lambda r: len(r[0]))
        head = self.model.get_output_embeddings()
        keep = {}

        def only_masked(module, args):  # project to the vocabulary only where a [MASK] is
            return (args[0][keep["at"]],)

        hook = head.register_forward_pre_hook(only_masked) if head is not None else None
        batches = range(0, len(rows), self.batch_size)
        try:
            for start in tqdm(batches, desc="masked LM", unit="batch", disable=not progress):
                batch = rows[start:start + self.batch_size]
                width = len(batch[-1][0])
                pad = tok.pad_token_id if tok.pad_token_id is not None else 0
                ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in batch])
                attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in batch])
                at = [(b, pos) for b, (_, masked) in enumerate(batch) for pos, _, _ in masked]
                keep["at"] = tuple(torch.tensor(x) for x in zip(*at))
                with torch.inference_mode():
                    logits = self.model(input_ids=ids, attention_mask=attention).logits
                if logits.dim() == 3:  # no hook possible: pick the masked positions afterwards
                    logits = logits[keep["at"]]
                top = logits.topk(2 * self.top_k + 10, dim=-1).indices.tolist()
                masked = [m for _, ms in batch for m in ms]
                for (_, q, word), ids_k in zip(masked, top):
                    answers[q] = _clean_candidates(tok.convert_ids_to_tokens(ids_k), word, self.top_k)
        finally:
            if hook is not None:
                hook.remove()
        return answers


def load_masked_lm(name_or_path: str | Path):
    """``(model, tokenizer)`` of a masked LM; warns when the checkpoint has no trained MLM head."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, info = AutoModelForMaskedLM.from_pretrained(str(name_or_path), output_loading_info=True)
    head = [k for k in info.get("missing_keys", ()) if "embeddings" not in k]
    if head:
        warnings.warn(f"{name_or_path} has no trained masked-LM head (missing: {', '.join(sorted(head)[:3])}...): "
                      "its predictions are random words; use a checkpoint trained with an MLM objective",
                      stacklevel=2)
    return model.eval(), AutoTokenizer.from_pretrained(str(name_or_path))


# ---------------------------------------------------------------------------------------------------
# Augmentation


@dataclass
class _Sentence:
    example: int
    field: str  # "text_a" or "text_b"
    text: str
    spans: list[tuple[int, int]]  # character spans of the tokens
    tokens: tuple[str, ...]
    choices: dict[int, list[str]]  # token index -> candidates (only words that have some)


def _split(text: str) -> tuple[list[tuple[int, int]], tuple[str, ...]]:
    matches = list(WORD_RE.finditer(text))
    return [m.span() for m in matches], tuple(m.group() for m in matches)


def augment_examples(examples: Sequence[Example], tokenizer, *, mlm=None, word_vectors=None,
                     embedding_matrix=None, copies: int = 30, top_k: int = 15, replace_prob: float = 0.4,
                     both_sentences: bool = False, seed: int = 0, max_length: int = 128, batch_size: int = 64,
                     mask_rate: float = 0.15, stopwords=STOPWORDS, progress: bool = True) -> list[Example]:
    """The originals followed by up to ``copies`` augmented copies of each example (label None).

    ``tokenizer`` is the teacher's: it decides which words are one word-piece. Sources:
    ``mlm`` a masked LM (name/path, a model sharing ``tokenizer``, or a :class:`CandidateSource`) for
    single-piece words; ``word_vectors`` a GloVe-format file (or source) for the others;
    ``embedding_matrix`` (a tensor or a model, for its input embeddings) for whatever has no other source,
    and for words missing from the word vectors. At least one source is needed.

    Only ``text_a`` is changed unless ``both_sentences`` (TinyBERT augments the first sentence). Words past
    ``max_length`` word-pieces stay as they are. A copy identical to the original or to an earlier copy is
    dropped, as in TinyBERT (so short sentences may get fewer copies). The result depends only on the
    inputs and ``seed``: each example draws from its own generator, whatever the batching.
    """
    if not 0.0 <= replace_prob <= 1.0:
        raise ConfigError(f"replace_prob must be in [0, 1], got {replace_prob}")
    if copies < 0 or top_k < 1:
        raise ConfigError(f"copies must be >= 0 and top_k >= 1, got copies={copies}, top_k={top_k}")
    if isinstance(mlm, (str, Path)):
        mlm = MaskedLMCandidates(mlm, top_k=top_k, batch_size=batch_size, max_length=max_length,
                                 mask_rate=mask_rate)
    elif mlm is not None and not isinstance(mlm, CandidateSource):  # a model object using our tokenizer
        mlm = MaskedLMCandidates(mlm, tokenizer, top_k=top_k, batch_size=batch_size, max_length=max_length,
                                 mask_rate=mask_rate)
    if isinstance(word_vectors, (str, Path)):
        word_vectors = WordVectorCandidates(word_vectors, top_k=top_k)
    embeddings = None
    if isinstance(embedding_matrix, CandidateSource):
        embeddings = embedding_matrix
    elif isinstance(embedding_matrix, torch.nn.Module):
        embeddings = EmbeddingNeighbourCandidates(embedding_matrix.get_input_embeddings().weight, tokenizer, top_k)
    elif embedding_matrix is not None:
        embeddings = EmbeddingNeighbourCandidates(embedding_matrix, tokenizer, top_k)
    # multi-piece words: word vectors first, the embedding matrix for what they do not know
    by_word = [s for s in (word_vectors, embeddings) if s is not None]
    if mlm is None and not by_word:
        raise ConfigError("augmentation needs a candidate source: mlm, word_vectors or embedding_matrix")

    # 1. split every sentence into tokens; the teacher's tokenizer says which words are single pieces
    fields = ("text_a", "text_b") if both_sentences else ("text_a",)
    sentences = []
    for e, ex in enumerate(examples):
        for field in fields:
            text = getattr(ex, field)
            if text:
                spans, tokens = _split(text)
                sentences.append(_Sentence(e, field, text, spans, tokens, {}))
    vocab = sorted({t for s in sentences for t in s.tokens})
    pieces = {}
    if vocab:  # one batched tokenizer call for all distinct tokens
        pieces = dict(zip(vocab, map(len, tokenizer(vocab, add_special_tokens=False)["input_ids"])))
    single, multi = [], []  # (sentence number, query)
    for n, s in enumerate(sentences):
        used = 1  # [CLS]
        for i, t in enumerate(s.tokens):
            used += pieces[t]
            if used > max_length - 1:  # past what the model sees ([SEP] needs the last slot)
                break
            if pieces[t] and _HAS_LETTER.search(t) and t.lower() not in stopwords:
                (single if pieces[t] == 1 and mlm is not None else multi).append((n, (s.tokens, i)))

    # 2. candidates, each source asked once for all its queries
    def ask(source, asked):
        for (n, (_, i)), found in zip(asked, source([q for _, q in asked], progress=progress)):
            if found:
                sentences[n].choices[i] = found

    if single:
        ask(mlm, single)
    for source in by_word:  # also for single-piece words the masked LM found nothing for
        todo = [(n, q) for n, q in single + multi if q[1] not in sentences[n].choices]
        if todo:
            ask(source, todo)

    # 3. sample the copies
    per_example: dict[int, list[_Sentence]] = {}
    for s in sentences:
        per_example.setdefault(s.example, []).append(s)
    augmented = []
    for e, ex in enumerate(tqdm(examples, desc="augment", unit="ex", disable=not progress)):
        rng = random.Random(f"xtc-augment:{seed}:{e}")  # str seeds hash deterministically (sha512)
        seen = {(ex.text_a, ex.text_b)}
        for _ in range(copies):
            new = {"text_a": ex.text_a, "text_b": ex.text_b}
            for s in per_example.get(e, ()):
                new[s.field] = _resample(s, rng, replace_prob)
            key = (new["text_a"], new["text_b"])
            if key not in seen:
                seen.add(key)
                augmented.append(Example(new["text_a"], new["text_b"], None))
    return list(examples) + augmented


def _resample(s: _Sentence, rng: random.Random, replace_prob: float) -> str:
    """One copy of ``s``: each word with candidates replaced w.p. ``replace_prob``; text between kept."""
    out, last = [], 0
    for i, found in sorted(s.choices.items()):
        # draw both numbers always, so one word's outcome never shifts the next word's random stream
        hit, pick = rng.random() < replace_prob, rng.randrange(len(found))
        if hit:
            start, end = s.spans[i]
            out += [s.text[last:start], _match_case(found[pick], s.tokens[i])]
            last = end
    out.append(s.text[last:])
    return "".join(out)


def augment_task(task, glue_dir: str | Path | None, output_dir: str | Path, *, copies: int | None = None,
                 model: str | Path | None = None, mlm: str | Path | None = None, glove: str | Path | None = None,
                 both_sentences: bool = False, seed: int = 0, top_k: int = 15, replace_prob: float = 0.4,
                 mask_rate: float = 0.15, max_length: int = 128, batch_size: int = 64,
                 progress: bool = True) -> dict:
    """Augment ``task``'s train split into ``<output_dir>/<DIR>/train.tsv`` (original layout) and copy the
    dev split(s) next to it, so ``output_dir`` works as a ``--glue-dir``; returns what ``augment.json``
    there records (options, counts, seconds).

    ``model`` (the teacher, or the model it starts from) gives the tokenizer and the embedding-neighbour
    fallback; without it, ``mlm`` gives both. ``glue_dir=None`` reads the hub's GLUE dataset.
    """
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    spec = get_task(task)
    if model is None and mlm is None:
        raise ConfigError("give model (the teacher's tokenizer and embeddings) or mlm (a masked LM)")
    copies = _COPIES.get(spec.name, DEFAULT_COPIES) if copies is None else copies
    examples = load_split(spec, "train", glue_dir)

    mlm_source = None
    if mlm is not None:
        mlm_source = MaskedLMCandidates(mlm, top_k=top_k, batch_size=batch_size, max_length=max_length,
                                        mask_rate=mask_rate)
    if model is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        embedding_matrix = AutoModel.from_pretrained(str(model)).get_input_embeddings().weight.detach()
    else:
        tokenizer = mlm_source.tokenizer
        embedding_matrix = mlm_source.model.get_input_embeddings().weight.detach()
    result = augment_examples(examples, tokenizer, mlm=mlm_source, word_vectors=glove,
                              embedding_matrix=embedding_matrix, copies=copies, top_k=top_k,
                              replace_prob=replace_prob, both_sentences=both_sentences, seed=seed,
                              max_length=max_length, batch_size=batch_size, mask_rate=mask_rate,
                              progress=progress)

    out = Path(output_dir) / spec.dir_name
    out.mkdir(parents=True, exist_ok=True)
    write_split(spec, result, out / "train.tsv")
    for split in spec.dev_splits:
        source = Path(glue_dir) / spec.dir_name / f"{split}.tsv" if glue_dir is not None else None
        if source is not None and source.is_file():
            shutil.copyfile(source, out / f"{split}.tsv")  # byte for byte: the dev set is never touched
        else:
            write_split(spec, load_split(spec, split, glue_dir), out / f"{split}.tsv")
    summary = {
        "task": spec.name, "glue_dir": None if glue_dir is None else str(glue_dir),
        "options": {"copies": copies, "model": _str(model), "mlm": _str(mlm), "glove": _str(glove),
                    "both_sentences": both_sentences, "seed": seed, "top_k": top_k,
                    "replace_prob": replace_prob, "mask_rate": mask_rate, "max_length": max_length},
        "original": len(examples), "augmented": len(result) - len(examples), "total": len(result),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "augment.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _str(value) -> str | None:
    return None if value is None else str(value)


def augment_cmd(task: str, glue_dir: Path, output: Path, copies: int | None = None, model: str | None = None,
                mlm: str | None = None, glove: Path | None = None, both: bool = False, seed: int = 0,
                top_k: int = 15, prob: float = 0.4, mask_rate: float = 0.15) -> None:
    """Augment a GLUE task's train set TinyBERT-style; OUTPUT then works as a --glue-dir.

    --model gives the tokenizer and the embedding-neighbour fallback (use the teacher's folder);
    --mlm a masked LM for single-piece words; --glove a GloVe text file for the other words.
    """
    summary = augment_task(task, glue_dir, output, copies=copies, model=model, mlm=mlm, glove=glove,
                           both_sentences=both, seed=seed, top_k=top_k, replace_prob=prob, mask_rate=mask_rate)
    print(f"{summary['task']}: {summary['original']} examples + {summary['augmented']} augmented -> "
          f"{Path(output) / get_task(task).dir_name / 'train.tsv'} ({summary['seconds']} s)")
