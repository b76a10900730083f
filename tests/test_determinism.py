"Same seed, same machine → identical importance scores, search trace, dataset, predictor weights and tables (two fresh processes)."
import json, os, subprocess, sys
from pathlib import Path

PIPELINE = """
import json, sys
from pathlib import Path
import pandas as pd
from lop.core import seed_everything
from lop.testbed import build_processor, build_model
from lop.synthvqa import make_split, calibration_items
from lop.evaluate import Evaluator, encode_items, ratio_reward
from lop.importance import collect_importance, save_importance
from lop.mcts import mcts_search
from lop.dataset import generate_dataset
from lop.predictors import train_predictor, save_predictor
from lop.report import write_table
out = Path(sys.argv[1]); seed_everything(0)
proc = build_processor(); m = build_model(proc, layers=3, seed=0)
imp = collect_importance(m, encode_items(proc, calibration_items(40)), progress=False)
save_importance(imp, out / "scores.safetensors")
ev = Evaluator(m, proc, make_split("val", 2), progress=False)
res = mcts_search(ratio_reward(ev, imp), 3, 0.3, simulations=8, evaluations=6, progress=False)
(out / "trace.json").write_text(json.dumps([{k: v for k, v in t.items() if k != "seconds"} for t in res.trace]))
recs = generate_dataset(out / "dataset.jsonl", ratio_reward(ev, imp), 3, targets=[0.1, 0.2, 0.3, 0.4, 0.5], simulations=6,
                        evaluations=4, progress=False)
(out / "records.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in recs]))
net, _ = train_predictor("ar_transformer", recs, epochs=10, progress=False)
save_predictor(net, out / "predictor.safetensors")
write_table(pd.DataFrame([ev.evaluate()]).drop(columns=["seconds", "details", "predictions"], errors="ignore"), "table", out)
"""

def test_the_small_pipeline_is_byte_for_byte_deterministic(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")   # like for like: both processes on one thread
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        r = subprocess.run([sys.executable, "-c", PIPELINE, str(tmp_path / run)], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    for name in ("scores.safetensors", "trace.json", "records.json", "predictor.safetensors", "table.csv"):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b and len(a) > 0, name
