import json, os
from pathlib import Path
import pytest
from lop.core import LOPError
from lop.reproduce import reproduce, budget, NOTEBOOKS
from lop.testbed import build_processor, build_model, save_testbed

TABLES = ["testbed_dense", "testbed_uniform_curve", "testbed_layer_sensitivity", "testbed_criteria", "search_dataset",
          "time_breakdown", "table1", "table1_formatted", "table1_glance", "table3", "heldout_targets", "table2", "accuracy_vs_ratio",
          *(f"real_{t}_smollm2-135m" for t in ("table1", "significance", "heldout", "table3", "data")),
          "teachers_smollm2-135m", "reward_noise_smollm2-135m", "teachers_testbed", "reward_noise_testbed",
          *(f"recovery_{t}smollm2-135m" for t in ("", "significance_", "recipe_", "curves_")), "recovery_testbed",
          "chat_recovery_smollm2-135m", "chat_recovery_significance_smollm2-135m", "heads_smollm2-135m", "heads_significance_smollm2-135m", "heads_recovered_smollm2-135m", "heads_llama_cpp_smollm2-135m",
          "frontier_smollm2-135m", "frontier_vs_quantisation_smollm2-135m"]
FIGURES = ["testbed_pruning_curve", "fig4_mcts_progress", "fig1_overview", "fig2_importance", "ratio_profiles",
           "accuracy_vs_ratio", "time_breakdown", "real_ppl_vs_ratio_smollm2-135m", "real_ratio_profiles_smollm2-135m",
           "teacher_kl_smollm2-135m", "reward_noise_smollm2-135m", "recovery_smollm2-135m", "chat_recovery_smollm2-135m", "heads_smollm2-135m", "frontier_smollm2-135m"]

def test_every_notebook_runs_and_writes_its_artefacts(tmp_path, monkeypatch):
    proc = build_processor(); save_testbed(build_model(proc, layers=2), proc, tmp_path / "model")
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    out = reproduce("smoke", model=str(tmp_path / "model"), root=tmp_path, progress=False)
    assert "TQDM_MININTERVAL" not in os.environ   # set for the kernels only, not left in the caller's environment
    assert list(out) == list(NOTEBOOKS) and all(v.startswith("ran") for v in out.values())
    res, fig = tmp_path / "runs/smoke/results", tmp_path / "runs/smoke/figures"
    for t in TABLES: assert (res / f"{t}.csv").is_file() and (res / f"{t}.md").is_file(), t
    for f in FIGURES: assert (fig / f"{f}.png").is_file() and (fig / f"{f}.pdf").is_file(), f
    prov = json.loads((res / "provenance.json").read_text())
    assert all(prov[f"{t}.csv"]["mode"] == "smoke" for t in TABLES)
    assert all((res / "executed" / f"{n}.ipynb").is_file() for n in NOTEBOOKS)
    again = reproduce("smoke", model=str(tmp_path / "model"), root=tmp_path, progress=False, notebooks=["table3"])
    assert again == {"table3": "skipped"}

def test_bad_mode_and_notebook(tmp_path):
    with pytest.raises(LOPError, match="unknown mode"): budget("fast")
    with pytest.raises(LOPError, match="unknown experiment notebook"): reproduce("smoke", notebooks=["table9"], root=tmp_path)

@pytest.mark.slow   # two smoke reproductions in fresh processes
def test_killed_reproduction_resumes_without_redoing_finished_notebooks(tmp_path):
    import os, random, signal, subprocess, sys, time
    proc = build_processor(); save_testbed(build_model(proc, layers=2), proc, tmp_path / "model")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")   # like for like: the killed and the resumed run on one thread
    cmd = [str(Path(sys.executable).parent / "lop"), "reproduce", "--smoke", "--model", str(tmp_path / "model")]
    stamps = tmp_path / "runs/smoke/work/stamps.json"
    done = lambda: set(json.loads(stamps.read_text())) if stamps.is_file() else set()
    k = random.Random(0).randint(1, len(NOTEBOOKS) - 2)     # kill while the (k+1)-th notebook runs
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while p.poll() is None and len(done()) < k: time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL); p.wait()
    finished = done()                                     # the stamps file is never half-written
    assert len(finished) >= k
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "without encryption" not in r.stderr and "missing an id" not in r.stderr   # IPC kernels; notebooks that validate
    status = dict(line.split(": ", 1) for line in r.stdout.splitlines() if line.split(":")[0] in NOTEBOOKS)
    assert {n for n, s in status.items() if s == "skipped"} == finished and len(status) == len(NOTEBOOKS)
    res = tmp_path / "runs/smoke/results"
    for t in TABLES: assert (res / f"{t}.csv").is_file(), t
    assert all((res / "executed" / f"{n}.ipynb").is_file() for n in NOTEBOOKS)


def test_table2_is_for_testbed_models_only(tmp_path):
    "Table 2's small dense models are trained on SynthVQA: for a real model the notebook is skipped, and says why."
    out = reproduce("smoke", model=str(tmp_path / "a-real-model"), notebooks=["table2"], root=tmp_path, progress=False)
    assert out == {"table2": "skipped (testbed models only)"}
