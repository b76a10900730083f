import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest
from lop.dataset import generate_dataset, read_dataset, target_grid
from lop.mcts import mcts_search, project
from lop.core import LOPError

SCRIPT = """
import sys, time, numpy as np
from lop.dataset import generate_dataset
s = np.linspace(3, 0.5, 8)
def reward(r):
    with open(sys.argv[2], "ab") as f: f.write(b".")      # one byte per evaluation: the test watches progress
    time.sleep(0.005)
    return 100 - 50 * float(s @ np.square(r)) / len(r)
generate_dataset(sys.argv[1], reward, 8, targets=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], simulations=40, evaluations=30, progress=False)
"""

def strip(recs): return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")   # like for like: the reference and every resumed run on one thread
    counter = tmp_path / "evaluations"
    run = lambda path: subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), str(counter)], env=env)
    evals = lambda: counter.stat().st_size if counter.exists() else 0
    ref = tmp_path / "ref.jsonl"
    assert run(ref).wait(timeout=600) == 0
    killed, path, rng = 0, tmp_path / "ds.jsonl", random.Random(0)
    for attempt in range(60):
        start, k = evals(), rng.randint(10, 80)       # kill after a random number of evaluations: anywhere in a search
        p = run(path)
        while p.poll() is None and evals() - start < k: time.sleep(0.01)
        if p.poll() is not None:
            assert p.returncode == 0
            break
        p.send_signal(signal.SIGKILL); p.wait(); killed += 1
        read_dataset(path)                           # never a corrupt file, whatever the moment of the kill
    else: pytest.fail("the run never finished")
    assert killed >= 2
    assert strip(read_dataset(path)) == strip(read_dataset(ref))

def test_records_meet_the_constraint(tmp_path):
    s = np.linspace(2, 1, 5)
    recs = generate_dataset(tmp_path / "d.jsonl", lambda r: -float(s @ np.square(r)), 5, targets=[0.25, 0.5],
                            simulations=20, evaluations=15, progress=False, model_fingerprint="abc")
    for r in recs:
        assert abs(np.mean(r["ratios"]) - r["target"]) < 1e-9 and r["model"] == "abc" and r["evaluations"] <= 15
        assert r["reward"] >= -float(s @ np.square([r["target"]] * 5))   # never worse than the uniform start

def test_empty_and_corrupt_files(tmp_path):
    p = tmp_path / "d.jsonl"; p.write_text("")
    assert read_dataset(p) == []
    p.write_text('{"target": 0.1}\n')
    with pytest.raises(LOPError, match="not a dataset record"): read_dataset(p)
    p.write_text('{"target": 0.1, "ratios": [0.1], "reward": 1}\n{"targ')
    with pytest.raises(LOPError, match="line 2"): read_dataset(p)

def test_search_budgets_and_cache():
    calls = []
    def reward(r): calls.append(tuple(r)); return -float(np.sum(np.square(r)))
    res = mcts_search(reward, 4, 0.3, simulations=100, evaluations=25, seed=1, progress=False)
    assert res.evaluations == len(calls) == len(set(calls)) <= 25
    assert [t["simulation"] for t in res.trace] == list(range(1, res.simulations + 1))
    assert all(t["delta"] <= 0.1 + 1e-12 for t in res.trace)

@pytest.mark.parametrize("bad", [dict(target=0.99), dict(target=-0.1)])
def test_projection_refuses_unreachable_targets(bad):
    with pytest.raises(LOPError, match="target"): project([0.1, 0.2], hi=0.95, **bad)
