import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import pytest, torch
from lop.toy import toy_model, toy_batch

@pytest.fixture
def calib():
    "Calibration batches (with images where the model has a vision tower) for a toy model."
    return lambda m, n=3: [toy_batch(m, (12, 9), seed=100 + s) for s in range(n)]

def logits(m, x):
    with torch.no_grad(): return m(**x).logits
