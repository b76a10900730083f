"""The search dataset serially and on Ray workers (lop.bench.bench_scale): `python -m bench.scale [--workers 2] [--mode quick]
[--grid 0.1 0.4 0.1] [--repeat 1] [--out results]`; writes OUT/scale_MODE.json."""
import argparse, json
from lop.bench import bench_scale

p = argparse.ArgumentParser(prog="python -m bench.scale", description="lop dataset on the testbed: serial ÷ N Ray workers, and Ray's start-up cost.")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--mode", default="quick", choices=["smoke", "quick", "full"], help="the reproduction mode whose search budgets to use")
p.add_argument("--grid", type=float, nargs=3, default=(0.1, 0.4, 0.1), metavar=("LO", "HI", "STEP"), help="the targets")
p.add_argument("--repeat", type=int, default=1, help="serial and parallel runs, alternately; medians")
p.add_argument("--out", default="results", help="folder of scale_MODE.json")
a = p.parse_args()
res = bench_scale(a.out, a.workers, tuple(a.grid), a.mode, a.repeat)
print(json.dumps({k: res[k] for k in ("workers", "cpus", "targets", "serial_s", "parallel_s", "speedup", "ideal", "same_dataset",
                                      "search_s_serial", "search_s_parallel", "ray_init_s", "ray_pool_s")}, indent=1))
print(f"→ {a.out}/scale_{a.mode}.json")
