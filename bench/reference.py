#!/usr/bin/python3
"""bench/reference.py: the reference recipe of ../shared/DESIGN.md in PyTorch.

    /usr/bin/python3 bench/reference.py [--model rnn|gru|both] [--epochs N]
        [--limit N] [--quick] [--seed S] [--infer-reps R] [--data DIR]

Trains the names classifier the way PyTorch users do it (eager mode, batch
1, one optimizer step per name) and times it:

  rnn  the char-RNN tutorial's hand-built cell: in2hidden / in2output Linear
       layers on concat(x_t, h), sigmoid; h0 = kaiming_uniform noise drawn
       for every name; clip_grad_norm_(1.0) before every step
  gru  nn.GRU(59, 256, num_layers=2) and Linear(256, 18) on the top layer's
       last output; h0 = zeros; no clipping

Both: cross entropy, Adam(lr=1e-3), 2 epochs, the training set reshuffled
every epoch. Data: data/names/*.txt in file-name order (the labels), each
line stripped of trailing whitespace, unidecode'd, names with a character
outside the 59-character vocabulary skipped; a stratified 10% test split
(sklearn's train_test_split(stratify=...)): 18,065 train / 2,008 test.

Timed: each epoch's training loop (forward, backward, clipping, Adam: the
model work only; names are turned into one-hot tensors once, before any
timing, as rnnc turns them into indices once), and inference (model.eval(),
torch.no_grad(), one name at a time over the test split; R passes, the
median pass). Both wall-clock and process CPU time are recorded (the
CPU time is inflated less when other processes share the machine). Not timed:
imports, data loading, the evaluation after each epoch.

Prints one JSON object a line on stdout ({"event": "epoch"|"summary", ...},
the same keys as bench/driver.c); progress goes to stderr. One thread:
torch.set_num_threads(1), OPENBLAS/OMP/MKL_NUM_THREADS=1.

Needs Debian's python3-torch, python3-sklearn, python3-unidecode and
libopenblas0-pthread (use /usr/bin/python3). Without them it says how to
install them and exits with status 77, which bench/run takes as "skip
PyTorch".
"""
import argparse
import json
import os
import random
import resource
import statistics
import sys
import time

EXIT_SKIP = 77
VOCAB = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'"

# One thread, before torch (and OpenBLAS) load. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE would override OpenBLAS's detection of this CPU.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
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
    p.add_argument("--check", action="store_true",
                   help="only check that torch, sklearn and unidecode import (status 0, or 77)")
    a = p.parse_args()
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


def load_data(data_dir, seed):
    from unidecode import unidecode
    from sklearn.model_selection import train_test_split
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
    idx = list(range(len(names)))
    train, test = train_test_split(idx, test_size=0.1, stratify=targets, random_state=seed, shuffle=True)
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

        def init_hidden(self):
            return nn.init.kaiming_uniform_(torch.empty(1, self.hidden_size))

        def logits(self, line):  # line: [T, 1, V]
            hidden = self.init_hidden()
            for i in range(line.size(0)):
                output, hidden = self(line[i], hidden)
            return output

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

    return RNN, GRU


def cpu_seconds():
    return time.process_time()


def run_model(kind, args, torch, nn, data):
    labels, names, targets, train, test, _ = data
    V, H, C = len(VOCAB), 256, len(labels)
    torch.manual_seed(args.seed)
    RNN, GRU = make_models(torch, nn, V, H, C)
    model = RNN() if kind == "rnn" else GRU()
    clip = kind == "rnn"
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one_hot(s):
        t = torch.zeros(len(s), 1, V)
        for i, ch in enumerate(s):
            t[i, 0, VOCAB.index(ch)] = 1
        return t

    tensors = [one_hot(s) for s in names]
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


def main():
    args = parse_args()
    need_modules()
    if args.check:
        import torch
        print(f"reference.py: torch {torch.__version__}", file=sys.stderr)
        return
    import torch
    import torch.nn as nn
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    data = load_data(args.data, args.seed)
    labels, names, targets, train, test, skipped = data
    print(f"reference.py: torch {torch.__version__}, {torch.get_num_threads()} thread; "
          f"{len(names)} names ({skipped} skipped), {len(train)} train / {len(test)} test; "
          f"{args.epochs} epoch(s) of {args.limit or len(train)} names", file=sys.stderr, flush=True)
    for kind in (["rnn", "gru"] if args.model == "both" else [args.model]):
        run_model(kind, args, torch, nn, data)


if __name__ == "__main__":
    main()
