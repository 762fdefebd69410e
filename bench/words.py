#!/usr/bin/python3
"""bench/words.py: the PyTorch baseline of the words data set (README).

    /usr/bin/python3 bench/words.py WORDS.tsv [--epochs N] [--batch B]
        [--lr X] [--seed S] [--threads N]

Trains what `rnnc train graphs/gru-data.nn --data WORDS.tsv --batch B --lr X`
trains, the way a PyTorch user would: nn.GRU(V, 256, num_layers=2) and
Linear(256, C) on the top layer's last output, minibatches of B words
packed with pack_sequence, the mean cross entropy, Adam; the training set
reshuffled every epoch. The data as rnnc reads it: TSV records (word,
label), labels in byte order, each word NFC-normalized; rnnc's split
(runtime/data.c's data_split, ported in bench/reference.py: the same test
words as rnnc with the same --seed, 10% per language) and rnnc's
vocabulary (the unknown slot, then the training words' characters in code
point order). Prints the test accuracy after each epoch and the time.

Needs Debian's python3-torch. WORDS.tsv: scripts/make-words.
"""
import argparse
import os
import random
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import make_models, rnnc_split  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_sequence
    torch.set_num_threads(args.threads)

    texts, names = [], []
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            text, label = line.rstrip("\r\n").split("\t")
            texts.append(unicodedata.normalize("NFC", text.rstrip()))
            names.append(label)
    labels = sorted(set(names), key=lambda s: s.encode())
    targets = [labels.index(n) for n in names]
    train, test = rnnc_split(targets, len(labels), 0.1, args.seed)
    chars = sorted({c for i in train for c in texts[i]})
    index = {c: k + 1 for k, c in enumerate(chars)}  # 0: the unknown slot
    V, H, C, B = len(chars) + 1, 256, len(labels), args.batch

    def one_hot(s):
        t = torch.zeros(len(s), V)
        for k, c in enumerate(s):
            t[k, index.get(c, 0)] = 1
        return t

    tensors = [one_hot(s) for s in texts]
    ys = torch.tensor(targets)
    torch.manual_seed(args.seed)
    _, GRU = make_models(torch, nn, V, H, C)
    model = GRU()
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = random.Random(args.seed)
    order = list(train)

    def logits(idx):
        return model.packed_logits(pack_sequence([tensors[i] for i in idx], enforce_sorted=False))

    print(f"{len(texts)} words, {C} languages, {len(train)} train / {len(test)} test, "
          f"vocabulary {V - 1} characters and the unknown slot; batch {B}, lr {args.lr}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    seconds = 0.0
    for ep in range(args.epochs):
        rng.shuffle(order)
        t0 = time.perf_counter()
        total = 0.0
        model.train()
        for k in range(0, len(order), B):
            idx = order[k:k + B]
            opt.zero_grad()
            loss = crit(logits(idx), ys[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            correct = sum(int((logits(test[k:k + B]).argmax(1) == ys[test[k:k + B]]).sum())
                          for k in range(0, len(test), B))
        print(f"epoch {ep + 1}: mean training loss {total / len(order):.4f}, test accuracy "
              f"{100 * correct / len(test):.2f}% ({correct}/{len(test)}), {seconds:.1f} s training",
              flush=True)


if __name__ == "__main__":
    main()
