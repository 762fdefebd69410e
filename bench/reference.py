#!/usr/bin/python3
"""bench/reference.py: the reference recipe of ../shared/DESIGN.md in PyTorch.

    /usr/bin/python3 bench/reference.py [--model rnn|gru|both] [--epochs N]
        [--limit N] [--quick] [--seed S] [--infer-reps R] [--data DIR]
        [--lr X] [--batch B] [--threads N] [--split rnnc|sklearn]
        [--eval-every K] [--target-accuracy A]

Trains the names classifier the way PyTorch users do it (eager mode, batch
1, one optimizer step per name) and times it:

  rnn  the char-RNN tutorial's hand-built cell: in2hidden / in2output Linear
       layers on concat(x_t, h), sigmoid; h0 = kaiming_uniform noise drawn
       for every name; clip_grad_norm_(1.0) before every step
  gru  nn.GRU(59, 256, num_layers=2) and Linear(256, 18) on the top layer's
       last output; h0 = zeros; no clipping

Both: cross entropy, Adam(lr=1e-3, or --lr), 2 epochs, the training set
reshuffled every epoch. Data: data/names/*.txt in file-name order (the
labels), each line stripped of trailing whitespace, unidecode'd, names with
a character outside the 59-character vocabulary skipped; a stratified 10%
test split: 18,065 train / 2,008 test. --split sklearn (the default at
batch 1, as this script always did): sklearn's train_test_split(stratify=
...); --split rnnc (the default with --batch): rnnc's own split
(runtime/data.c's data_split, ported below), the same test names as
`rnnc train`/`rnnc eval` with the same --seed.

--batch B (B >= 1) runs the minibatch recipe instead: consecutive slices of
B names of each epoch's shuffled order (the last, partial one kept), packed
with torch.nn.utils.rnn.pack_sequence(enforce_sorted=False) (sorted by
length, longest first, as PyTorch sorts them); one Adam step per batch on
the mean cross entropy of the batch (CrossEntropyLoss's default); rnn:
clip_grad_norm_(1.0) of the gradient of that mean. The gru runs nn.GRU on
the PackedSequence and takes each name's last output from h_n; the rnn's
hand-built cell runs over the PackedSequence itself (at step t only the
batch_sizes[t] names still running, a prefix of the sorted batch; each
name's logits from the step of its own last character; a kaiming_uniform
h0 row per name), so no padding arithmetic and no mask. Packing is part
of the timed loop (a user packs every batch); one-hot tensors are made
once, before timing, as at batch 1. Every --eval-every batches (default 50)
the test split is evaluated, outside the training clock and without
touching the training's random stream, until the accuracy first reaches
--target-accuracy (default 0.8): "target_seconds" is the training time
until then. Inference: batched, no_grad, the test split in packs of B names
(the training batch) and of 1024 (rnnc eval's blocks): "infer" in the summary.

Timed: each epoch's training loop (forward, backward, clipping, Adam: the
model work only; names are turned into one-hot tensors once, before any
timing, as rnnc turns them into indices once), and inference (model.eval(),
torch.no_grad(), one name at a time over the test split; R passes, the
median pass). Both wall-clock and process CPU time are recorded (the
CPU time is inflated less when other processes share the machine). Not timed:
imports, data loading, the evaluation after each epoch.

Prints one JSON object a line on stdout ({"event": "epoch"|"summary", ...},
the same keys as bench/driver.c; batched runs add "batch", "lr",
"target_seconds" and the like); progress goes to stderr. Threads: --threads
N (default 1) sets torch.set_num_threads(N) and OPENBLAS/OMP/MKL_NUM_THREADS
=N before torch loads (Debian's torch does its GEMMs in OpenBLAS, whose
thread count torch.set_num_threads does not change).

Needs Debian's python3-torch, python3-sklearn, python3-unidecode and
libopenblas0-pthread (use /usr/bin/python3). Without them it says how to
install them and exits with status 77, which bench/run takes as "skip
PyTorch".
"""
import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import time

EXIT_SKIP = 77
VOCAB = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'"


