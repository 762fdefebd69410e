#!/usr/bin/env python3
"""bench/profile.py: where rnnc's time goes, basic block by basic block.

    python3 bench/profile.py GRAPH [--infer] [--limit N] [--build DIR] [--top K]
                             [--batch B [--threads N] [--lr X]] [--freq HZ]

JIT code has no symbols, and this machine (a KVM guest) has no hardware
performance counters, so `perf stat` reports nothing and `perf report`
shows bare addresses. This script gives the samples names:

1. `rnnc compile GRAPH --emit asm` prints the very code the JIT makes (the
   same passes and target; checked instruction by instruction against the
   JIT's memory for gru.nn's train kernel), and llvm-mc-19
   --save-temp-labels assembles it keeping the .LBB labels, so llvm-nm-19
   gives every basic block's offset in each kernel.
2. `perf record -e cpu-clock` runs rnnc-bench (bench/driver.c), which prints
   its pid and the kernels' addresses, with a kernel cache of its own
   (rnnc-bench --cache): each entry holds the very object the JIT loaded,
   where a kernel's own functions (the GEMM tiles of the batched kernels,
   `rnnc.gemm.6x2.l8.8`) sit after it; the one module of --emit asm
   shares them between kernels, so their offsets come from the objects.
3. A perf map (/tmp/perf-PID.map) names each block `train:.LBB0_12` and
   each tile `step_batch:rnnc.gemm.6x2.l8.8`, and
   `perf report` attributes the samples; the hottest blocks are printed
   with their instructions so the loop can be recognized (a matvec is FMAs
   into accumulators with a reduction, a rank-1 update loads, FMAs and
   stores the same address, Adam has sqrt and div, ...).

--infer profiles inference only (no training, 40 passes over the test
split); otherwise 1 epoch of --limit names (default 2000) is trained, with
no evaluation and no inference timing. --batch B profiles the minibatch
recipe instead (rnnc-bench --batch: the kernels step_batch, update and
forward_batch, in blocks of B and of 1024 names with --infer) on --threads
threads (default 1); the runtime's own functions (the thread pool, the
packing of a chunk, the ordered sum of the chunks' gradients) appear by
their symbols.
Needs perf, llvm-mc-19 and llvm-nm-19, and a bench build (bench/run makes
build-bench/).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


ABI_BYTES = 48  # compiler/jit.c: ABI_FIELDS little-endian u64 before the object
OBJECTS_MAGIC = b"rncobjs1"  # compiler/jit.c: a kernel's objects, one per part


def cached_objects(cache, tmp):
    """The objects of a kernel cache (compiler/cache.c's entries: magic,
    key length, value length, checksum, key, value; compiler/jit.c's value:
    the kernel's ABI, ABI_BYTES, then the object): kernel name ->
    [(address, size, name)] of the object's functions."""
    out = {}
    for i, ent in enumerate(sorted(os.listdir(cache)) if os.path.isdir(cache) else []):
        with open(os.path.join(cache, ent), "rb") as fh:
            b = fh.read()
        if b[:8] != b"rnnc-kc1":
            continue
        klen, olen = int.from_bytes(b[8:16], "little"), int.from_bytes(b[16:24], "little")
        value = b[32 + klen + ABI_BYTES:32 + klen + olen]
        # a kernel in parts: OBJECTS_MAGIC, then each object after its length
        objs = []
        if value[:8] == OBJECTS_MAGIC:
            at = 8
            while at + 8 <= len(value):
                n = int.from_bytes(value[at:at + 8], "little")
                objs.append(value[at + 8:at + 8 + n])
                at += 8 + n
        else:
            objs.append(value)
        for j, o in enumerate(objs):
            path = os.path.join(tmp, f"kernel{i}.{j}.o")
            with open(path, "wb") as fh:
                fh.write(o)
            fsyms, kernel = [], None
            for line in sh(["llvm-nm-19", "-n", "-S", "--defined-only", path]).splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[2] in "tT":
                    fsyms.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
                    if parts[2] == "T" and parts[3] in KERNELS:
                        kernel = parts[3]
            if kernel:
                out[kernel] = fsyms
    return out


# the kernels (their names in `rnnc compile --emit asm`) and the keys of
# their addresses in rnnc-bench's compile line
KERNELS = {"train": "train_fn", "forward": "forward_fn", "step_batch": "step_batch_fn",
           "update": "update_fn", "forward_batch": "forward_batch_fn",
           "train.part1": "train_part1_fn", "forward.part1": "forward_part1_fn"}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("graph")
    ap.add_argument("--infer", action="store_true", help="profile inference only")
    ap.add_argument("--limit", type=int, default=2000, help="training names (default 2000)")
    ap.add_argument("--build", default=os.path.join(root, "build-bench"))
    ap.add_argument("--top", type=int, default=12, help="blocks to show with their code")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (perf.data, k.s, k.o)")
    ap.add_argument("--batch", type=int, help="the minibatch recipe, B names a batch")
    ap.add_argument("--threads", type=int, default=1, help="with --batch: threads (default 1)")
    ap.add_argument("--lr", type=float, help="with --batch: the learning rate (default: the graph's)")
    ap.add_argument("--freq", type=int, default=1999,
                    help="perf's samples a second (default 1999: on the KVM guest of "
                         "docs/benchmarks.md, 20000 slowed the run it measured 12x)")
    a = ap.parse_args()
    rnnc = os.path.join(a.build, "rnnc", "rnnc")
    driver = os.path.join(a.build, "rnnc-bench")
    tmp = tempfile.mkdtemp(prefix="rnnc-profile-")
    try:
        profile(a, rnnc, driver, tmp, root)
    finally:
        if a.keep:
            print(f"(work directory: {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def profile(a, rnnc, driver, tmp, root):

    # 1. the kernels' code, with block labels
    asm = os.path.join(tmp, "k.s")
    obj = os.path.join(tmp, "k.o")
    sh([rnnc, "compile", a.graph, "--emit", "asm", "-o", asm])
    sh(["llvm-mc-19", "-filetype=obj", "--save-temp-labels", asm, "-o", obj])
    syms = []
    for line in sh(["llvm-nm-19", "-n", obj]).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            syms.append((int(parts[0], 16), parts[2]))
    funcs = {name: addr for addr, name in syms if name in KERNELS}
    ends = sorted(addr for addr, name in syms if name.startswith(".Lfunc_end"))

    # the instructions of each label, for the listing
    code, cur = {}, None
    for line in open(asm):
        m = re.match(r"^(\.LBB\d+_\d+|[A-Za-z_][\w.]*):", line)
        if m:
            cur = m.group(1)
            code[cur] = []
        elif cur and line.startswith("\t") and not line.startswith("\t."):
            code[cur].append(line.strip())

    # 2. the run, its kernels compiled into a kernel cache of its own
    data = os.path.join(tmp, "perf.data")
    cache = os.path.join(tmp, "cache")
    args = [driver, a.graph, "--epochs", "0" if a.infer else "1", "--limit", str(a.limit),
            "--no-eval", "--infer-reps", "40" if a.infer else "0", "--cache"]
    if a.batch:
        args += ["--batch", str(a.batch), "--threads", str(a.threads)]
        if a.lr:
            args += ["--lr", str(a.lr)]
    out = sh(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.freq), "-o", data, "--"] + args,
             cwd=root, env=dict(os.environ, RNNC_CACHE_DIR=cache))
    ev = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    comp = next(e for e in ev if e["event"] == "compile")
    summ = next(e for e in ev if e["event"] == "summary")
    base = {k: int(comp[key], 16) for k, key in KERNELS.items() if comp.get(key, "(nil)") != "(nil)"}
    funcs = {k: v for k, v in funcs.items() if k in base}

    # 3. the map: every block of each kernel, up to the next label; and the
    # functions each kernel's object has besides (its GEMM tiles), where
    # the object the JIT loaded (the cache entry) has them
    mp = f"/tmp/perf-{comp['pid']}.map"
    with open(mp, "w") as f:
        for fn, start in funcs.items():
            end = min(e for e in ends if e > start)
            labels = [(addr, name) for addr, name in syms if start <= addr < end and
                      (name == fn or name.startswith(".LBB"))]
            labels.sort()
            for i, (addr, name) in enumerate(labels):
                nxt = labels[i + 1][0] if i + 1 < len(labels) else end
                if nxt > addr:
                    f.write(f"{base[fn] + addr - start:x} {nxt - addr:x} {fn}:{name}\n")
        for fn, fsyms in cached_objects(cache, tmp).items():
            if fn not in base:
                continue
            at = next(addr for addr, size, name in fsyms if name == fn)
            for addr, size, name in fsyms:
                if name != fn and size:
                    f.write(f"{base[fn] + addr - at:x} {size:x} {fn}:{name}\n")
    rep = sh(["perf", "report", "-i", data, "--sort", "sym", "--stdio", "--percent-limit", "0.3"])
    rows = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(3)))
    os.unlink(mp)

    print(f"# {a.graph}, {'inference' if a.infer else 'training'}"
          + (f", batch {a.batch}, {a.threads} thread(s)" if a.batch else "") + ": "
          + (f"{summ['infer_us_per_name']} µs/name" if a.infer else f"{summ['names_per_s']} names/s"))
    kern = dict.fromkeys(base, 0.0)
    for pct, sym in rows:
        k = sym.split(":")[0]
        if k in kern:
            kern[k] += pct
    print("# samples in the kernels: " + ", ".join(f"{k} {v:.1f}%" for k, v in kern.items())
          + "; elsewhere the rest")
    for pct, sym in rows:
        print(f"{pct:6.2f}%  {sym}")
    print()
    shown = 0
    for pct, sym in rows:
        if ":" not in sym or shown >= a.top:
            continue
        label = sym.split(":", 1)[1]
        ins = code.get(label, [])
        print(f"--- {sym} ({pct:.2f}%, {len(ins)} instructions)")
        for i in ins[:40]:
            print(f"    {i}")
        if len(ins) > 40:
            print("    ...")
        shown += 1


if __name__ == "__main__":
    main()
