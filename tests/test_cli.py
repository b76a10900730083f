import json
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from lop.cli import main
from lop.dataset import read_dataset
from lop.models import find_ffns
from lop.prune import load_pruned, Plan
from lop.testbed import build_processor, build_model, save_testbed

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "model"
    proc = build_processor(); save_testbed(build_model(proc, layers=3), proc, d)
    return d

def test_the_whole_pipeline_from_the_shell(model_dir, tmp_path, capsys):
    m, t = str(model_dir), tmp_path
    assert main(["importance", "--model", m, "--out", str(t / "s.safetensors"), "--n", "40"]) == 0
    assert main(["search", "--model", m, "--scores", str(t / "s.safetensors"), "--target", "0.3", "--out", str(t / "plan.json"),
                 "--n", "2", "--simulations", "6", "--evaluations", "5"]) == 0
    plan = Plan.load(t / "plan.json")
    assert abs(plan.mean_ratio - 0.3) < 0.02 and json.loads((t / "plan.trace.json").read_text())["evaluations"] <= 5
    assert main(["dataset", "--model", m, "--scores", str(t / "s.safetensors"), "--out", str(t / "d.jsonl"), "--n", "2",
                 "--simulations", "4", "--evaluations", "3", "--lo", "0.1", "--hi", "0.4", "--step", "0.1"]) == 0
    assert [r["target"] for r in read_dataset(t / "d.jsonl")] == [0.1, 0.2, 0.3, 0.4]
    assert main(["dataset", "--model", m, "--scores", str(t / "s.safetensors"), "--out", str(t / "evo.jsonl"), "--n", "2",
                 "--search", "evo", "--evaluations", "4", "--lo", "0.2", "--hi", "0.3", "--step", "0.1"]) == 0
    evo = read_dataset(t / "evo.jsonl")
    assert [r["search"] for r in evo] == ["evo", "evo"] and all(r["evaluations"] <= 4 for r in evo)
    assert main(["train", "--dataset", str(t / "d.jsonl"), "--out", str(t / "p.safetensors"), "--epochs", "3"]) == 0
    assert main(["prune", "--model", m, "--target", "0.25", "--predictor", str(t / "p.safetensors"),
                 "--scores", str(t / "s.safetensors"), "--out", str(t / "pruned")]) == 0
    dense = 3 * json.loads((model_dir / "config.json").read_text())["text_config"]["intermediate_size"]
    widths = [f.width for f in find_ffns(load_pruned(t / "pruned"))]
    assert abs(1 - sum(widths) / dense - 0.25) < 0.02
    assert main(["eval", "--model", str(t / "pruned"), "--n", "2", "--out", str(t / "e.json")]) == 0
    assert {"mme_p", "mme_r", "mmbench", "mmmu", "pope", "average"} <= set(json.loads((t / "e.json").read_text()))

def test_errors_are_reported_not_raised(model_dir, tmp_path, capsys):
    assert main(["prune", "--model", str(model_dir), "--target", "0.3", "--out", str(tmp_path / "x"),
                 "--predictor", str(tmp_path / "missing.safetensors"), "--scores", str(tmp_path / "missing2")]) == 2
    assert "no predictor file" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nowhere")]) == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.one_of(st.text(max_size=10), st.floats(allow_nan=True, allow_infinity=True).map(repr)),
       cmd=st.sampled_from(["prune", "search", "eval"]))
def test_fuzzed_ratios_are_refused_before_any_work(target, cmd, tmp_path, capsys):
    "Any --target either is a valid ratio or makes the command exit with status 2, naming it, before anything is written."
    try: ok = 0 <= float(target) < 1
    except ValueError: ok = False
    if ok: return   # valid ratios run the command: covered above
    out = tmp_path / "out"
    args = [cmd, "--model", "no-such-model", f"--target={target}", "--out", str(out)] + (["--scores", "s"] if cmd == "search" else [])
    assert main(args) == 2
    assert "is not a pruning ratio" in capsys.readouterr().err and not out.exists()
