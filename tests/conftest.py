import os
from pathlib import Path

import pytest
import torch



def _find_shared() -> Path:
    """The shared models and data: $XTC_SHARED, else ../shared next to the checkout, else the
    development machine's /work/shared (so that a clone elsewhere still runs the full suite)."""
    candidates = [os.environ.get("XTC_SHARED"), Path(__file__).resolve().parents[2] / "shared", "/work/shared"]
    for c in candidates:
        if c and (Path(c) / "models").is_dir():
            return Path(c)
    return Path(__file__).resolve().parents[2] / "shared"


SHARED = _find_shared()
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
GLUE = SHARED / "glue"

# tests use tiny models: one thread is as fast and shares a busy machine far better
torch.set_num_threads(int(os.environ.get("XTC_NUM_THREADS", "1")))


def tiny_bert(num_labels=2, layers=4, **kw):
    """A tiny random BERT classifier (vocab of the local MiniLM tokenizer) for fast tests."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels, **kw)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def shared():
    if not MINILM.exists():
        pytest.skip(f"shared models not found at {SHARED}")
    return SHARED
