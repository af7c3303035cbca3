"""``python -m bnorm demo``: the paper's first experiment in miniature.

Ioffe & Szegedy (2015), section 4.1: a network with three fully connected
hidden layers of 100 sigmoid units, trained with and without batch norm
before each sigmoid, from the same initialization with the same learning
rate and mini-batches of 60. Here on scikit-learn's handwritten digits (8x8
images, shipped with the package) instead of MNIST. Batch norm is bnorm's
forward and backward; the rest is plain NumPy.

Shown, as in the paper's Figure 1: (a) test accuracy of both networks while
they train; (b, c) the 15th, 50th and 85th percentiles of the input to one
sigmoid of the last hidden layer, over the test set, without and with batch
norm. After training, the batch-norm network is turned into its inference
form with population statistics (Algorithm 2, steps 8-12) and tested.

Needs the demo extra: ``pip install "bnorm[demo]"`` (scikit-learn,
matplotlib, tqdm).
"""

from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional

import numpy as np

import bnorm

HIDDEN = (100, 100, 100)
BATCH = 60
EPS = 1e-5
DTYPE = np.float32


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def softmax_xent(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = labels.shape[0]
    loss = -np.log(p[np.arange(n), labels] + 1e-12).mean()
    p[np.arange(n), labels] -= 1
    return float(loss), p / n


class Net:
    """A sigmoid MLP; with ``bn=True`` each hidden layer is W u -> BN -> sigmoid
    (no bias before BN: beta takes its place)."""

    def __init__(self, sizes, weights, bn: bool):
        self.bn = bn
        self.W = [w.copy() for w in weights]
        self.b = [np.zeros(w.shape[1], DTYPE) for w in weights]
        self.layers = [bnorm.BatchNorm(n, dtype=DTYPE) for n in sizes[1:-1]] if bn else []

    def forward(self, x: np.ndarray, train: bool, stats: Optional[list] = None):
        """Logits, and what backward needs. ``stats`` replaces the running
        statistics at inference (population statistics, Algorithm 2)."""
        acts, pre = [x], []
        h = x
        for k in range(len(self.W) - 1):
            z = h @ self.W[k]
            if self.bn:
                layer = self.layers[k]
                if train:
                    layer.train()
                    z = layer(z)
                elif stats is not None:
                    z = bnorm.batch_norm(z, stats[k][0], stats[k][1], layer.weight,
                                         layer.bias, eps=EPS)
                else:
                    layer.eval()
                    z = layer(z)
            else:
                z = z + self.b[k]
            pre.append(z)
            h = sigmoid(z)
            acts.append(h)
        logits = h @ self.W[-1] + self.b[-1]
        return logits, acts, pre

    def step(self, x, labels, lr: float) -> float:
        logits, acts, _ = self.forward(x, train=True)
        loss, g = softmax_xent(logits, labels)
        grads_w = [None] * len(self.W)
        grads_b = [None] * len(self.W)
        grads_w[-1] = acts[-1].T @ g
        grads_b[-1] = g.sum(axis=0)
        g = g @ self.W[-1].T
        for k in range(len(self.W) - 2, -1, -1):
            h = acts[k + 1]
            g = g * h * (1 - h)                      # through the sigmoid
            if self.bn:
                g = self.layers[k].backward(g)       # through batch norm (bnorm)
            else:
                grads_b[k] = g.sum(axis=0)
            grads_w[k] = acts[k].T @ g
            g = g @ self.W[k].T
        for k in range(len(self.W)):
            self.W[k] -= lr * grads_w[k]
            if grads_b[k] is not None:
                self.b[k] -= lr * grads_b[k]
        for layer in self.layers:
            layer.weight -= lr * layer.grad_weight
            layer.bias -= lr * layer.grad_bias
        return loss

    def accuracy(self, x, labels, stats=None) -> float:
        logits, _, _ = self.forward(x, train=False, stats=stats)
        return float((logits.argmax(axis=1) == labels).mean())

    def sigmoid_input(self, x, unit: int, stats=None) -> np.ndarray:
        _, _, pre = self.forward(x, train=False, stats=stats)
        return pre[-1][:, unit]

    def population_statistics(self, x, batches: int, rng) -> list:
        """Algorithm 2, steps 8-12: E[mu_B] and m/(m-1) E[var_B] of each BN
        layer's input over mini-batches of the training network."""
        pops = [bnorm.PopulationStats(n) for n in HIDDEN]
        m = BATCH
        for _ in range(batches):
            idx = rng.choice(x.shape[0], m, replace=False)
            h = x[idx]
            for k in range(len(self.W) - 1):
                z = h @ self.W[k]
                layer = self.layers[k]
                pops[k].update(z)
                y, _, _ = bnorm.batch_norm_train(z, layer.weight, layer.bias, EPS)
                h = sigmoid(y)
        return [(p.mean.astype(DTYPE), p.var.astype(DTYPE)) for p in pops]


def load_digits(seed: int):
    from sklearn.datasets import load_digits as sk_load
    d = sk_load()
    x = (d.data / 16.0).astype(DTYPE)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def run(steps: int = 50000, seed: int = 0, out: Optional[str] = "bnorm-demo.png",
        lr: float = 0.1, checkpoints: int = 50, quiet: bool = False,
        progress: bool = True) -> Dict:
    """Trains both networks; returns the curves and final accuracies (and
    writes the figure to ``out`` unless it is None)."""
    xtr, ytr, xte, yte = load_digits(seed)
    rng = np.random.default_rng(seed)
    sizes = (xtr.shape[1],) + HIDDEN + (10,)
    # the paper: "initialized to small random Gaussian values"
    weights = [rng.normal(0.0, 1.0 / np.sqrt(a), (a, b)).astype(DTYPE)
               for a, b in zip(sizes[:-1], sizes[1:])]
    plain, with_bn = Net(sizes, weights, bn=False), Net(sizes, weights, bn=True)
    unit = 0  # the sigmoid whose input distribution is followed
    # evenly spaced checkpoints, and denser ones early, where the curves move
    at = set(np.linspace(0, steps, checkpoints + 1).astype(int).tolist())
    at |= set(np.geomspace(max(1, steps // 500), max(1, steps // 10), 10).astype(int).tolist())
    curve: Dict[str, List] = {"step": [], "plain": [], "bn": [],
                              "plain_pct": [], "bn_pct": []}

    def checkpoint(step):
        curve["step"].append(step)
        curve["plain"].append(plain.accuracy(xte, yte))
        curve["bn"].append(with_bn.accuracy(xte, yte))
        curve["plain_pct"].append(np.percentile(plain.sigmoid_input(xte, unit), [15, 50, 85]))
        curve["bn_pct"].append(np.percentile(with_bn.sigmoid_input(xte, unit), [15, 50, 85]))

    bar = None
    if progress and not quiet:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="training", unit="step", file=sys.stderr)
    start = time.perf_counter()
    checkpoint(0)
    order = np.arange(len(ytr))
    pos = len(order)
    for step in range(1, steps + 1):
        if pos + BATCH > len(order):
            rng.shuffle(order)
            pos = 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        plain.step(xtr[idx], ytr[idx], lr)
        with_bn.step(xtr[idx], ytr[idx], lr)
        if step in at:
            checkpoint(step)
            if bar is not None:
                bar.set_postfix(plain=f"{curve['plain'][-1]:.3f}", bn=f"{curve['bn'][-1]:.3f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    population = with_bn.population_statistics(xtr, batches=100, rng=rng)
    result = dict(curve=curve, seconds=seconds, steps=steps,
                  plain_final=curve["plain"][-1], bn_final_running=curve["bn"][-1],
                  bn_final_population=with_bn.accuracy(xte, yte, stats=population))
    if not quiet:
        print_table(result)
    if out:
        write_figure(result, out)
        if not quiet:
            print(f"\nfigure: {out}")
    return result


def print_table(r: Dict) -> None:
    c = r["curve"]
    print(f"\nbnorm demo: digits, 3 x 100 sigmoid units, batches of {BATCH}, "
          f"{r['steps']} steps in {r['seconds']:.1f} s")
    print("input to one last-layer sigmoid over the test set: 15th / 50th / 85th percentile\n")
    print(f"{'step':>7}  {'test acc':>8} {'test acc':>8}   {'without BN':>22}   {'with BN':>22}")
    print(f"{'':>7}  {'plain':>8} {'with BN':>8}   {'p15    p50    p85':>22}   {'p15    p50    p85':>22}")
    steps = np.array(c["step"])
    targets = r["steps"] * np.array([0, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.4, 0.6, 0.8, 1])
    pick = sorted({int(np.abs(steps - t).argmin()) for t in targets})
    for i in pick:
        pp, pb = c["plain_pct"][i], c["bn_pct"][i]
        print(f"{c['step'][i]:>7}  {c['plain'][i]:>8.3f} {c['bn'][i]:>8.3f}   "
              f"{pp[0]:>6.2f} {pp[1]:>6.2f} {pp[2]:>6.2f}     {pb[0]:>6.2f} {pb[1]:>6.2f} {pb[2]:>6.2f}")
    print(f"\nfinal test accuracy: plain {r['plain_final']:.3f}; with BN "
          f"{r['bn_final_running']:.3f} (running averages), "
          f"{r['bn_final_population']:.3f} (population statistics, Algorithm 2)")


def write_figure(r: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = r["curve"]
    steps = np.array(c["step"])
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].plot(steps, c["plain"], label="Without BN", color="tab:blue")
    ax[0].plot(steps, c["bn"], label="With BN", color="tab:red")
    ax[0].set_title("(a) test accuracy")
    ax[0].set_xlabel("training step")
    ax[0].legend(loc="lower right")
    ax[0].set_ylim(0, 1)
    for k, (key, title) in enumerate([("plain_pct", "(b) without BN"), ("bn_pct", "(c) with BN")]):
        p = np.array(c[key])
        a = ax[k + 1]
        a.fill_between(steps, p[:, 0], p[:, 2], alpha=0.25, color="k")
        for j in range(3):
            a.plot(steps, p[:, j], color="k", lw=1.2 if j == 1 else 0.8)
        a.set_title(f"{title}: sigmoid input, p15/p50/p85")
        a.set_xlabel("training step")
    lo = min(np.min(c["plain_pct"]), np.min(c["bn_pct"]))
    hi = max(np.max(c["plain_pct"]), np.max(c["bn_pct"]))
    for a in ax[1:]:
        a.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    fig.suptitle("bnorm demo: Ioffe & Szegedy (2015), Figure 1, on scikit-learn's digits")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
