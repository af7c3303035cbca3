"""One OpenMP runtime beside PyTorch, measured: for each import order, in a
fresh interpreter, the OpenMP libraries mapped and reported by threadpoolctl,
the process's thread count, and the time per iteration of

  torch   a training step of a small CNN with PyTorch's own batch norm,
  bnorm   bnorm's training forward and backward on a NumPy tensor,
  mixed   both in one loop (each iteration: the torch step, then the bnorm
          calls), against the sum of the two alone,
  control the same for the torch step and a NumPy loop in place of bnorm
          (one thread, no OpenMP, bytes of the same order): what sharing
          the caches and memory costs with no second thread team at all.

Two OpenMP runtimes in one process keep two teams of spinning threads on
the same cores: the mixed loop would then be slower than the sum (each
team's spinning steals the other's cores). With one runtime, the ratio
mixed / (torch + bnorm) stays near 1.

  python benchmarks/one_runtime.py [--threads 2] [--repeat 5]
"""
import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
first, threads, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
order = [first, "bnorm" if first == "torch" else "torch"]
for name in order:
    __import__(name)
import numpy as np, threadpoolctl, torch, bnorm
torch.set_num_threads(threads)
bnorm.set_num_threads(threads)
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
    torch.nn.Conv2d(32, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
xt = torch.randn(16, 3, 16, 16)
target = torch.randint(0, 10, (16,))
x = np.random.default_rng(0).standard_normal((32, 64, 28, 28), dtype=np.float32)
g, b = np.ones(64, np.float32), np.zeros(64, np.float32)

def torch_step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(xt), target).backward()
    opt.step()

def bnorm_step():
    y, mean, invstd = bnorm.batch_norm_train(x, g, b)
    bnorm.batch_norm_backward(y, x, mean, invstd, g)

out = np.empty_like(x)

def numpy_step():   # the control: memory traffic of bnorm's size, no threads
    for _ in range(4):
        np.multiply(x, 1.0001, out=out)

def mixed():
    torch_step()
    bnorm_step()

def mixed_numpy():
    torch_step()
    numpy_step()

def per_iter(f, n=20):
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n

best = {}
for _ in range(repeat):   # interleaved, so that machine load hits all three
    for name, f in (("torch", torch_step), ("bnorm", bnorm_step), ("mixed", mixed),
                    ("numpy", numpy_step), ("mixed_numpy", mixed_numpy)):
        best[name] = min(best.get(name, 1e9), per_iter(f))
maps = open("/proc/self/maps").read().splitlines()
gomp = sorted({l.split()[-1] for l in maps if "libgomp" in l.rsplit("/", 1)[-1]})
status = open("/proc/self/status").read()
nthreads = int(status.split("Threads:")[1].split()[0])
info = threadpoolctl.threadpool_info()
print(json.dumps({"order": order, "gomp": gomp, "threads": nthreads,
                  "openmp": [i["filepath"] for i in info if i["internal_api"] == "openmp"],
                  "counts": [bnorm.get_num_threads(), torch.get_num_threads()],
                  **best}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="write the figures there too")
    args = ap.parse_args(argv)
    rows = []
    for first in ("torch", "bnorm"):
        out = subprocess.run([sys.executable, "-c", CHILD, first, str(args.threads),
                              str(args.repeat)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'import order':<14} {'libgomp mapped':>14} {'threadpoolctl openmp':>21} "
          f"{'OS threads':>10} {'torch ms':>9} {'bnorm ms':>9} {'mixed ms':>9} "
          f"{'mixed/(sum)':>11} {'control':>8}")
    for r in rows:
        ratio = r["mixed"] / (r["torch"] + r["bnorm"])
        r["mixed_over_sum"] = ratio
        r["control_over_sum"] = control = r["mixed_numpy"] / (r["torch"] + r["numpy"])
        print(f"{' then '.join(r['order']):<14} {len(r['gomp']):>14} {len(r['openmp']):>21} "
              f"{r['threads']:>10} {r['torch'] * 1e3:>9.2f} {r['bnorm'] * 1e3:>9.2f} "
              f"{r['mixed'] * 1e3:>9.2f} {ratio:>11.2f} {control:>8.2f}")
    for r in rows:
        for path in r["gomp"]:
            print(f"  {' then '.join(r['order'])}: {path}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