def set_threads_env(n):
    """Before torch (and OpenBLAS) load: n threads for OpenBLAS, OpenMP and
    MKL. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE would override OpenBLAS's
    detection of this CPU, so they go."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.pop(var, None) is not None:
            print(f"reference.py: ignoring {var} from the environment", file=sys.stderr)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["rnn", "gru", "both"], default="both")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 2; --quick: 1)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N names of each epoch's order (default: all; --quick: 2000)")
    p.add_argument("--quick", action="store_true", help="1 epoch of 2000 names")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--infer-reps", type=int, default=5, help="inference passes over the test split")
    p.add_argument("--data", default=None, help="data directory (default: data/names of the repository)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument("--batch", type=int, default=None,
                   help="names per optimizer step, packed (default: the batch-1 recipe)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenBLAS threads (default 1)")
    p.add_argument("--split", choices=["rnnc", "sklearn"], default=None,
                   help="test split (default: sklearn at batch 1, rnnc with --batch)")
    p.add_argument("--eval-every", type=int, default=50, metavar="K",
                   help="with --batch: evaluate the test split every K batches (default 50)")
    p.add_argument("--target-accuracy", type=float, default=0.8, metavar="A",
                   help="with --batch: report the training seconds to this test accuracy (default 0.8)")
    p.add_argument("--check", action="store_true",
                   help="only check that torch, sklearn and unidecode import (status 0, or 77)")
    a = p.parse_args()
    if a.batch is not None and a.batch < 1:
        p.error("--batch wants a positive integer")
    if a.threads < 1 or a.eval_every < 1 or not a.lr > 0:
        p.error("--threads and --eval-every want positive integers, --lr a positive number")
    if a.split is None:
        a.split = "sklearn" if a.batch is None else "rnnc"
    if a.epochs is None:
        a.epochs = 1 if a.quick else 2
    if a.limit is None:
        a.limit = 2000 if a.quick else 0
    if a.data is None:
        a.data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "names")
    return a


def need_modules():
    missing = []
    for mod in ("torch", "sklearn", "unidecode"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        print(f"reference.py: missing Python modules: {', '.join(missing)} (python {sys.executable}).\n"
              "Install Debian's packages and run with /usr/bin/python3:\n"
              "  apt-get install -y python3-torch python3-sklearn python3-unidecode libopenblas0-pthread",
              file=sys.stderr)
        sys.exit(EXIT_SKIP)


def emit(obj):
    print(json.dumps(obj), flush=True)


class RnncRng:
    """common/util.c's Rng: xoshiro256** seeded by splitmix64; below() is
    Lemire's multiply-and-reject, shuffle() Fisher-Yates from the top."""
    M64 = (1 << 64) - 1

    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed = (seed + 0x9E3779B97F4A7C15) & self.M64
            z = seed
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.M64
            self.s.append(z ^ (z >> 31))

    @classmethod
    def rotl(cls, x, k):
        return ((x << k) | (x >> (64 - k))) & cls.M64

    def u64(self):
        s = self.s
        result = (self.rotl((s[1] * 5) & self.M64, 7) * 9) & self.M64
        t = (s[1] << 17) & self.M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self.rotl(s[3], 45)
        return result

    def below(self, n):
        m = (self.u64() >> 32) * n
        if (m & 0xFFFFFFFF) < n:
            threshold = ((1 << 32) - n) % n
            while (m & 0xFFFFFFFF) < threshold:
                m = (self.u64() >> 32) * n
        return m >> 32

    def shuffle(self, a):
        for i in range(len(a), 1, -1):
            j = self.below(i)
            a[i - 1], a[j] = a[j], a[i - 1]


