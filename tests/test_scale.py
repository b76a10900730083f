"The search dataset on Ray workers (lop.scale): the serial file, whatever the scheduling; a killed worker restarted and its target redone; no Ray for one worker."
import os, signal, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest.mock import patch
import numpy as np, psutil, pytest
from lop.cli import main
from lop.core import LOPError
from lop.dataset import generate_dataset, read_dataset
from lop.scale import RayWorkers, runner, available_cpus
from conftest import one_thread

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import this test module: send its rewards by value

BUDGET = dict(targets=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], simulations=40, evaluations=30, progress=False)

def strip(recs): return [{k: v for k, v in r.items() if k != "seconds"} for r in recs]

class Quadratic:
    "A reward factory (`make_reward`) for 8 layers; with `log`, each evaluation appends its process id there, and the first to reach `stall_at` evaluations stalls."
    def __init__(self, log=None, stall_at=None): self.log, self.stall_at = log, stall_at
    def __call__(self):
        s, log, stall_at = np.linspace(3, 0.5, 8), self.log, self.stall_at
        def reward(r):
            if log:
                with open(log, "a") as f: f.write(f"{os.getpid()}\n")
                if stall_at and len(Path(log).read_text().split()) >= stall_at:
                    try: f = open(f"{log}.stalled", "x")
                    except FileExistsError: pass
                    else:   # mid-search: wait for the test to kill this worker
                        with f: f.write(str(os.getpid()))
                        time.sleep(600)
                time.sleep(0.002)
            return 100 - 50 * float(s @ np.square(r)) / len(r)
        return reward

def gone(pid) -> bool:
    try: return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE   # killed, not yet reaped
    except psutil.NoSuchProcess: return True

@pytest.fixture
def no_ray_left():
    "Ray is shut down after the test, and none of its processes are left."
    yield
    ray.shutdown()
    deadline = time.time() + 60
    while (left := psutil.Process().children(recursive=True)) and time.time() < deadline: time.sleep(0.2)
    assert not left, f"processes left behind: {[p.name() for p in left]}"

@pytest.fixture
def ray_session(no_ray_left):
    "A local Ray of 2 CPUs opened by the test: generate_dataset uses it and leaves it open."
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield

@pytest.mark.slow   # Ray workers
def test_two_workers_write_the_serial_dataset(tmp_path, ray_session):
    for search, kw in (("mcts", {}), ("evo", dict(simulations=None))):
        budget = {k: v for k, v in dict(BUDGET, **kw).items() if v is not None}
        serial = generate_dataset(tmp_path/f"{search}-1.jsonl", None, 8, make_reward=Quadratic(), search=search, **budget)
        two = generate_dataset(tmp_path/f"{search}-2.jsonl", None, 8, runner=RayWorkers(Quadratic(), 2), search=search, **budget)
        assert strip(two) == strip(serial) and [r["target"] for r in two] == BUDGET["targets"]
        assert {r["search"] for r in two} == {search}
    assert ray.is_initialized()   # the caller's session: used, not closed

@pytest.mark.slow   # Ray workers
def test_a_killed_worker_is_restarted_and_its_target_redone(tmp_path, ray_session):
    ref = generate_dataset(tmp_path/"ref.jsonl", None, 8, make_reward=Quadratic(), **BUDGET)
    log, path = tmp_path/"evaluations", tmp_path/"ds.jsonl"
    stalled = Path(f"{log}.stalled")
    with ThreadPoolExecutor(1) as ex:
        run = ex.submit(generate_dataset, path, None, 8, runner=RayWorkers(Quadratic(str(log), stall_at=40), 2), **BUDGET)
        deadline = time.time() + 300
        while not (stalled.exists() and stalled.read_text().strip()):
            assert time.time() < deadline and not run.done(), "no worker reached the stall"
            time.sleep(0.05)
        pid = int(stalled.read_text())
        before = log.read_text().split()
        written = read_dataset(path)
        os.kill(pid, signal.SIGKILL)                  # a worker process, in the middle of a search
        recs = run.result(timeout=300)
    assert pid in map(int, before) and gone(pid)
    assert strip(recs) == strip(ref)                  # the uninterrupted dataset
    assert [r["target"] for r in read_dataset(path)] == BUDGET["targets"]   # each target once
    assert all(r in recs for r in written)            # what was written before the kill is kept as it was
    after = log.read_text().split()[len(before):]
    assert set(after) - set(before), "no new worker process after the kill"
    assert len(before) + len(after) > sum(r["evaluations"] for r in ref) + 1   # the killed search was redone (+1: the dense reward)

