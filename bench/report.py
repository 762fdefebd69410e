#!/usr/bin/env python3
"""bench/report.py RESULTS_DIR [--clock cpu|wall]: the markdown report of one bench/run.

Reads the JSON lines bench/run collected (meta.json, roofline.jsonl,
MODEL.rnnc.N.jsonl, MODEL.torch.N.jsonl, MODEL.aot.jsonl or MODEL.aot.na)
and prints: the side-by-side table with the ratio rnnc / PyTorch, the
issue-8 targets met or missed, the machine's limits, and the roofline of
each model (FLOPs and bytes per name from the model's shapes, the time the
measured per-operation limits allow, and the fraction rnnc reaches).
A batched run (bench/run --batched: MODEL.bB.tT.rnnc.N.jsonl, ...,
sweep.rnn.lrX.sS.IMPL.1.jsonl) gets its own report instead: per model,
rnnc and PyTorch at each thread count (training names/s, seconds to the
target accuracy, accuracy per epoch, the whole rnnc train process, batched
inference), issue 13's targets, the learning-rate sweep, where one
thread's time goes against roofline.c's GEMMs at the run's shapes, and the
GEMMs' share of the FMA peak; its times are wall clock, with the CPU time
beside them.
Times are CPU time of the one benchmark thread by default (--clock cpu):
on a machine shared with other work the wall clock also counts the time a
run waits for a core; --clock wall reports the wall clock instead (the two
agree on an idle machine; the report gives the CPU / wall ratio of every
run). Standard library only.
"""
import glob
import json
import os
import statistics
import sys


