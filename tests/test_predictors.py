import warnings, numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from lop.core import LOPError
from lop.mcts import project
from lop.predictors import (PREDICTORS, make_predictor, predict, project_batch, train_predictor, save_predictor,
                            load_predictor, LOPWarning, ARTransformer)

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(PREDICTORS)), seed=st.integers(0, 10_000), n_layers=st.integers(1, 30),
       bounds=st.tuples(st.floats(0, 0.3), st.floats(0.6, 0.99)), data=st.data())
def test_predictions_always_meet_the_constraint(kind, seed, n_layers, bounds, data):
    lo, hi = bounds
    torch.manual_seed(seed)
    net = make_predictor(kind, n_layers, lo, hi, **({"d": 16, "heads": 2} if "transformer" in kind else {"hidden": 16}))
    with torch.no_grad():                       # random weights, scaled up so outputs hit the bounds too
        for p in net.parameters(): p.mul_(data.draw(st.floats(0.5, 20)))
    targets = data.draw(st.lists(st.floats(lo, hi), min_size=1, max_size=20))
    y = predict(net, targets)
    assert y.shape == (len(targets), n_layers)
    assert np.abs(y.mean(1) - np.array(targets)).max() < 1e-6
    assert (y >= lo - 1e-12).all() and (y <= hi + 1e-12).all()

def test_cached_autoregressive_generation_equals_full_recompute():
    torch.manual_seed(0)
    net = ARTransformer(12).eval()
    t = torch.rand(5) * 0.6
    with torch.no_grad():
        fast = net.generate(t)
        slow = torch.zeros(5, 0)
        for l in range(12):                     # recompute the whole prefix at every step
            full = net(t, torch.cat([slow, torch.zeros(5, 12 - l)], 1))
            slow = torch.cat([slow, full[:, l:l + 1]], 1)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)

def synthetic_records(n_layers=6):
    s = np.linspace(2.0, 0.5, n_layers)
    return [dict(target=float(t), ratios=project(t / s / (1 / s).mean(), t, 0, 0.95).tolist(), lo=0.0, hi=0.95, model="m")
            for t in np.round(np.arange(0.05, 0.61, 0.025), 4)]

@pytest.mark.parametrize("kind", sorted(PREDICTORS))
def test_training_is_seeded_and_learns(kind):
    recs = synthetic_records()
    a, ha = train_predictor(kind, recs, epochs=40, progress=False)
    b, hb = train_predictor(kind, recs, epochs=40, progress=False)
    assert ha == hb and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha[-1]["val_mse"] < ha[0]["val_mse"]
    assert a.meta["val_targets"] and not set(a.meta["val_targets"]) & {r["target"] for r in recs if r["target"] not in a.meta["val_targets"]}

def test_save_load_and_refusals(tmp_path):
    net, _ = train_predictor("mlp", synthetic_records(), epochs=5, progress=False)
    p = save_predictor(net, tmp_path / "p.safetensors")
    assert np.array_equal(predict(load_predictor(p, n_layers=6), [0.3, 0.4]), predict(net, [0.3, 0.4]))
    with pytest.raises(LOPError, match="trained for a model with 6 layers"): load_predictor(p, n_layers=28)
    with pytest.raises(LOPError, match="no predictor file"): load_predictor(tmp_path / "none.safetensors")
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(LOPError, match="truncated or corrupt"): load_predictor(p)
    with pytest.raises(LOPError, match="outside this predictor's ratio bounds"): predict(net, [0.3, 0.99])
    with pytest.raises(LOPError, match="finite"): predict(net, [float("nan")])
    with pytest.warns(LOPWarning, match="extrapolated"): predict(net, 0.75)
    with pytest.raises(LOPError, match="unknown predictor kind"): make_predictor("gru", 6)
    with pytest.raises(LOPError, match="at least 2"): train_predictor("mlp", synthetic_records()[:1])

KILL_SCRIPT = """
import sys, numpy as np
from lop.mcts import project
from lop.predictors import train_predictor, save_predictor
s = np.linspace(2.0, 0.5, 6)
recs = [dict(target=float(t), ratios=project(t / s / (1 / s).mean(), t, 0, 0.95).tolist(), lo=0.0, hi=0.95)
        for t in np.round(np.arange(0.05, 0.61, 0.025), 4)]
net, _ = train_predictor("ar_transformer", recs, epochs=120, progress=False, checkpoint=sys.argv[1], checkpoint_every=1)
save_predictor(net, sys.argv[2])
"""

@pytest.mark.slow   # kill-and-resume in fresh processes
def test_killed_training_resumes_to_the_same_weights(tmp_path):
    import os, random, signal, subprocess, sys, time
    from safetensors.torch import load_file
    env = dict(os.environ, OMP_NUM_THREADS="1")   # like for like: the reference and every resumed run on one thread
    run = lambda ck, out: subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(ck), str(out)], env=env)
    assert run(tmp_path / "ref.pt", tmp_path / "ref.safetensors").wait(timeout=600) == 0
    ck, out, rng, killed = tmp_path / "run.pt", tmp_path / "run.safetensors", random.Random(0), 0
    stamp = lambda: ck.stat().st_mtime_ns if ck.exists() else 0
    for attempt in range(100):
        p, k = run(ck, out), rng.randint(1, 25)           # kill after a random number of checkpointed epochs
        seen, last = 0, stamp()
        while p.poll() is None and seen < k:
            time.sleep(0.005)
            if stamp() != last: seen, last = seen + 1, stamp()
        if p.poll() is not None:
            assert p.returncode == 0
            break
        p.send_signal(signal.SIGKILL); p.wait(); killed += 1
        torch.load(ck, weights_only=False)                  # the checkpoint is always readable
    else: pytest.fail("the run never finished")
    assert killed >= 2
    ref, got = load_file(tmp_path / "ref.safetensors"), load_file(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
