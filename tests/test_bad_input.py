"Names that do not exist — tasks, splits, metrics, candidate answers — are refused with an LOPError saying what exists."
import pytest
from lop.core import LOPError
from lop.evaluate import Evaluator
from lop.synthvqa import make_split
from lop.testbed import build_processor, build_model

@pytest.mark.parametrize("call, msg", [
    (lambda: make_split("test", 2, tasks=["mme"]), r"unknown SynthVQA task\(s\) \['mme'\]"),
    (lambda: make_split("dev", 2), "unknown split 'dev'"),
])
def test_unknown_names(call, msg):
    with pytest.raises(LOPError, match=msg) as e: call()
    assert "fix:" in str(e.value)

def test_evaluator_refuses_empty_splits_and_unknown_answers():
    proc = build_processor(); m = build_model(proc, layers=1)
    with pytest.raises(LOPError, match="no items"): Evaluator(m, proc, [])
    item = dict(make_split("val", 1, tasks=["pope"])[0], candidates=["yes", "perhaps"])
    with pytest.raises(LOPError, match=r"\[.perhaps.\] are not in the tokenizer.s vocabulary"): Evaluator(m, proc, [item], progress=False)
