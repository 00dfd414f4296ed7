import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("XTC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
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
