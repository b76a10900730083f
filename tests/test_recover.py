"Recovery from the command line (lop.recover, lop recover, lop prune --recover): same widths, same format, the record in the manifest, bad input refused."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from lop.cli import main
from lop.models import find_ffns
from lop.prune import load_pruned, save_pruned
from conftest import one_thread

SMALL = ["--windows", "8", "--batch-size", "4", "--lr", "1e-4"]   # two batches of SynthVQA calibration items

@pytest.fixture(scope="module")
def pruned_hf(tmp_path_factory):
    "The testbed pruned to 30 % by its shipped predictor and recovered for 3 steps, written as a folder for plain transformers."
    d = tmp_path_factory.mktemp("rec")
    assert main(["prune", "--model", "testbed", "--target", "0.3", "--format", "hf", "--recover", "3", *SMALL, "--out", str(d/"p30")]) == 0
    return d/"p30"

def test_prune_then_recover_keeps_widths_format_and_record(pruned_hf, tmp_path):
    man = json.loads((pruned_hf/"lop.json").read_text())
    assert man["format"] == "lop-hf" and man["source"] == "testbed"
    rec = man["recovery"]
    assert rec["steps"] == 3 and len(rec["history"]) == 3 and rec["tokens"] > 0 and rec["teacher"] == "testbed"
    assert rec["data"] == dict(corpus="synthvqa", split="calibration", items=8) and rec["recipe"]["lr"] == 1e-4
    assert not any(p.name.endswith(".recover.pt") for p in pruned_hf.parent.iterdir())   # the checkpoint goes once the run is saved
    plain = subprocess.run([sys.executable, "-c", "import sys, transformers\n"
                            "m = transformers.AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
                            "assert 'lop' not in sys.modules\nprint([l.mlp.down_proj.in_features for l in m.model.language_model.layers])",
                            str(pruned_hf)], capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == man["ffn_widths"]   # the recovered folder loads without lop

def test_recover_a_checkpoint_again(pruned_hf, tmp_path):
    "`lop recover DIR` finds the dense teacher in the manifest, keeps the widths and the format, and changes the weights."
    assert main(["recover", str(pruned_hf), "--steps", "2", *SMALL, "--out", str(tmp_path/"again")]) == 0
    a, b = load_pruned(pruned_hf), load_pruned(tmp_path/"again")
    assert [f.width for f in find_ffns(a)] == [f.width for f in find_ffns(b)]
    assert json.loads((tmp_path/"again"/"lop.json").read_text())["format"] == "lop-hf"
    assert b.lop_recovery["steps"] == 2 and b.lop_source == "testbed"
    assert not torch.equal(find_ffns(a)[0].down.weight, find_ffns(b)[0].down.weight)

def test_recover_with_lora_adapters(pruned_hf, tmp_path):
    "`--lora-rank` trains adapters and merges them back: the same tensors as before (no adapter left), other values, the recipe recorded."
    assert main(["recover", str(pruned_hf), "--steps", "2", *SMALL[:-2], "--lr", "1e-3", "--lora-rank", "4", "--out", str(tmp_path/"lora")]) == 0
    a, b = load_pruned(pruned_hf), load_pruned(tmp_path/"lora")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
    assert b.lop_recovery["recipe"]["lora_rank"] == 4 and b.lop_recovery["recipe"]["lr"] == 1e-3
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)

def test_bad_input(pruned_hf, tmp_path, capsys):
    from lop.toy import toy_model
    assert main(["recover", str(pruned_hf), "--steps", "0", "--out", str(tmp_path/"x")]) == 2
    assert "steps=0 must be an integer" in capsys.readouterr().err and not (tmp_path/"x").exists()
    bare = tmp_path/"bare"; m = load_pruned(pruned_hf); del m.lop_source; del m.lop_recovery
    save_pruned(m, bare)
    assert main(["recover", str(bare), "--steps", "1", "--out", str(tmp_path/"x")]) == 2
    assert "does not name the dense model" in capsys.readouterr().err
    other = tmp_path/"llama"; save_pruned(toy_model("llama"), other)
    assert main(["recover", str(pruned_hf), "--steps", "1", "--teacher", str(other), *SMALL, "--out", str(tmp_path/"x")]) == 2
    assert "the teacher is a LlamaForCausalLM" in capsys.readouterr().err and not (tmp_path/"x").exists()
    assert main(["recover", str(tmp_path), "--steps", "1", "--out", str(tmp_path/"x")]) == 2
    assert "not a pruned checkpoint" in capsys.readouterr().err

@pytest.mark.slow   # the real model end to end through the command line
def test_recover_smollm2_from_the_command_line(tmp_path):
    "A real pretrained model: SmolLM2 pruned to 30 %, then `lop recover` for one step on its calibration windows of pydoc."
    assert main(["prune", "--model", "smollm2-135m", "--target", "0.3", "--out", str(tmp_path/"s30")]) == 0
    assert json.loads((tmp_path/"s30"/"lop.json").read_text())["source"] == "smollm2-135m"
    assert main(["recover", str(tmp_path/"s30"), "--steps", "1", "--windows", "4", "--out", str(tmp_path/"s30r")]) == 0
    rec = json.loads((tmp_path/"s30r"/"lop.json").read_text())["recovery"]
    assert rec["data"]["corpus"] == "pydoc" and rec["data"]["split"] == "calibration" and rec["tokens"] == 4 * 256
    assert [f.width for f in find_ffns(load_pruned(tmp_path/"s30"))] == [f.width for f in find_ffns(load_pruned(tmp_path/"s30r"))]
