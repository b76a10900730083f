"""The GPU path: importance, masking, slicing and evaluation on CUDA, checked against the CPU. Skipped without a GPU."""
import copy, warnings
import pytest, torch
from lop.evaluate import Evaluator, encode_items
from lop.importance import collect_importance
from lop.models import find_ffns
from lop.prune import make_plan, masked, slice_ffn
from lop.synthvqa import calibration_items, make_split
from lop.testbed import load_testbed
from lop.toy import toy_batch, toy_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")

@pytest.fixture(scope="module")
def testbed_pair():
    m, proc = load_testbed()
    return m, copy.deepcopy(m).to(CUDA), proc

def test_importance_on_the_gpu_matches_the_cpu_and_stays_there(testbed_pair):
    cpu, gpu, proc = testbed_pair
    calib = encode_items(proc, calibration_items(64))
    a, b = collect_importance(cpu, calib, "flap", progress=False), collect_importance(gpu, calib, "flap", progress=False)
    assert all(s.device.type == CUDA.type for s in b.scores + b.mean)   # accumulated on the device
    assert a.meta["tokens"] == b.meta["tokens"] and a.meta["calibration"] == b.meta["calibration"]
    for x, y in zip(a.scores + a.mean, b.scores + b.mean):
        torch.testing.assert_close(y.cpu(), x, rtol=2e-3, atol=1e-5)

def _syncs(fn) -> int:
    "How many synchronizing CUDA calls `fn()` makes (torch's sync debug mode)."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try: fn()
        finally: torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(x.message) for x in w)

@torch.no_grad()
def test_importance_hooks_add_no_host_round_trip():
    m = toy_model("qwen2", layers=8, hidden=64, ffn=256).to(CUDA)
    batches = [{k: v.to(CUDA) for k, v in toy_batch(m, (12, 9), image=False, seed=s).items()} for s in range(4)]
    def plain():
        for b in batches: m(**b)
    per_plain = _syncs(plain) / len(batches)
    # per batch: the difference between 4 and 2 batches removes the fixed end-of-run costs (the model fingerprint)
    per_hooked = (_syncs(lambda: collect_importance(m, batches, "flap", progress=False))
                  - _syncs(lambda: collect_importance(m, batches[:2], "flap", progress=False))) / 2
    # +3: the digest (ids, mask) and token count of a batch that is already on the device (calibration batches normally
    # come from the host); a boolean index in the hooks would add one per layer (8)
    assert per_hooked <= per_plain + 3, (per_hooked, per_plain)

@torch.no_grad()
def test_masked_equals_sliced_on_the_gpu_and_slicing_is_in_place(testbed_pair):
    _, gpu, proc = testbed_pair
    m = copy.deepcopy(gpu)
    x = {k: v.to(CUDA) if torch.is_tensor(v) else v for k, v in encode_items(proc, make_split("val", 2))[0].items()}
    plan = make_plan([torch.rand(f.width, generator=torch.Generator().manual_seed(i)) for i, f in enumerate(find_ffns(m))], 0.4)
    with masked(m, plan): want = m(**x).logits
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
    slice_ffn(m, plan)
    peak = torch.cuda.max_memory_allocated() - before
    assert all(p.device.type == CUDA.type for p in m.parameters())
    largest_ffn = max(3 * f.hidden * f.width * 4 for f in find_ffns(gpu))
    assert peak <= largest_ffn, (peak, largest_ffn)   # at most one layer's new weights beside the model, never a copy of it
    torch.testing.assert_close(m(**x).logits, want, rtol=1e-4, atol=1e-4)

def test_evaluation_on_the_gpu_matches_the_cpu(testbed_pair):
    cpu, gpu, proc = testbed_pair
    items = make_split("val", 16)
    plan = make_plan([torch.arange(f.width, 0, -1.) for f in find_ffns(cpu)], 0.3)
    for p in (None, plan):
        a = Evaluator(cpu, proc, items, progress=False).evaluate(p)
        b = Evaluator(gpu, proc, items, progress=False).evaluate(p)
        assert abs(a["average"] - b["average"]) <= 1.0, (a, b)