def rnnc_split(targets, nlabels, fraction, seed):
    """runtime/data.c's data_split: ceil(fraction * N) test names, each
    label's floor(fraction * count) and then one more, by largest remainder
    (ties to the lower label); each label's names shuffled in label order
    from one stream, the first ones to test; then train and test shuffled."""
    per_label = [0] * nlabels
    for y in targets:
        per_label[y] += 1
    total = math.ceil(fraction * len(targets))
    want = [min(math.floor(fraction * c), c) for c in per_label]
    rem = [fraction * c - w for c, w in zip(per_label, want)]
    while sum(want) < total:
        best = max((l for l in range(nlabels) if want[l] < per_label[l]), key=lambda l: (rem[l], -l))
        want[best] += 1
        rem[best] -= 1.0
    while sum(want) > total:  # only if rounding made a floor too big
        best = min((l for l in range(nlabels) if want[l] > 0), key=lambda l: (rem[l], l))
        want[best] -= 1
        rem[best] += 1.0
    rng = RnncRng(seed)
    train, test = [], []
    for l in range(nlabels):
        idx = [i for i, y in enumerate(targets) if y == l]
        rng.shuffle(idx)
        test += idx[:want[l]]
        train += idx[want[l]:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def load_data(data_dir, seed, split="sklearn"):
    from unidecode import unidecode
    files = sorted(f for f in os.listdir(data_dir) if f.endswith(".txt"))
    labels = [f[:-4] for f in files]
    names, targets, skipped = [], [], 0
    for li, f in enumerate(files):
        with open(os.path.join(data_dir, f), encoding="utf-8") as fh:
            for line in fh:
                s = unidecode(line.rstrip())
                if not s:
                    continue
                if any(ch not in VOCAB for ch in s):
                    skipped += 1
                    continue
                names.append(s)
                targets.append(li)
    if split == "rnnc":
        train, test = rnnc_split(targets, len(labels), 0.1, seed)
    else:
        from sklearn.model_selection import train_test_split
        idx = list(range(len(names)))
        train, test = train_test_split(idx, test_size=0.1, stratify=targets, random_state=seed,
                                       shuffle=True)
    return labels, names, targets, train, test, skipped


def make_models(torch, nn, V, H, C):
    class RNN(nn.Module):
        """The tutorial's cell: in2hidden and in2output on concat(x, h)."""

        def __init__(self):
            super().__init__()
            self.hidden_size = H
            self.in2hidden = nn.Linear(V + H, H)
            self.in2output = nn.Linear(V + H, C)

        def forward(self, x, hidden):
            combined = torch.cat((x, hidden), 1)
            hidden = torch.sigmoid(self.in2hidden(combined))
            output = self.in2output(combined)
            return output, hidden

        def init_hidden(self, n=1):  # n rows of noise: one per name
            return nn.init.kaiming_uniform_(torch.empty(n, self.hidden_size))

        def logits(self, line, hidden=None):  # line: [T, 1, V]
            if hidden is None:
                hidden = self.init_hidden()
            for i in range(line.size(0)):
                output, hidden = self(line[i], hidden)
            return output

        def packed_logits(self, packed, h0=None):
            """[B, C] logits of a PackedSequence, rows in the batch's own
            order. h0 [B, H], row b for name b (default: a fresh draw). At
            step t the batch_sizes[t] names still running are the first rows
            of the sorted batch; names that end at t drop out of h and their
            output at t is their logits."""
            data, sizes = packed.data, packed.batch_sizes.tolist()
            if h0 is None:
                h0 = self.init_hidden(sizes[0])
            h = h0 if packed.sorted_indices is None else h0[packed.sorted_indices]
            done, at = [], 0  # done: logits of the names that ended, last ones first
            for t, n in enumerate(sizes):
                output, h = self(data[at:at + n], h[:n])
                at += n
                running = sizes[t + 1] if t + 1 < len(sizes) else 0
                if running < n:
                    done.append(output[running:n])
            out = torch.cat(done[::-1])
            return out if packed.unsorted_indices is None else out[packed.unsorted_indices]

    class GRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(V, H, num_layers=2)
            self.fc = nn.Linear(H, C)

        def forward(self, line):  # [T, 1, V] -> [1, C]
            out, _ = self.gru(line)
            return self.fc(out[-1])

        def logits(self, line):
            return self(line)

        def packed_logits(self, packed):
            _, hn = self.gru(packed)  # [layers, B, H], in the batch's own order
            return self.fc(hn[-1])

    return RNN, GRU


def cpu_seconds():
    return time.process_time()


def one_hot(torch, s):
    """[len(s), V]: row t is character t's one-hot vector."""
    t = torch.zeros(len(s), len(VOCAB))
    for i, ch in enumerate(s):
        t[i, VOCAB.index(ch)] = 1
    return t


def run_model(kind, args, torch, nn, data):
    labels, names, targets, train, test, _ = data
    V, H, C = len(VOCAB), 256, len(labels)
    torch.manual_seed(args.seed)
    RNN, GRU = make_models(torch, nn, V, H, C)
    model = RNN() if kind == "rnn" else GRU()
    clip = kind == "rnn"
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    tensors = [one_hot(torch, s).unsqueeze(1) for s in names]  # [T, 1, V] each
    ys = [torch.tensor([y]) for y in targets]
    order = list(train)
    rng = random.Random(args.seed)
    ntrain = min(args.limit, len(order)) if args.limit else len(order)

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in test:
                correct += int(model.logits(tensors[i]).argmax(1).item() == targets[i])
        model.train()
        return correct

    train_wall = train_cpu = 0.0
    trained = chars = 0
    acc = 0.0
    for ep in range(args.epochs):
        rng.shuffle(order)
        model.train()
        total = 0.0
        t0, c0 = time.perf_counter(), cpu_seconds()
        last = t0
        for k in range(ntrain):
            i = order[k]
            line, y = tensors[i], ys[i]
            opt.zero_grad()
            loss = crit(model.logits(line), y)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item()
            chars += line.size(0)
            now = time.perf_counter()
            if now - last > 10:
                print(f"reference.py {kind}: epoch {ep + 1}/{args.epochs}: {k + 1}/{ntrain} names, "
                      f"{(k + 1) / (now - t0):.0f} names/s", file=sys.stderr, flush=True)
                last = now
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        train_wall += wall
        train_cpu += cpu
        trained += ntrain
        correct = evaluate()
        acc = correct / len(test)
        emit({"event": "epoch", "impl": "pytorch", "graph": kind, "epoch": ep + 1, "names": ntrain,
              "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4),
              "names_per_s": round(ntrain / wall, 1), "mean_loss": round(total / ntrain, 4),
              "test_accuracy": round(acc, 4), "correct": correct, "test_names": len(test)})

    model.eval()
    passes, cpasses = [], []
    with torch.no_grad():
        for _ in range(args.infer_reps):
            t0, c0 = time.perf_counter(), cpu_seconds()
            for i in test:
                model.logits(tensors[i])
            passes.append(time.perf_counter() - t0)
            cpasses.append(cpu_seconds() - c0)
    infer_us = 1e6 * statistics.median(passes) / len(test) if passes else 0
    infer_cpu_us = 1e6 * statistics.median(cpasses) / len(test) if cpasses else 0
    nparams = sum(p.numel() for p in model.parameters())
    emit({"event": "summary", "impl": "pytorch", "graph": kind, "epochs": args.epochs,
          "train_names": trained, "train_seconds": round(train_wall, 3),
          "train_cpu_seconds": round(train_cpu, 3),
          "names_per_s": round(trained / train_wall, 1) if train_wall else 0,
          "cpu_names_per_s": round(trained / train_cpu, 1) if train_cpu else 0,
          "mean_train_len": round(chars / trained, 3) if trained else 0,
          "test_accuracy": round(acc, 4), "infer_us_per_name": round(infer_us, 2),
          "infer_cpu_us_per_name": round(infer_cpu_us, 2),
          "mean_test_len": round(sum(len(names[i]) for i in test) / len(test), 3),
          "compile_ms": None, "params": nparams,
          "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          "torch": torch.__version__, "threads": torch.get_num_threads()})


def run_batched(kind, args, torch, nn, data):
    """The minibatch recipe (see the module's docstring)."""
    from torch.nn.utils.rnn import pack_sequence
    labels, names, targets, train, test, _ = data
    V, H, C, B = len(VOCAB), 256, len(labels), args.batch
    torch.manual_seed(args.seed)
    RNN, GRU = make_models(torch, nn, V, H, C)
    model = RNN() if kind == "rnn" else GRU()
    clip = kind == "rnn"
    crit = nn.CrossEntropyLoss()  # the mean over the batch
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    tensors = [one_hot(torch, s) for s in names]  # [T, V] each
    ys = torch.tensor(targets)
    order = list(train)
    rng = random.Random(args.seed)
    ntrain = min(args.limit, len(order)) if args.limit else len(order)

    def batch_logits(idx):
        return model.packed_logits(pack_sequence([tensors[i] for i in idx], enforce_sorted=False))

    def evaluate():
        """Correct test names; the rnn's noise comes from a fork of the
        random state, so evaluating does not change the training."""
        model.eval()
        correct = 0
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for k in range(0, len(test), B):
                idx = test[k:k + B]
                correct += int((batch_logits(idx).argmax(1) == ys[idx]).sum())
        model.train()
        return correct

    train_wall = train_cpu = 0.0  # the training clock: evaluations excluded
    target = None  # (wall, cpu, names trained) when the target accuracy was first reached
    trained = nbatches = chars = 0
    acc = 0.0
    for ep in range(args.epochs):
        rng.shuffle(order)
        total = 0.0
        ep_wall = ep_cpu = 0.0
        t0, c0 = time.perf_counter(), cpu_seconds()
        last = t0
        for k in range(0, ntrain, B):
            idx = order[k:min(k + B, ntrain)]
            opt.zero_grad()
            loss = crit(batch_logits(idx), ys[idx])
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
            chars += sum(tensors[i].size(0) for i in idx)
            nbatches += 1
            done = k + len(idx)
            if target is None and nbatches % args.eval_every == 0 and done < ntrain:
                now, cnow = time.perf_counter(), cpu_seconds()
                ep_wall += now - t0
                ep_cpu += cnow - c0
                correct = evaluate()
                if correct / len(test) >= args.target_accuracy:
                    target = (train_wall + ep_wall, train_cpu + ep_cpu, trained + done)
                t0, c0 = time.perf_counter(), cpu_seconds()
            now = time.perf_counter()
            if now - last > 10:
                print(f"reference.py {kind} batch {B}: epoch {ep + 1}/{args.epochs}: {done}/{ntrain} "
                      f"names", file=sys.stderr, flush=True)
                last = now
        ep_wall += time.perf_counter() - t0
        ep_cpu += cpu_seconds() - c0
        train_wall += ep_wall
        train_cpu += ep_cpu
        trained += ntrain
        correct = evaluate()
        acc = correct / len(test)
        if target is None and acc >= args.target_accuracy:
            target = (train_wall, train_cpu, trained)
        emit({"event": "epoch", "impl": "pytorch", "graph": kind, "batch": B, "lr": args.lr,
              "epoch": ep + 1, "names": ntrain, "seconds": round(ep_wall, 4),
              "cpu_seconds": round(ep_cpu, 4), "names_per_s": round(ntrain / ep_wall, 1),
              "mean_loss": round(total / ntrain, 4), "test_accuracy": round(acc, 4),
              "correct": correct, "test_names": len(test),
              "target_seconds": round(target[0], 3) if target else None})

    model.eval()
    infer_blocks = []  # blocks of B names (the training batch) and of 1024 (rnnc eval's)
    for block in dict.fromkeys((B, 1024)):
        passes, cpasses = [], []
        with torch.no_grad():
            for _ in range(args.infer_reps):
                t0, c0 = time.perf_counter(), cpu_seconds()
                for k in range(0, len(test), block):
                    batch_logits(test[k:k + block])
                passes.append(time.perf_counter() - t0)
                cpasses.append(cpu_seconds() - c0)
        if passes:
            infer_blocks.append({"block": block,
                                 "names_per_s": round(len(test) / statistics.median(passes), 1),
                                 "cpu_names_per_s": round(len(test) / statistics.median(cpasses), 1)})
    emit({"event": "summary", "impl": "pytorch", "graph": kind, "batch": B, "lr": args.lr,
          "epochs": args.epochs, "train_names": trained, "batches": nbatches,
          "train_seconds": round(train_wall, 3), "train_cpu_seconds": round(train_cpu, 3),
          "names_per_s": round(trained / train_wall, 1) if train_wall else 0,
          "cpu_names_per_s": round(trained / train_cpu, 1) if train_cpu else 0,
          "mean_train_len": round(chars / trained, 3) if trained else 0,
          "test_accuracy": round(acc, 4), "target_accuracy": args.target_accuracy,
          "eval_every": args.eval_every,
          "target_seconds": round(target[0], 3) if target else None,
          "target_cpu_seconds": round(target[1], 3) if target else None,
          "target_names": target[2] if target else None,
          "infer_names_per_s": infer_blocks[0]["names_per_s"] if infer_blocks else 0,
          "infer_cpu_names_per_s": infer_blocks[0]["cpu_names_per_s"] if infer_blocks else 0,
          "infer": infer_blocks,
          "params": sum(p.numel() for p in model.parameters()),
          "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          "split": args.split, "torch": torch.__version__, "threads": torch.get_num_threads()})


def main():
    args = parse_args()
    set_threads_env(args.threads)
    need_modules()
    if args.check:
        import torch
        print(f"reference.py: torch {torch.__version__}", file=sys.stderr)
        return
    import torch
    import torch.nn as nn
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    data = load_data(args.data, args.seed, args.split)
    labels, names, targets, train, test, skipped = data
    print(f"reference.py: torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{len(names)} names ({skipped} skipped), {len(train)} train / {len(test)} test "
          f"({args.split} split); {args.epochs} epoch(s) of {args.limit or len(train)} names, "
          f"batch {args.batch or 1}, lr {args.lr:g}", file=sys.stderr, flush=True)
    for kind in (["rnn", "gru"] if args.model == "both" else [args.model]):
        if args.batch is None:
            run_model(kind, args, torch, nn, data)
        else:
            run_batched(kind, args, torch, nn, data)


if __name__ == "__main__":
    main()