def read_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def runs(d, model, impl):
    res = []
    for p in sorted(glob.glob(os.path.join(d, f"{model}.{impl}.*.jsonl")),
                    key=lambda p: int(p.rsplit(".", 2)[-2])):
        ev = read_jsonl(p)
        r = {"summary": None, "compile": None, "run": None, "epochs": [], "shapes": []}
        for e in ev:
            if e["event"] in ("summary", "compile", "run"):
                r[e["event"]] = e
            elif e["event"] == "epoch":
                r["epochs"].append(e)
            elif e["event"] == "shapes":
                r["shapes"].append(e)
        if r["summary"]:
            res.append(r)
    return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_num(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def spread(xs, digits=0):
    """median, and the range when there is more than one run."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    m = statistics.median(xs)
    if len(xs) == 1:
        return fmt_num(m, digits)
    return f"{fmt_num(m, digits)} ({fmt_num(min(xs), digits)}–{fmt_num(max(xs), digits)})"


# ---------------------------------------------------------------- cost model
H, C, V = 256, 18, 59
MODELS = {
    # params: PyTorch's parameter count (rnnc pads its flat buffer a little)
    "rnn": {"params": 86584},
    "gru": {"params": 642834},
}


def cost(model, T):
    """FLOPs and bytes (weights and weight gradients touched, from cache)
    per name of length T: training step and inference. One-hot inputs are
    column gathers (no FLOPs worth counting); elementwise work is left out
    (it is < 1% of the FLOPs)."""
    n = MODELS[model]["params"]
    if model == "rnn":
        mv = (H + C) * H  # the h part of in2hidden and in2output, every step
        step_flops = 3 * 2 * mv  # forward matvec, backward matvec_t, rank-1 weight gradient
        step_bytes = 4 * 4 * mv  # read W, read W, read+write dW
        update_bytes = 36 * n  # zero grads (4), clip norm (4), Adam (28: read p,g,m,v, write p,m,v)
        update_flops = 15 * n  # Adam's 13 and the norm's 2
        infer_flops = T * 2 * mv
        infer_bytes = T * 4 * mv
    else:
        mv = 3 * H * H  # one 768x256 matrix
        step_flops = 9 * 2 * mv  # 3 matvec, 3 matvec_t, 3 rank-1 (W_hh_l0, W_ih_l1, W_hh_l1)
        step_bytes = 12 * 4 * mv
        update_bytes = 32 * n  # zero grads (4), Adam (28)
        update_flops = 13 * n
        infer_flops = T * 3 * 2 * mv
        infer_bytes = T * 3 * 4 * mv
    return {
        "train_flops": T * step_flops + update_flops,
        "train_bytes": T * step_bytes + update_bytes,
        "update_bytes": update_bytes,
        "infer_flops": infer_flops,
        "infer_bytes": infer_bytes,
    }


def bound_us(model, T, roof, infer=False):
    """The time per name that the measured per-operation limits allow for
    the per-step schedule: every weight matrix used once per step (a matvec
    forward; a matvec_t and a rank-1 update backward), then the passes over
    the parameters; as (low, high): the products at L2 and at L3 rates (the
    rnn's matrices fit L2: both are its L2 rates). A compiler that hoists
    products out of the scan or batches the weight gradients over the steps
    can beat it."""
    def r(prefix):
        for name, e in roof.items():
            if name.startswith(prefix):
                return e["us"]
        raise KeyError(prefix)
    n = MODELS[model]["params"]
    if model == "rnn":
        s = (H + C) / H
        if infer:
            b = T * r("matvec_256x256_L2") * s
            return b, b
        step = (r("matvec_256x256_L2") + r("matvec_t_256x256_L2") + r("rank1_256x256_L2")) * s
        # Adam, and two more passes over the gradients at the rate of Adam's
        # traffic: zeroing them (4 bytes a parameter) and the clipping norm (4)
        b = T * step + r("adam_rnn") + r("stream_adam_rnn") * 8 / 28
        return b, b
    lo, hi = (3 * r(f"matvec_768x256_{c}") for c in ("L2", "L3"))
    if infer:
        return T * lo, T * hi
    step = [3 * (r(f"matvec_768x256_{c}") + r(f"matvec_t_768x256_{c}") + r(f"rank1_768x256_{c}"))
            for c in ("L2", "L3")]
    update = r("adam_gru") + r("stream_adam_gru") * 4 / 28  # Adam, zeroing the gradients
    return T * step[0] + update, T * step[1] + update


def span(lo, hi, fmt):
    return fmt.format(lo) if abs(hi - lo) < 1e-9 else f"{fmt.format(lo)}–{fmt.format(hi)}"


CLOCK = "cpu"
KEYS = {  # measure -> (cpu key, wall key)
    "names_per_s": ("cpu_names_per_s", "names_per_s"),
    "train_seconds": ("train_cpu_seconds", "train_seconds"),
    "infer_us_per_name": ("infer_cpu_us_per_name", "infer_us_per_name"),
    "compile_ms": ("compile_cpu_ms", "compile_ms"),
}


def k(key):
    pair = KEYS.get(key)
    return key if pair is None else pair[0] if CLOCK == "cpu" else pair[1]


def main():
    global CLOCK
    args = sys.argv[1:]
    if "--clock" in args:
        i = args.index("--clock")
        CLOCK = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or CLOCK not in ("cpu", "wall"):
        sys.exit("usage: report.py RESULTS_DIR [--clock cpu|wall]")
    d = args[0]
    meta = json.load(open(os.path.join(d, "meta.json")))
    roof_events = read_jsonl(os.path.join(d, "roofline.jsonl"))
    roof = {e["name"]: e for e in roof_events if e["event"] == "roofline"}
    gemms = [e for e in roof_events if e["event"] == "gemm"]
    models = meta["models"].split()
    quick = meta["quick"]
    out = []
    w = out.append
    if meta.get("batched"):
        batched_report(d, meta, roof, gemms, w)
        print("\n".join(out))
        return

    w(f"Measured {meta['date']} on {meta['cpu']} ({meta['ncpu']} cores), {meta['source']}.")
    mode = "quick: 1 epoch of a few thousand names" if quick else f"{meta['epochs']} epochs of the full training set"
    w(f"Mode: {mode}; rnnc {meta['reps']} run(s) per model, PyTorch {meta['torch_reps']} run(s) "
      f"per model, alternating; one thread each. Values are medians (range over the runs). "
      + ("Times are CPU time of the benchmark's one thread (bench/report.py --clock wall: wall clock)."
         if CLOCK == "cpu" else "Times are wall clock."))
    if meta.get("torch_note"):
        w(meta["torch_note"].rstrip(".") + ".")
    w("")
    w("| model | measure | rnnc | PyTorch | rnnc / PyTorch |")
    w("|---|---|---|---|---|")
    findings = {}
    for model in models:
        rn, pt = runs(d, model, "rnnc"), runs(d, model, "torch")
        aotp = os.path.join(d, f"{model}.aot.jsonl")
        aot = read_jsonl(aotp)[0] if os.path.exists(aotp) else None
        nap = os.path.join(d, f"{model}.aot.na")
        aot_na = open(nap).read().strip() if os.path.exists(nap) else "no result"

        def col(rs, key):
            return [r["summary"].get(k(key)) for r in rs]

        rnps, pnps = col(rn, "names_per_s"), col(pt, "names_per_s")
        rt, ptt = col(rn, "train_seconds"), col(pt, "train_seconds")
        racc, pacc = col(rn, "test_accuracy"), col(pt, "test_accuracy")
        rinf, pinf = col(rn, "infer_us_per_name"), col(pt, "infer_us_per_name")
        rcomp = col(rn, "compile_ms")
        rrss, prss = col(rn, "peak_rss_kb"), col(pt, "peak_rss_kb")
        s0 = (rn or pt)[0]["summary"] if (rn or pt) else None
        ep = s0["epochs"] if s0 else meta["epochs"]
        names = s0["train_names"] // max(ep, 1) if s0 else 0

        def ratio(a, b, better_high):
            a, b = med(a), med(b)
            if a is None or b is None or b == 0:
                return "—"
            q = a / b
            if better_high:
                return f"{q:.2f} (rnnc {q:.1f}x faster)" if q >= 1 else f"{q:.2f} (rnnc {1 / q:.1f}x slower)"
            return f"{q:.3f} (rnnc {1 / q:.1f}x faster)" if q <= 1 else f"{q:.2f} (rnnc {q:.1f}x slower)"

        w(f"| {model} | training, names/s | {spread(rnps)} | {spread(pnps)} | {ratio(rnps, pnps, True)} |")
        def unit(xs, digits, u):
            t = spread(xs, digits)
            return t if t == "—" else f"{t}{u}"

        w(f"| {model} | training time, {ep} epoch{'s' if ep != 1 else ''} x {names:,} names | "
          f"{unit(rt, 1, ' s')} | {unit(ptt, 1, ' s')} | {ratio(rt, ptt, False)} |")
        accd = "—"
        if med(racc) is not None and med(pacc) is not None:
            accd = f"{100 * (med(racc) - med(pacc)):+.1f} points"
        w(f"| {model} | test accuracy (2,008 names) | {unit([100 * x for x in racc], 1, '%')} | "
          f"{unit([100 * x for x in pacc], 1, '%')} | {accd} |")
        w(f"| {model} | inference, µs/name, JIT (PyTorch: eager) | {spread(rinf, 1)} | {spread(pinf, 1)} | "
          f"{ratio(rinf, pinf, False)} |")
        if aot:
            w(f"| {model} | inference, µs/name, AOT (PyTorch: eager) | {fmt_num(aot[k('infer_us_per_name')], 1)} "
              f"(accuracy {100 * aot['test_accuracy']:.1f}%) | {spread(pinf, 1)} | "
              f"{ratio([aot[k('infer_us_per_name')]], pinf, False)} |")
        else:
            w(f"| {model} | inference, µs/name, AOT | n/a ({aot_na}) | {spread(pinf, 1)} | — |")
        w(f"| {model} | compile, ms (both kernels) | {spread(rcomp)} | — | — |")
        w(f"| {model} | peak RSS, MB | {spread([x / 1024 for x in rrss if x], 0)} | "
          f"{spread([x / 1024 for x in prss if x], 0)} | {ratio(rrss, prss, False).split(' (')[0]} |")
        busy = [r["run"]["busy_cores"] for r in rn + pt if r["run"]]
        findings[model] = dict(rnps=med(rnps), pnps=med(pnps), rinf=med(rinf), pinf=med(pinf),
                               aot=aot[k("infer_us_per_name")] if aot else None, aot_na=aot_na,
                               comp=med(rcomp), racc=med(racc), pacc=med(pacc),
                               T=med(col(rn, "mean_train_len")), Ti=med(col(rn, "mean_test_len")),
                               busy=max(busy) if busy else None,
                               cpu=[r["summary"].get("train_cpu_seconds") for r in rn + pt],
                               wall=[r["summary"].get("train_seconds") for r in rn + pt],
                               who=["rnnc"] * len(rn) + ["PyTorch"] * len(pt))
    w("")
    busy = [f["busy"] for f in findings.values() if f["busy"] is not None]
    if busy:
        w(f"Machine load: at most {max(busy):.2f} of {meta['ncpu']} cores busy during a run "
          f"(1.00 = the benchmark alone). CPU time / wall time of each run's training loop "
          f"(1.00 = it had a core to itself):")
        for m, f in findings.items():
            share = ", ".join(f"{who} {c / wl:.2f}" for who, c, wl in zip(f["who"], f["cpu"], f["wall"]) if c and wl)
            w(f"{m}: {share}.")
        w("")

    # ------------------------------------------------------------- targets
    w("Targets (issue 8):")
    w("")
    if not any(f["pnps"] for f in findings.values()):
        w("- the ratios to PyTorch: not measured (no PyTorch runs).")
    for m, f in findings.items():
        if f["rnps"] and f["pnps"]:
            q = f["rnps"] / f["pnps"]
            w(f"- {m}: batch-1 training >= 10x PyTorch's names/s: {q:.1f}x, "
              f"{'met' if q >= 10 else 'missed'} ({f['rnps']:,.0f} vs {f['pnps']:,.0f} names/s).")
    for m, f in findings.items():
        if f["pinf"]:
            if f["aot"]:
                q = f["pinf"] / f["aot"]
                w(f"- {m}: AOT inference >= 3x faster than PyTorch eager: {q:.1f}x, "
                  f"{'met' if q >= 3 else 'missed'} ({f['aot']:.1f} vs {f['pinf']:.1f} µs/name).")
            else:
                q = f["pinf"] / f["rinf"] if f["rinf"] else 0
                w(f"- {m}: AOT inference >= 3x faster than PyTorch eager: not measured ({f['aot_na']}); "
                  f"the JIT kernel is {q:.1f}x faster ({f['rinf']:.1f} vs {f['pinf']:.1f} µs/name).")
    if "gru" in findings and findings["gru"]["comp"]:
        c = findings["gru"]["comp"]
        w(f"- gru.nn compiled in < 500 ms: {c:.0f} ms, {'met' if c < 500 else 'missed'}.")
    w("")

    # ------------------------------------------------------------ roofline
    def r(name, key):
        return roof.get(name, {}).get(key, 0)
    w("This machine's limits, one core (bench/roofline.c, best of 5 trials):")
    w("")
    w("| kernel | µs | GFLOP/s | GB/s |")
    w("|---|---|---|---|")
    for name, e in roof.items():
        w(f"| {name} | {e['us']:,.2f} | {e['gflops']:.1f} | {e['gbps']:.1f} |")
    w("")
    w("Roofline per name (T = mean name length; FLOPs and bytes from the model's shapes, every weight "
      "matrix used once per step; 'bound' = the time the per-operation limits above allow for that "
      "per-step schedule, the gru's products at L2 and at L3 rates; over 100% = rnnc beats the per-step "
      "schedule, e.g. by hoisting products out of the scan):")
    w("")
    w("| model | phase | T | MFLOP | MB touched | rnnc µs | rnnc GFLOP/s | rnnc GB/s | bound µs | rnnc reaches |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for m, f in findings.items():
        if not f["rnps"] or not f["T"]:
            continue
        T, Ti = f["T"], f["Ti"]
        c = cost(m, T)
        us = 1e6 / f["rnps"]
        b = bound_us(m, T, roof)
        w(f"| {m} | training step | {T:.2f} | {c['train_flops'] / 1e6:.2f} | {c['train_bytes'] / 1e6:.1f} | "
          f"{us:,.0f} | {c['train_flops'] / us / 1e3:.1f} | {c['train_bytes'] / us / 1e3:.1f} | "
          f"{span(*b, '{:,.0f}')} | {span(100 * b[0] / us, 100 * b[1] / us, '{:.0f}')}% |")
        ci = cost(m, Ti)
        bi = bound_us(m, Ti, roof, infer=True)
        for label, t in (("inference (JIT)", f["rinf"]), ("inference (AOT)", f["aot"])):
            if t:
                w(f"| {m} | {label} | {Ti:.2f} | {ci['infer_flops'] / 1e6:.2f} | {ci['infer_bytes'] / 1e6:.1f} | "
                  f"{t:,.1f} | {ci['infer_flops'] / t / 1e3:.1f} | {ci['infer_bytes'] / t / 1e3:.1f} | "
                  f"{span(*bi, '{:,.0f}')} | {span(100 * bi[0] / t, 100 * bi[1] / t, '{:.0f}')}% |")
    gemm_table(gemms, roof, w)
    print("\n".join(out))


# ------------------------------------------------------------------ GEMMs
GEMM_SHAPES = {  # roofline name -> what it is
    "gemm_fwd": "gru Y = X Wᵀ [N, 256] x [256, 768]",
    "gemm_wtu": "gru D = U W [N, 768] x [768, 256]",
    "gemm_fwd_rnn": "rnn Y = X Wᵀ [N, 256] x [256, 256]",
    "gemm_wtu_rnn": "rnn D = U W [N, 256] x [256, 256]",
}


class Gemms:
    """bench/roofline.c's GEMM lines: time and share of the FMA peak of each
    product at each size of its batch dimension (rows), rnnc's kernel and
    OpenBLAS's; between two measured sizes the time is interpolated
    linearly, beyond the largest it grows in proportion."""

    def __init__(self, events):
        self.e = {}
        for e in events:
            rows = e.get("rows", e.get("n"))
            self.e.setdefault((e["name"], e["impl"]), {})[rows] = e

    def rows(self, name, impl="rnnc"):
        return sorted(self.e.get((name, impl), {}))

    def get(self, name, rows, impl="rnnc"):
        return self.e.get((name, impl), {}).get(rows)

    def us(self, name, rows, impl="rnnc"):
        pts = self.e.get((name, impl), {})
        if not pts or rows <= 0:
            return 0.0
        if rows in pts:
            return pts[rows]["us"]
        xs = sorted(pts)
        if rows > xs[-1]:
            return pts[xs[-1]]["us"] * rows / xs[-1]
        if rows < xs[0]:
            return pts[xs[0]]["us"] * rows / xs[0]
        lo = max(x for x in xs if x < rows)
        hi = min(x for x in xs if x > rows)
        f = (rows - lo) / (hi - lo)
        return pts[lo]["us"] * (1 - f) + pts[hi]["us"] * f


def gemm_table(gemms, roof, w):
    """rnnc's generated GEMM beside OpenBLAS at the batched kernels' shapes."""
    if not gemms:
        return
    g = Gemms(gemms)

    def cell(name, rows, impl):
        e = g.get(name, rows, impl)
        return f"{e['gflops']:.0f} ({100 * e['peak']:.0f}%)" if e else "—"
    peak = max((e["gflops"] for n, e in roof.items() if n.startswith("fma_peak")), default=0)
    w("")
    w(f"GEMM, one core (bench/roofline.c), GFLOP/s and share of the FMA peak ({peak:.1f} GFLOP/s "
      "a core): the kernel rnnc generates (compiler/kernels.c, JIT-compiled for this machine) and "
      "OpenBLAS's cblas_sgemm on the same operands. N = the rows: the names still running at a "
      "step of a chunk (up to 16 in training at batch 32), or all the packed rows of a chunk "
      "(a product hoisted out of the scan: ~115 for 16 names); inference chunks of a 1024-name "
      "block have up to 256 names.")
    w("")
    names = [n for n in GEMM_SHAPES if g.rows(n)]
    w("| N | " + " | ".join(f"{GEMM_SHAPES[n]}: rnnc | OpenBLAS" for n in names) + " |")
    w("|---|" + "---|---|" * len(names))
    allrows = sorted({r for n in names for r in g.rows(n)})
    for r in allrows:
        if r <= 8 or r % 4 == 0 or r in (115, 230):
            w(f"| {r} | " + " | ".join(f"{cell(n, r, 'rnnc')} | {cell(n, r, 'openblas')}"
                                      for n in names) + " |")
    for n, what in (("gemm_dw", "gru dW [768, 256] += Uᵀ V"), ("gemm_dw_rnn", "rnn dW [256, 256] += Uᵀ V")):
        for r in g.rows(n):
            w("")
            w(f"{what} over R = {r} packed rows: rnnc {cell(n, r, 'rnnc')}, OpenBLAS "
              f"{cell(n, r, 'openblas')} GFLOP/s.")
    if "pack_768x256" in roof:
        w("")
        w(f"Packing a [768, 256] weight matrix transposed (kernels.c's transpose, what a batched "
          f"kernel's NAME_pack does for each product, once per batch): {roof['pack_768x256']['us']:.1f} µs.")


# ------------------------------------------------------ the minibatch recipe
def gemm_flops(model, train):
    """GEMM FLOPs per character: gru: W_hh_l0, W_ih_l1, W_hh_l1 (768 x 256)
    forward, and backward their Wᵀu and weight gradients; rnn: in2hidden's
    h part (256 x 256). The one-hot products are gathers (no FLOPs), the
    [18, H] output products are left out (< 2%)."""
    mat = 2 * 768 * 256 if model == "gru" else 2 * 256 * 256
    per = 3 if model == "gru" else 1
    return mat * per * (3 if train else 1)


# pack_768x256 equivalents a batched kernel's NAME_pack transposes, once per
# batch (training) or per call (inference): batch.c's plan_packs, every
# product with a batched operand
PACKS = {"gru": (3 * 768 * 256 + 768 * 59 + 18 * 256) / (768 * 256),
         "rnn": (256 * 315 + 18 * 315) / (768 * 256)}


def cost_model(model, train, shapes, summary, g, roof):
    """µs per name the batched kernels' products, packing and update take
    at bench/roofline.c's one-core rates, for the chunks and steps the run
    had (the driver's "shapes"): {part: µs}."""
    names = shapes["names"]
    chunks, rows = shapes["chunks"], shapes["rows"]
    if model == "gru":
        step = ["gemm_fwd"] * 2 + (["gemm_wtu"] * 2 if train else [])
        whole = ["gemm_fwd"] + (["gemm_wtu"] + ["gemm_dw"] * 3 if train else [])
    else:
        step = ["gemm_fwd_rnn"] + (["gemm_wtu_rnn"] if train else [])
        whole = ["gemm_dw_rnn"] if train else []
    per_chunk = rows / chunks
    out = {
        "GEMMs, one step's rows": sum(c * g.us(n, r) for r, c in shapes["steps"] for n in step) / names,
        "GEMMs, a chunk's packed rows": chunks * sum(g.us(n, per_chunk) for n in whole) / names,
    }

    def rr(prefix):
        return next((e["us"] for n, e in roof.items() if n.startswith(prefix)), 0.0)
    calls = -(-names // shapes["block"])  # batches, or inference calls
    out["weights packed (once a batch)"] = calls * PACKS[model] * rr("pack_768x256") / names
    if train:
        # Adam once per batch; a batch's first chunk sums into the batch's
        # gradient, each other chunk's buffer is added to it and zeroed
        # (4 + 12 bytes a parameter, at the rate of Adam's 28 bytes of traffic)
        out["Adam and the chunks' gradient buffers"] = (
            summary["batches"] * rr(f"adam_{model}")
            + (chunks - summary["batches"]) * rr(f"stream_adam_{model}") * 16 / 28) / names
    return out


def batched_report(d, meta, roof, gemm_events, w):
    B = meta["batch"]
    threads = meta["threads"].split()
    g = Gemms(gemm_events)
    peak = max((e["gflops"] for n, e in roof.items() if n.startswith("fma_peak")), default=0)
    ncpu = meta["ncpu"]
    w(f"Measured {meta['date']} on {meta['cpu']} ({ncpu} cores), {meta['source']}.")
    mode = ("quick: 1 epoch of a few thousand names, no whole process" if meta["quick"]
            else f"{meta['epochs']} epochs of the full training set")
    w(f"The minibatch recipe: batch {B}, packed sequences, Adam, {mode}; rnnc {meta['reps']} run(s) and "
      f"PyTorch {meta['torch_reps']} run(s) per model and thread count, alternating. Medians (range "
      "over the runs); names/s by the wall clock, and per CPU-second (the process's CPU time: every "
      "thread's). The test split is evaluated every 50 batches, off the training clock.")
    if meta.get("torch_note"):
        w(meta["torch_note"].rstrip(".") + ".")
    findings = {}
    allruns = []
    for model in meta["models"].split():
        lr, target = meta["lr"][model], meta["target"][model]
        rn = {t: runs(d, f"{model}.b{B}.t{t}", "rnnc") for t in threads}
        pt = {t: runs(d, f"{model}.b{B}.t{t}", "torch") for t in threads}
        allruns += [(model, t, "rnnc", r) for t in threads for r in rn[t]]
        allruns += [(model, t, "PyTorch", r) for t in threads for r in pt[t]]
        if not any(rn.values()) and not any(pt.values()):
            continue

        def col(rs, key):
            return [r["summary"].get(key) for r in rs]

        def infer(rs, block, key="names_per_s"):
            return [next((b[key] for b in r["summary"].get("infer", []) if b["block"] == block), None)
                    for r in rs]

        def best(vals_by_t, high):
            ms = [(med(v), t) for t, v in vals_by_t.items() if med(v) is not None]
            if not ms:
                return None, None
            return (max if high else min)(ms)

        w("")
        w(f"### {model}.nn: batch {B}, lr {lr:g}")
        w("")
        head = [f"rnnc, {t} thread{'s' if t != '1' else ''}" for t in threads] + \
               [f"PyTorch, {t} thread{'s' if t != '1' else ''}" for t in threads]
        w("| measure | " + " | ".join(head) + " | rnnc / PyTorch |")
        w("|---|" + "---|" * len(head) + "---|")

        def row(label, rv, pv, digits=0, high=True, unit=""):
            """rv, pv: thread -> values; the ratio at each thread count and best to best."""
            cells = [spread(rv[t], digits) + (unit if med(rv[t]) is not None else "") for t in threads] + \
                    [spread(pv[t], digits) + (unit if med(pv[t]) is not None else "") for t in threads]
            ratios = []
            for t in threads:
                a, b = med(rv[t]), med(pv[t])
                if a and b:
                    ratios.append(f"{t}t: {a / b if high else b / a:.1f}x")
            (ab, at), (bb, bt) = best(rv, high), best(pv, high)
            if ab and bb:
                ratios.append(f"best: {ab / bb if high else bb / ab:.1f}x (rnnc {at}t, PyTorch {bt}t)")
            w(f"| {label} | " + " | ".join(cells) + f" | {'; '.join(ratios) or '—'} |")

        rn_nps = {t: col(rn[t], "names_per_s") for t in threads}
        pt_nps = {t: col(pt[t], "names_per_s") for t in threads}
        row("training, names/s", rn_nps, pt_nps)
        row("training, names per CPU-second", {t: col(rn[t], "cpu_names_per_s") for t in threads},
            {t: col(pt[t], "cpu_names_per_s") for t in threads})
        rn_tgt = {t: col(rn[t], "target_seconds") for t in threads}
        pt_tgt = {t: col(pt[t], "target_seconds") for t in threads}
        row(f"seconds to {100 * target:.0f}% test accuracy (training clock)", rn_tgt, pt_tgt, 1, False, " s")
        row(f"the same, CPU seconds", {t: col(rn[t], "target_cpu_seconds") for t in threads},
            {t: col(pt[t], "target_cpu_seconds") for t in threads}, 1, False, " s")

        def accs(rs):
            if not rs:
                return "—"
            per = [" / ".join(f"{100 * e['test_accuracy']:.1f}%" for e in r["epochs"]) for r in rs]
            return per[0] if len(set(per)) == 1 else ", ".join(per)
        w("| test accuracy after each epoch | " + " | ".join(accs(rn[t]) for t in threads) + " | " +
          " | ".join(accs(pt[t]) for t in threads) + " | — |")
        rn_whole = {t: col(rn[t], "whole_seconds") for t in threads}
        pt_loop = {t: col(pt[t], "train_seconds") for t in threads}
        row("whole `rnnc train` process, s (PyTorch: its training loop)", rn_whole, pt_loop, 1, False, " s")
        row("the same, CPU seconds", {t: col(rn[t], "whole_cpu_seconds") for t in threads},
            {t: col(pt[t], "train_cpu_seconds") for t in threads}, 1, False, " s")
        for block in sorted({b["block"] for t in threads for r in rn[t] + pt[t]
                             for b in r["summary"].get("infer", [])}):
            row(f"inference, names/s, blocks of {block}", {t: infer(rn[t], block) for t in threads},
                {t: infer(pt[t], block) for t in threads})
        w("| CPU / wall of the training loop | " + " | ".join(
            spread([r["summary"]["train_cpu_seconds"] / r["summary"]["train_seconds"] for r in rn[t]], 2)
            for t in threads) + " | " + " | ".join(
            spread([r["summary"]["train_cpu_seconds"] / r["summary"]["train_seconds"] for r in pt[t]], 2)
            for t in threads) + " | — |")
        same = [r["summary"].get("whole_same_checkpoint") for t in threads for r in rn[t]]
        same = [x for x in same if x is not None]
        if same:
            w("")
            w(f"The whole `rnnc train` process wrote the same checkpoint bytes as the driver's training "
              f"in {sum(same)} of {len(same)} comparisons (so the driver trains name for name as "
              "`rnnc train` does, and its evaluations did not change the training).")
        findings[model] = dict(
            lr=lr, target=target, rn=rn, pt=pt,
            acc=med([r["summary"]["test_accuracy"] for t in threads for r in rn[t]]),
            pacc=med([r["summary"]["test_accuracy"] for t in threads for r in pt[t]]),
            nps=rn_nps, whole=rn_whole, loop=pt_loop,
            infer={blk: {t: infer(rn[t], blk) for t in threads} for blk in (B, 1024)})

    # ------------------------------------------------------------- load
    if allruns:
        w("")
        busy = [r["run"]["busy_cores"] for *_, r in allruns if r["run"]]
        loads = [r["run"]["loadavg"].split()[0] for *_, r in allruns if r["run"]]
        w(f"Machine load during the runs: {min(busy):.2f}–{max(busy):.2f} of {ncpu} cores busy "
          f"(bench/run's /proc/stat sampling), 1-minute load average {min(loads)}–{max(loads)} at the "
          "runs' ends.")

    # ---------------------------------------------------------- targets
    w("")
    w("Targets (issue 13):")
    w("")
    two = [t for t in threads if int(t) == ncpu] or threads[-1:]
    if "gru" in findings:
        f = findings["gru"]
        if f["acc"] is not None:
            w(f"- gru.nn, batch {B}, lr {f['lr']:g}, {meta['epochs']} epochs: test accuracy >= 79.5%: "
              f"{100 * f['acc']:.1f}%, {'met' if f['acc'] >= 0.795 else 'missed'} (PyTorch "
              f"{100 * f['pacc']:.1f}%)." if f["pacc"] is not None else
              f"- gru.nn: test accuracy >= 79.5%: {100 * f['acc']:.1f}%, {'met' if f['acc'] >= 0.795 else 'missed'}.")
        loops = [(med(v), t) for t, v in f["loop"].items() if med(v)]
        wholes = [(med(v), t) for t, v in f["whole"].items() if med(v)]
        if loops and wholes:
            (pl, plt), (rw, rwt) = min(loops), min(wholes)
            q = pl / rw
            w(f"- gru.nn: the whole rnnc process >= 10x faster than PyTorch's training loop: {q:.1f}x, "
              f"{'met' if q >= 10 else 'missed'} (rnnc train on {rwt} thread(s): {rw:.1f} s, wall clock, "
              f"compile, data, training, evaluation and checkpoints; PyTorch's loop at its best, {plt} "
              f"thread(s): {pl:.1f} s).")
        flops_train = gemm_flops("gru", True) * 7.158  # mean training name length
        flops_infer = gemm_flops("gru", False) * 7.124
        n2 = med(f["nps"].get(two[0], []))
        if n2 and peak:
            w(f"- gru training >= 10,000 names/s on the {ncpu} cores: {n2:,.0f} names/s, "
              f"{'met' if n2 >= 10000 else 'missed'}. At {flops_train / 1e6:.1f} MFLOP of GEMMs a "
              f"name (batch {B}: Adam adds {8.36 / B:.2f}; the issue's ~34 MFLOP is batch 1's count, the "
              f"same GEMMs plus a whole Adam step, 8.4 MFLOP, for every name), that is "
              f"{n2 * flops_train / 1e9:.0f} GFLOP/s, "
              f"{100 * n2 * flops_train / 1e9 / (ncpu * peak):.0f}% of the {ncpu} cores' FMA peak "
              f"({ncpu} x {peak:.0f} GFLOP/s). 10,000 names/s would need "
              f"{10000 * flops_train / 1e9:.0f} GFLOP/s: "
              f"{100 * 10000 * flops_train / 1e9 / (ncpu * peak):.0f}% of this machine's peak; at 75% "
              f"of it the ceiling is {0.75 * ncpu * peak * 1e9 / flops_train:,.0f} names/s.")
        inf = [(med(v.get(two[0], [])), blk) for blk, v in f["infer"].items()]
        inf = [x for x in inf if x[0]]
        if inf and peak:
            v, blk = max(inf)
            w(f"- gru batched inference >= 30,000 names/s on the {ncpu} cores: {v:,.0f} names/s (blocks of "
              f"{blk}), {'met' if v >= 30000 else 'missed'}: {v * flops_infer / 1e9:.0f} GFLOP/s at "
              f"{flops_infer / 1e6:.1f} MFLOP a name, {100 * v * flops_infer / 1e9 / (ncpu * peak):.0f}% "
              f"of the peak. 30,000 names/s would need {30000 * flops_infer / 1e9:.0f} GFLOP/s "
              f"({100 * 30000 * flops_infer / 1e9 / (ncpu * peak):.0f}% of the peak); at 75% of it the "
              f"ceiling is {0.75 * ncpu * peak * 1e9 / flops_infer:,.0f} names/s.")
    if "rnn" in findings and findings["rnn"]["acc"] is not None:
        f = findings["rnn"]
        w(f"- rnn.nn at batch {B} reaches its batch-1 accuracy (>= 70%) in {meta['epochs']} epochs: "
          f"{100 * f['acc']:.1f}% at lr {f['lr']:g}, {'met' if f['acc'] >= 0.70 else 'missed'}"
          + (f" (PyTorch {100 * f['pacc']:.1f}%)." if f["pacc"] is not None else "."))

    # ------------------------------------------------------------ sweep
    sweep = {}
    for p in glob.glob(os.path.join(d, "sweep.rnn.lr*.jsonl")):
        base = os.path.basename(p)[len("sweep.rnn.lr"):-len(".1.jsonl")]
        lr_seed, impl = base.rsplit(".", 1)
        lr, seed = lr_seed.rsplit(".s", 1)
        rs = runs(d, os.path.basename(p)[:-len(f".{impl}.1.jsonl")], impl)
        if rs:
            sweep.setdefault(float(lr), {})[(impl, int(seed))] = rs[0]
    if sweep:
        w("")
        w(f"rnn.nn at batch {B}, test accuracy after epoch 1 / epoch 2, by learning rate (rnnc: one "
          "thread, seeds 42, 1, 2; PyTorch: seed 42):")
        w("")
        keys = sorted({k for v in sweep.values() for k in v}, key=lambda k: (k[0] != "rnnc", k[1] != 42, k[1]))
        w("| lr | " + " | ".join(f"{'rnnc' if i == 'rnnc' else 'PyTorch'} seed {s_}" for i, s_ in keys) +
          " | rnnc mean after epoch 2 |")
        w("|---|" + "---|" * len(keys) + "---|")
        for lr in sorted(sweep):
            cells = []
            for k in keys:
                r = sweep[lr].get(k)
                cells.append(" / ".join(f"{100 * e['test_accuracy']:.1f}%" for e in r["epochs"]) if r else "—")
            accs = [r["summary"]["test_accuracy"] for k, r in sweep[lr].items() if k[0] == "rnnc"]
            mean = f"{100 * statistics.mean(accs):.1f}%" if accs else "—"
            w(f"| {lr:g} | " + " | ".join(cells) + f" | {mean} |")

    # ------------------------------------------------- where the time goes
    rows = []
    for model, f in findings.items():
        r1 = f["rn"].get("1") or []
        if not r1 or not g.rows("gemm_fwd"):
            continue
        r0 = r1[0]
        for sh in r0["shapes"]:
            train = sh["phase"] == "train"
            if train:
                meas = 1e6 / med([r["summary"]["cpu_names_per_s"] for r in r1])
                what = f"training, batch {sh['block']}"
                T = r0["summary"]["mean_train_len"]
            else:
                v = med(infer(r1, sh["block"], "cpu_names_per_s"))
                if not v:
                    continue
                meas = 1e6 / v
                what = f"inference, blocks of {sh['block']}"
                T = r0["summary"]["mean_test_len"]
            parts = cost_model(model, train, sh, r0["summary"], g, roof)
            rows.append((model, what, meas, gemm_flops(model, train) * T, parts, sh))
    if rows:
        w("")
        w("Where one thread's time goes (µs per name, CPU time of the 1-thread rnnc runs), against "
          "what bench/roofline.c measured alone on one core: the batched kernels' GEMMs at the sizes "
          "the run had (the driver's `shapes`: each step's running names, each chunk's packed rows), "
          "the weights they pack (once per batch or inference call), and the update; the rest is everything "
          "else (elementwise gates, one-hot gathers and the W_ih_l0 / in2hidden one-hot gradient, "
          "softmax, copies, the thread pool):")
        w("")
        parts_names = ["GEMMs, one step's rows", "GEMMs, a chunk's packed rows", "weights packed (once a batch)",
                       "Adam and the chunks' gradient buffers"]
        w("| model | phase | measured | GEMM GFLOP/s achieved (share of one core's peak) | "
          + " | ".join(parts_names) + " | the rest |")
        w("|---|---|---|---|" + "---|" * len(parts_names) + "---|")
        for model, what, meas, flops, parts, sh in rows:
            rest = meas - sum(parts.values())
            gf = flops / meas / 1e3
            cells = [f"{parts[p]:.1f} ({100 * parts[p] / meas:.0f}%)" if p in parts else "—" for p in parts_names]
            w(f"| {model} | {what} | {meas:.1f} | {gf:.1f} ({100 * gf / peak:.0f}%) | " + " | ".join(cells) +
              f" | {rest:.1f} ({100 * rest / meas:.0f}%) |")
        w("")
        w("Step rows (training): " + "; ".join(
            f"{m} {w_}: {sh['rows'] / sh['chunks']:.0f} packed rows a chunk, mean "
            f"{sum(r * c for r, c in sh['steps']) / max(1, sum(c for _, c in sh['steps'])):.1f} rows a step"
            for m, w_, _, _, _, sh in rows) + ".")
    gemm_table(gemm_events, roof, w)


if __name__ == "__main__":
    main()
