#!/usr/bin/env python3
"""bench/report.py RESULTS_DIR [--clock cpu|wall]: the markdown report of one bench/run.

Reads the JSON lines bench/run collected (meta.json, roofline.jsonl,
MODEL.rnnc.N.jsonl, MODEL.torch.N.jsonl, MODEL.aot.jsonl or MODEL.aot.na)
and prints: the side-by-side table with the ratio rnnc / PyTorch, the
issue-8 targets met or missed, the machine's limits, and the roofline of
each model (FLOPs and bytes per name from the model's shapes, the time the
measured per-operation limits allow, and the fraction rnnc reaches).
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
        r = {"summary": None, "compile": None, "run": None, "epochs": []}
        for e in ev:
            if e["event"] in ("summary", "compile", "run"):
                r[e["event"]] = e
            elif e["event"] == "epoch":
                r["epochs"].append(e)
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
    gemm_table(gemms, w)
    print("\n".join(out))


def gemm_table(gemms, w):
    """rnnc's generated GEMM beside OpenBLAS at the batched gru's shapes."""
    if not gemms:
        return
    g = {(e["name"], e["impl"], e["n"]): e for e in gemms}

    def cell(name, impl, n):
        e = g.get((name, impl, n))
        return f"{e['gflops']:.1f} ({100 * e['peak']:.0f}%)" if e else "—"
    w("")
    w("GEMM, one core (bench/roofline.c): the kernel rnnc generates (compiler/kernels.c, JIT-compiled "
      "for this machine) and OpenBLAS's cblas_sgemm on the same operands, GFLOP/s (share of the FMA "
      "peak above). N = the batch: `fwd` is a step's recurrent product Y [N, 768] = X [N, 256] Wᵀ "
      "(Wᵀ packed), `Wᵀu` the backward's D [N, 256] = U [N, 768] W; `dW` accumulates a "
      "[768, 256] weight gradient over 230 packed rows. roofline.jsonl has every N from 1 to 32.")
    w("")
    w("| N | fwd rnnc | fwd OpenBLAS | Wᵀu rnnc | Wᵀu OpenBLAS |")
    w("|---|---|---|---|---|")
    ns = sorted({e["n"] for e in gemms if e["name"] != "gemm_dw"})
    for n in ns:
        if n <= 8 or n % 8 == 0 or n == ns[-1]:
            w(f"| {n} | {cell('gemm_fwd', 'rnnc', n)} | {cell('gemm_fwd', 'openblas', n)} | "
              f"{cell('gemm_wtu', 'rnnc', n)} | {cell('gemm_wtu', 'openblas', n)} |")
    for e in gemms:
        if e["name"] == "gemm_dw" and e["impl"] == "rnnc":
            w("")
            w(f"dW [{e['n']}, 256] += Uᵀ V over 230 rows: rnnc {cell('gemm_dw', 'rnnc', e['n'])}, "
              f"OpenBLAS {cell('gemm_dw', 'openblas', e['n'])} GFLOP/s.")


if __name__ == "__main__":
    main()
