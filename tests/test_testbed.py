"The shipped testbed: it loads offline, reproduces its committed dense numbers, and lmms-eval agrees with `Evaluator`."
import json
from pathlib import Path
import pandas as pd, pytest
from lop.evaluate import Evaluator
from lop.reproduce import budget
from lop.synthvqa import TASKS, make_split
from lop.testbed import load_testbed

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def testbed(): return load_testbed()

def test_shipped_testbed_reproduces_the_committed_dense_numbers(testbed):
    prov = json.loads((ROOT / "results" / "provenance.json").read_text())["testbed_dense.csv"]
    committed = pd.read_csv(ROOT / "results" / "testbed_dense.csv").iloc[0]
    items = make_split("test", budget(prov["mode"]).test_units, seed=prov["seed"])
    assert prov["evaluated_on"] == f"SynthVQA test split, {len(items)} items (seed {prov['seed']})"
    res = Evaluator(*testbed, items, progress=False).evaluate()
    for k in (*TASKS, "average"): assert res[k] == committed[k], k

def test_lmms_eval_agrees_with_the_evaluator(testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from lop.lmms import LOPModel, write_lmms_tasks
    items = make_split("test", 8)
    write_lmms_tasks(tmp_path / "tasks", items=items)
    res = simple_evaluate(model=LOPModel(pretrained="testbed", device="cpu"), tasks=["lop_synthvqa"], bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False), verbosity="ERROR")
    ours = Evaluator(*testbed, items, progress=False).evaluate()
    for t in TASKS:
        assert abs(res["results"][f"lop_synthvqa_{t}"]["lop_score,none"] - ours[t]) <= 0.5, (t, res["results"], ours)

def test_lmms_evaluator_scores_dense_like_the_evaluator_and_masked_like_sliced(testbed, tmp_path, monkeypatch):
    """The scorer the notebooks use for real benchmarks, run on the local SynthVQA tasks: dense, it agrees with `Evaluator`;
    masked by a plan, it scores exactly like lmms-eval on a sliced copy (free generation may leave the candidates once
    pruned, which `Evaluator`'s candidate scoring never does, so that is the comparison that holds)."""
    import copy
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lop.lmms import LMMSEvaluator, SYNTHVQA_LMMS, write_lmms_tasks
    from lop.importance import importance_from_stats
    from lop.prune import make_plan, slice_ffn
    items = make_split("test", 6)
    write_lmms_tasks(tmp_path / "tasks", items=items)
    scorer = lambda model: LMMSEvaluator(model, testbed[1], SYNTHVQA_LMMS, include_path=tmp_path / "tasks", max_new_tokens=1)
    lev, plan = scorer(testbed[0]), make_plan(importance_from_stats(testbed[0], None, "magnitude"), 0.6)
    dense, ours = lev.evaluate(), Evaluator(*testbed, items, progress=False).evaluate()
    for t in TASKS: assert abs(dense[t] - ours[t]) <= 0.5, (t, dense[t], ours[t])
    masked_res, sliced = lev.evaluate(plan), scorer(slice_ffn(copy.deepcopy(testbed[0]), plan)).evaluate()
    assert {t: masked_res[t] for t in TASKS} == {t: sliced[t] for t in TASKS}
    assert any(masked_res[t] != dense[t] for t in TASKS)          # the plan is in effect ...
    assert {t: lev.evaluate()[t] for t in TASKS} == {t: dense[t] for t in TASKS}   # ... and undone afterwards
