import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import contextlib
import pytest, torch
from lop.toy import toy_model, toy_batch

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier (make test-all; CI runs it after make test): full notebook runs, "
                                       "kill-and-resume in fresh processes, Ray workers, real-model command lines")

@pytest.fixture
def calib():
    "Calibration batches (with images where the model has a vision tower) for a toy model."
    return lambda m, n=3: [toy_batch(m, (12, 9), seed=100 + s) for s in range(n)]

def logits(m, x):
    with torch.no_grad(): return m(**x).logits

@contextlib.contextmanager
def one_thread():
    "Torch on one CPU thread inside the block, the count restored after it: the like-for-like side of a comparison with a process run with OMP_NUM_THREADS=1."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try: yield
    finally: torch.set_num_threads(threads)
