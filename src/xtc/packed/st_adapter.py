"""A packed sentence embedder as a ``sentence_transformers.SentenceTransformer``: an input module that
computes with the packed model, then sentence-transformers' own Pooling and Normalize modules, so
that code written for sentence-transformers (``model.encode``, its evaluators, semantic search)
keeps working. sentence-transformers is optional: it is imported only here, on use."""

from __future__ import annotations

from pathlib import Path


def _sentence_transformers():
    """(SentenceTransformer, InputModule, Pooling, Normalize) of the installed sentence-transformers."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("sentence_transformer() needs the sentence-transformers package: "
                          "pip install sentence-transformers") from None
    try:  # sentence-transformers 6
        from sentence_transformers.base.modules import InputModule
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import InputModule, Normalize, Pooling
    return SentenceTransformer, InputModule, Pooling, Normalize


def _packed_transformer(base):
    class PackedTransformer(base):
        """Tokenizes with the packed folder's tokenizer and hands the packed model's token states on
        as ``token_embeddings`` (what sentence-transformers' Pooling reads)."""

        save_in_root = True

        def __init__(self, model, packed_dir, max_length: int = 128):
            super().__init__()
            from transformers import AutoTokenizer

            self.packed, self.packed_dir = model, str(packed_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(self.packed_dir)
            self.max_seq_length = max_length

        def get_word_embedding_dimension(self) -> int:
            return int(self.packed.config.hidden_size)

        get_embedding_dimension = get_word_embedding_dimension

        def preprocess(self, inputs, prompt=None, **kwargs) -> dict:
            texts = [prompt + t for t in inputs] if prompt else list(inputs)
            return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                       return_tensors="pt"))

        def tokenize(self, texts, **kwargs) -> dict:  # the name sentence-transformers 5 calls
            return self.preprocess(texts, **kwargs)

        def forward(self, features: dict, **kwargs) -> dict:
            names = ("input_ids", "attention_mask", "token_type_ids")
            features["token_embeddings"] = self.packed(**{k: features[k] for k in names if k in features}
                                                       ).last_hidden_state
            return features

        def save(self, output_path: str, *args, **kwargs) -> None:
            from ..errors import InputError

            raise InputError(f"a packed model is written by xtc export; load it again from {self.packed_dir} "
                             "with xtc.packed.sentence_transformer")

    return PackedTransformer


def sentence_transformer(packed_dir: str | Path, max_length: int = 128):
    """A ``SentenceTransformer`` computing with the packed embedder of ``packed_dir``::

        model = xtc.packed.sentence_transformer("packed/")
        vectors = model.encode(["A sentence.", "Another one."])
    """
    from ..embedding import model_pooling
    from .model import load_packed

    SentenceTransformer, InputModule, Pooling, Normalize = _sentence_transformers()
    model = load_packed(packed_dir)
    pooling = model_pooling(model)
    first = _packed_transformer(InputModule)(model, packed_dir, max_length)
    modules = [first, Pooling(first.get_word_embedding_dimension(), pooling_mode=pooling.mode)]
    if pooling.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device="cpu")
