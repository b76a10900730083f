"lop fit: the user's model and text in one resumable command, then lop prune --fit; a fit for another model refused."
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

def _text(path:Path):
    from pydoc_data.topics import topics
    path.write_text("\n\n".join(list(topics.values())[:40])); return path

def test_fit_then_prune_from_the_command_line(tmp_path, capsys):
    from lop.cli import main
    data = _text(tmp_path/"mine.txt")
    assert main(["fit", "--model", "smollm2-135m", "--data", str(data), "--budget", "smoke", "--out", str(tmp_path/"fit")]) == 0
    out = capsys.readouterr().out
    assert "searches: 3 targets" in out and "held-out targets" in out
    rec = json.loads((tmp_path/"fit"/"fit.json").read_text())
    assert rec["n_layers"] == 30 and rec["data_record"]["files"]["mine.txt"] and set(rec["stages"]) == {"importance", "dataset", "heldout", "predictor"}
    assert main(["prune", "--model", "smollm2-135m", "--fit", str(tmp_path/"fit"), "--target", "0.3", "--out", str(tmp_path/"p")]) == 0
    assert (tmp_path/"p"/"lop.json").is_file()
    assert main(["prune", "--model", str(tmp_path/"p"), "--fit", str(tmp_path/"fit"), "--target", "0.3", "--out", str(tmp_path/"q")]) == 2
    assert "was fitted for another model" in capsys.readouterr().err and not (tmp_path/"q").exists()
    assert main(["fit", "--model", "smollm2-135m", "--data", str(tmp_path/"nothing"), "--budget", "smoke", "--out", str(tmp_path/"f2")]) == 2
    assert "no data at that path" in capsys.readouterr().err

@pytest.mark.slow   # a fit killed in each stage, in a fresh process, then run again: the same predictor, nothing finished redone
def test_a_killed_fit_resumes(tmp_path):
    data, lop = _text(tmp_path/"mine.txt"), Path(sys.executable).with_name("lop")
    cmd = [str(lop), "fit", "--model", "smollm2-135m", "--data", str(data), "--budget", "smoke", "--out", str(tmp_path/"fit")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = tmp_path/"ref"; subprocess.run([*cmd[:-1], str(full)], check=True, capture_output=True, env=env, timeout=600)
    for stop in ("importance_l2.safetensors", "dataset.jsonl", "heldout.jsonl"):   # killed as each stage starts writing
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and not (tmp_path/"fit"/stop).exists(): time.sleep(0.05)
        p.kill(); p.wait()
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
    a, b = (json.loads((d/"fit.json").read_text()) for d in (tmp_path/"fit", full))
    assert a["heldout_error"] == b["heldout_error"]
    from lop.dataset import read_dataset
    for name in ("dataset.jsonl", "heldout.jsonl"):
        assert [(r["target"], r["ratios"]) for r in read_dataset(tmp_path/"fit"/name)] == [(r["target"], r["ratios"]) for r in read_dataset(full/name)]

@pytest.mark.slow   # Ray: the searches of a fit on two workers, each with its own copy of the model and the data
def test_a_fit_on_two_workers_writes_the_serial_fit(tmp_path):
    from lop.fit import fit
    data = _text(tmp_path/"mine.txt")
    import torch
    from lop.scale import available_cpus
    before = torch.get_num_threads(); torch.set_num_threads(max(1, available_cpus() // 2))   # like for like: each worker's threads
    try: one = fit("smollm2-135m", str(data), tmp_path/"one", "smoke", progress=False, log=lambda s: None)
    finally: torch.set_num_threads(before)
    two = fit("smollm2-135m", str(data), tmp_path/"two", "smoke", workers=2, progress=False, log=lambda s: None)
    from lop.dataset import read_dataset
    for name in ("dataset.jsonl", "heldout.jsonl"):
        a, b = (sorted((r["target"], r["ratios"], r["reward"]) for r in read_dataset(d/name)) for d in (tmp_path/"one", tmp_path/"two"))
        assert a == b and len(a) > 0
    assert one["heldout_error"]["targets"] == two["heldout_error"]["targets"]   # the predictor trained on the same data, on other thread counts:
    assert two["heldout_error"]["mae"] == pytest.approx(one["heldout_error"]["mae"], rel=1e-4)   # the same up to rounding
