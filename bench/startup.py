#!/usr/bin/env python3
"""bench/startup.py [--rnnc PATH] [--reps N] [--graph G] [--ckpt C]: how long rnnc
takes to start, with and without the kernel cache.

Runs, REPS times each and alternately:
  cold predict   `rnnc predict G C Nakamura` with an empty cache directory
                 (it compiles the forward kernel and stores it)
  warm predict   the same again with that directory (it loads the kernel)
  cold compile   `rnnc train G --epochs 0 --test-fraction 0 --no-cache`:
                 the compile of the kernels training starts with, read
                 from train's "compiled ... in X ms (stages)" line (wall
                 clock of model_compile; the stages are CPU time, summed
                 over those kernels, which compile in parallel; an rnnc
                 that compiles the inference kernels in the background
                 counts only their code generation here, one from before
                 counts all of their compile); the data set is loaded,
                 nothing trains
and prints a markdown table: median and range of the wall clock and of the
CPU time (user + system) of each process. On a machine shared with other
work the wall clock also counts waiting for a core: compare CPU times, and
wall clocks only when CPU / wall is near 1. Defaults: build/rnnc,
graphs/gru.nn, tests/golden/gru_seed42.safetensors, 10 reps. Every cache
directory is a fresh temporary one ($RNNC_CACHE_DIR), removed at the end.
An rnnc from before the kernel cache (no --no-cache in `rnnc train --help`)
is measured as well, for a comparison: each of its predicts is cold, so the
warm row is left out, and its stage times are wall clock.
Standard library only.
"""
import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("front end", "passes", "codegen", "LLVM", "machine code", "cache", "link")


def run(argv, env):
    """Wall and CPU seconds of one process, and its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"bench/startup: {' '.join(argv)}: exit {p.returncode}\n{p.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stderr


def compile_line(stderr):
    m = re.search(r"compiled \S+ in (\d+) ms \(([^)]*)\)", stderr)
    if not m:
        sys.exit(f"bench/startup: no compile line in:\n{stderr}")
    stages = dict(re.findall(r"([a-zA-Z ]+?) ([\d.]+)(?:, |$)", m.group(2)))
    return float(m.group(1)), {k: float(stages.get(k, "nan")) for k in STAGES}


def fmt(xs, scale=1e3):
    xs = [x * scale for x in xs]
    med = statistics.median(xs)
    return f"{med:.1f} ({min(xs):.1f}–{max(xs):.1f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rnnc", default=os.path.join(ROOT, "build", "rnnc"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--graph", default="graphs/gru.nn")
    ap.add_argument("--ckpt", default="tests/golden/gru_seed42.safetensors")
    a = ap.parse_args()
    if not os.access(a.rnnc, os.X_OK):
        sys.exit(f"bench/startup: no rnnc at {a.rnnc} (build it, or --rnnc PATH)")
    cached = "--no-cache" in subprocess.run([a.rnnc, "train", "--help"], capture_output=True,
                                             text=True).stdout
    tmp = tempfile.mkdtemp(prefix="rnnc-startup-")
    env = dict(os.environ)
    env.pop("RNNC_NO_CACHE", None)
    cold, warm, comp = ([], []), ([], []), ([], [])
    stages = {k: [] for k in STAGES}
    internal = []
    try:
        predict = [a.rnnc, "predict", a.graph, a.ckpt, "Nakamura"]
        train = [a.rnnc, "train", a.graph, "--epochs", "0", "--test-fraction", "0",
                 "--out", os.path.join(tmp, "unused.safetensors")] + (["--no-cache"] if cached else [])
        for i in range(a.reps):
            env["RNNC_CACHE_DIR"] = os.path.join(tmp, f"cache{i}")
            for acc in (cold, warm) if cached else (cold,):
                w, c, _ = run(predict, env)
                acc[0].append(w)
                acc[1].append(c)
            w, c, err = run(train, env)
            comp[0].append(w)
            comp[1].append(c)
            ms, st = compile_line(err)
            internal.append(ms / 1e3)
            for k in STAGES:
                stages[k].append(st[k] / 1e3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{a.rnnc}, {a.graph}, {a.reps} reps; ms, median (range)\n")
    print("| measure | wall | CPU |")
    print("|---|---|---|")
    print(f"| predict, cold cache (compiles the forward kernel) | {fmt(cold[0])} | {fmt(cold[1])} |")
    if cached:
        print(f"| predict, warm cache | {fmt(warm[0])} | {fmt(warm[1])} |")
    print(f"| train --epochs 0{' --no-cache' if cached else ''} (process) | {fmt(comp[0])} | "
          f"{fmt(comp[1])} |")
    print(f"| of which the compile of both kernels (wall) | {fmt(internal)} | |")
    print("\nthe compile's stages, summed over the kernels (ms, median (range)):\n")
    for k in STAGES:
        if stages[k][0] == stages[k][0]:  # not NaN: this rnnc reports the stage
            print(f"- {k}: {fmt(stages[k])}")


if __name__ == "__main__":
    main()