def test_one_worker_imports_no_ray(tmp_path):
    code = ("import sys, numpy as np\nfrom lop.dataset import generate_dataset\nfrom lop.scale import runner\nimport lop.cli, lop.reproduce\n"
            "s = np.linspace(3, 0.5, 6)\n"
            "recs = generate_dataset(sys.argv[1], None, 6, targets=[0.2, 0.3], simulations=10, evaluations=8, progress=False,\n"
            "                        runner=runner(lambda: lambda r: -float(s @ np.square(r)), workers=1))\n"
            "assert len(recs) == 2\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path/"d.jsonl")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

def test_many_workers_without_ray_name_the_install(tmp_path):
    with patch.dict(sys.modules, {"ray": None}):   # as where Ray is not installed
        with pytest.raises(LOPError, match="pip install ray"):
            generate_dataset(tmp_path/"d.jsonl", None, 8, runner=RayWorkers(Quadratic(), 2), **BUDGET)
    assert not (tmp_path/"d.jsonl").exists()

@pytest.mark.slow   # Ray workers
def test_the_cli_on_two_workers(tmp_path, no_ray_left):
    from lop.testbed import build_processor, build_model, save_testbed
    proc = build_processor(); save_testbed(build_model(proc, layers=2), proc, tmp_path/"model")
    m, s = str(tmp_path/"model"), str(tmp_path/"s.safetensors")
    assert main(["importance", "--model", m, "--out", s, "--n", "20"]) == 0
    args = lambda out, n: ["dataset", "--model", m, "--scores", s, "--out", str(tmp_path/out), "--n", "2", "--simulations", "6",
                           "--evaluations", "5", "--lo", "0.1", "--hi", "0.4", "--step", "0.1", "--workers", str(n)]
    threads = str(max(1, available_cpus() // 2))   # like for like: each of the two workers runs on its share of the cores
    one = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None\nfrom lop.cli import main\nsys.exit(main(sys.argv[1:]))",
                          *args("one.jsonl", 1)], capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS=threads))
    assert one.returncode == 0, one.stderr[-2000:]   # one worker: no Ray needed
    assert main(args("two.jsonl", 2)) == 0
    assert not ray.is_initialized()                  # the Ray the command started is stopped
    two = read_dataset(tmp_path/"two.jsonl")
    assert strip(two) == strip(read_dataset(tmp_path/"one.jsonl")) and [r["target"] for r in two] == [0.1, 0.2, 0.3, 0.4]
    assert main(args("two.jsonl", 0)) == 2           # refused

@pytest.mark.slow   # Ray workers
def test_no_cluster_at_the_address_is_an_lop_error(tmp_path, no_ray_left):
    if os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists():   # checked now, not at collection
        pytest.skip("a Ray cluster runs here")
    with pytest.raises(LOPError, match="no Ray cluster"):
        generate_dataset(tmp_path/"d.jsonl", None, 8, runner=RayWorkers(Quadratic(), 2, address="auto"), **BUDGET)

@pytest.mark.slow   # Ray workers
def test_the_reproductions_searches_on_two_workers(tmp_path, ray_session):
    "A notebook's context with workers=2 (`lop reproduce --workers 2`): both teachers' datasets and the held-out searches as serially."
    from lop.reproduce import Context
    one, two = Context("testbed", "smoke", 0, tmp_path/"one"), Context("testbed", "smoke", 0, tmp_path/"two", workers=2)
    variant = lambda c: c.search("variant.jsonl", [0.2, 0.5], metric="flap", val_units=4, normalize=True)   # as Table 1's
    for get in (lambda c: c.teacher_records("mcts"), lambda c: c.teacher_records("evo"), lambda c: c.heldout_records, variant):
        with one_thread():   # like for like: each worker of the 2-CPU session runs on one thread, and so do both drivers
            assert strip(get(two)) == strip(get(one))
    assert [r["target"] for r in two.heldout_records] == list(two.budget.heldout) and (tmp_path/"two"/"heldout.jsonl").is_file()
    with pytest.raises(LOPError, match="workers=0 is not a number of workers"): Context("testbed", "smoke", 0, tmp_path/"x", workers=0)
