"The user's own data: a text file, a folder, a JSONL (text or chat), a datasets folder; split by document with the fixed seed; bad data refused."
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from lop.core import LOPError
from lop.text import load_corpus, text_data, data_corpus, SPLIT_SEED

PROSE = "\n\n".join(f"Chapter {i}. It was a bright cold day in April, and the clocks were striking thirteen; number {i} went home." * 6 for i in range(40))

def test_every_kind_of_data_is_read_and_recorded(tmp_path):
    import datasets
    from lop.load import load_model
    (tmp_path/"a.txt").write_text(PROSE)
    (tmp_path/"f").mkdir(); [(tmp_path/"f"/f"{i}.txt").write_text(PROSE[i * 500:(i + 1) * 4000]) for i in range(5)]
    (tmp_path/"t.jsonl").write_text("\n".join(json.dumps(dict(text=PROSE[i * 300:(i + 1) * 3000])) for i in range(6)))
    datasets.Dataset.from_dict(dict(text=[PROSE[i * 300:(i + 1) * 3000] for i in range(6)])).save_to_disk(str(tmp_path/"ds"))
    _, tok = load_model("smollm2-135m", device="cpu")       # a chat model: its template renders 'messages'
    chats = [dict(messages=[dict(role="user", content=f"Question {i}? " * 30), dict(role="assistant", content=PROSE[:600])]) for i in range(6)]
    (tmp_path/"c.jsonl").write_text("\n".join(json.dumps(c) for c in chats))
    for name, n in (("a.txt", 12), ("f", 5), ("t.jsonl", 6), ("ds", 6), ("c.jsonl", 6)):
        c = load_corpus(str(tmp_path/name), tok)
        assert len(c.docs) == n and c.files and all(len(v) == 64 for v in c.files.values()), name
    assert "<|im_start|>user" in load_corpus(str(tmp_path/"c.jsonl"), tok).docs[0][1]
    td = text_data(tok, str(tmp_path/"a.txt"), SPLIT_SEED, seq_len=64, calibration=2, validation=1, test=1, last_word=0)
    assert td.meta["files"] == {"a.txt": data_corpus(tmp_path/"a.txt").files["a.txt"]} and td.calibration[0]["input_ids"].shape == (2, 64)
    again = text_data(tok, str(tmp_path/"a.txt"), SPLIT_SEED, seq_len=64, calibration=2, validation=1, test=1, last_word=0)
    assert torch.equal(again.test, td.test)                     # the split is the data's own, whatever else runs
    with pytest.raises(LOPError, match="windows of 64, 400 requested"):
        text_data(tok, str(tmp_path/"a.txt"), SPLIT_SEED, seq_len=64, calibration=400, last_word=0)

def test_bad_data_is_refused_from_the_command_line(tmp_path, capsys):
    from lop.cli import main
    (tmp_path/"two.txt").write_text("one\n\ntwo")
    assert main(["importance", "--model", "smollm2-135m", "--data", str(tmp_path/"two.txt"), "--out", str(tmp_path/"i.safetensors")]) == 2
    assert "gives 2 documents: a corpus needs at least 3" in capsys.readouterr().err and not (tmp_path/"i.safetensors").exists()
    assert main(["importance", "--model", "smollm2-135m", "--data", str(tmp_path/"none.txt"), "--out", str(tmp_path/"i.safetensors")]) == 2
    assert "no data at that path" in capsys.readouterr().err

def test_importance_on_the_user_s_text(tmp_path, capsys):
    from lop.cli import main
    from lop.importance import load_importance
    (tmp_path/"mine.txt").write_text(PROSE)
    assert main(["importance", "--model", "smollm2-135m", "--data", str(tmp_path/"mine.txt"), "--n", "2", "--out", str(tmp_path/"i.safetensors")]) == 0
    imp = load_importance(tmp_path/"i.safetensors")
    assert len(imp) == 30 and all(bool((s > 0).all()) for s in imp.scores)
