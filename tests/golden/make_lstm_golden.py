#!/usr/bin/python3
"""tests/golden/make_lstm_golden.py: PyTorch goldens for the LSTM, a bidirectional GRU and an embedding model.

    /usr/bin/python3 tests/golden/make_lstm_golden.py [--out DIR]

Writes into DIR (default: this directory; README.md says what each tensor
is):

  lstm_seed42.safetensors   nn.LSTM(59, 256, num_layers=2) + Linear(256, 18)
                            on the top layer's last output (graphs/lstm.nn):
                            what gru_seed42.safetensors holds for the GRU
  lstm_batch.safetensors    the same LSTM, two Adam steps of the batched
                            recipe (make_batch_golden.py's, lr 2e-3)
  bigru_seed42.safetensors  nn.GRU(59, 32, num_layers=2, bidirectional=True)
                            + Linear(64, 18) on cat(h_n[-2], h_n[-1])
  embgru_seed42.safetensors nn.Embedding(59, 16) + nn.GRU(16, 32)
                            + Linear(32, 18) on the last output

Each *_seed42 file: the model right after torch.manual_seed(42) (PyTorch's
default init), the logits of the 20 names of gru_seed42.safetensors, the
cross entropy of its training name (Dostoevsky, Russian), every gradient
of that loss, and every parameter after one Adam(lr=1e-3) step. The
recipe is checked first on the GRU: this script's seed42 code, run on
bench/reference.py's GRU, reproduces gru_seed42.safetensors (bit for bit
with two threads, as that file was made; within float32 rounding on one).

Checks and prints, for every file, the float32 results against the same
computation in float64 from the same parameters (what float32 rounding
alone changes: README.md's tolerances come from it), and for the
bidirectional GRU that h_n holds the outputs README.md says.

Needs Debian's python3-torch only (run it with /usr/bin/python3); one
thread. The output is the same byte for byte from run to run.
"""
import argparse
import copy
import json
import os
import struct

import make_batch_golden as mbg  # sets one thread before torch loads
from make_batch_golden import EPS, HERE, LABELS, ROOT, V, VOCAB, reference, st_read, st_write

import torch
import torch.nn as nn

C = len(LABELS)
H = 256              # the LSTM's hidden size
SEED42_LR = 1e-3     # the seed42 files' one Adam step
BATCH_LR = 2e-3      # the batched recipe of the gru (issue 13), for the LSTM too
BIGRU_H = 32         # the bidirectional GRU's hidden size, per direction
EMB_E, EMB_H = 16, 32  # the embedding model's embedding width and hidden size


# ---------------------------------------------------------------- the models
# Each: logits(line) with line the one-hot name [T, 1, V] -> [1, C].

class LSTM(nn.Module):
    """graphs/lstm.nn: h0 = c0 = zeros, gates i, f, g, o."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(V, H, num_layers=2)
        self.fc = nn.Linear(H, C)

    def logits(self, line):
        out, _ = self.lstm(line)
        return self.fc(out[-1])

    def packed_logits(self, packed):
        _, (hn, _) = self.lstm(packed)  # [layers, B, H], in the batch's own order
        return self.fc(hn[-1])


class BiGRU(nn.Module):
    """Two bidirectional layers; layer 1 reads cat(forward, backward) of
    layer 0 at each step. The head reads the last layer's two final states:
    h_n[-2], the forward direction's state after the last character (=
    out[-1, :, :BIGRU_H]), and h_n[-1], the backward direction's state after
    the first character (= out[0, :, BIGRU_H:]), concatenated in that order."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(V, BIGRU_H, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(2 * BIGRU_H, C)

    def logits(self, line):
        out, hn = self.gru(line)
        feats = torch.cat((hn[-2], hn[-1]), dim=1)
        same = torch.cat((out[-1, :, :BIGRU_H], out[0, :, BIGRU_H:]), dim=1)
        assert torch.equal(feats, same), "h_n is not where README.md says"
        return self.fc(feats)


class EmbGRU(nn.Module):
    """An embedding row per character (nn.Embedding's [V, E] table) into a
    one-layer GRU, h0 = zeros; the head on the last output."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, EMB_E)
        self.gru = nn.GRU(EMB_E, EMB_H)
        self.fc = nn.Linear(EMB_H, C)

    def logits(self, line):
        idx = line.argmax(dim=2)  # [T, 1]: the characters' indices
        out, _ = self.gru(self.emb(idx))
        return self.fc(out[-1])


# ---------------------------------------------------------------- seed42 files

def golden_meta():
    """The metadata of gru_seed42.safetensors: its names, labels,
    vocabulary and training name, the ones every seed42 file uses."""
    with open(os.path.join(HERE, "gru_seed42.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    assert meta["labels"] == ",".join(LABELS) and meta["vocab"] == VOCAB
    return meta


def seed42(model, meta):
    """The tensors of a seed42 file for model (fresh from mbg.seeded): its
    parameters, logits.i of meta's names, loss and grad.<param> of the
    training name, step1.<param> after one Adam step. Also returns the
    logits and gradients in float64, from the same parameters."""
    model64 = copy.deepcopy(model).double()
    t = {n: p.detach().clone() for n, p in model.state_dict().items()}
    out64 = {}
    names = meta["names"].split("\n")
    for i, name in enumerate(names):
        x = reference.one_hot(torch, name).unsqueeze(1)
        with torch.no_grad():
            t[f"logits.{i}"] = model.logits(x).reshape(C)
            out64[f"logits.{i}"] = model64.logits(x.double()).reshape(C)
    x = reference.one_hot(torch, meta["train_name"]).unsqueeze(1)
    y = torch.tensor([LABELS.index(meta["train_label"])])
    opt = torch.optim.Adam(model.parameters(), lr=SEED42_LR, betas=(0.9, 0.999), eps=EPS)
    crit = nn.CrossEntropyLoss()
    for m, xs, into in ((model, x, t), (model64, x.double(), out64)):
        loss = crit(m.logits(xs), y)
        m.zero_grad()
        loss.backward()
        into["loss"] = loss.detach().reshape(1).clone()
        for n, p in m.named_parameters():
            into["grad." + n] = p.grad.clone()
    opt.step()
    for n, p in model.named_parameters():
        t["step1." + n] = p.detach().clone()
    return t, out64


def report(t, t64):
    """Prints float32 against float64 (max |diff| for logits and loss,
    relative to the tensor's largest magnitude for gradients)."""
    logits = max(mbg.max_diff(t[k], t64[k]) for k in t64 if k.startswith("logits."))
    print(f"  float32 vs float64: logits {logits:.2e}, loss {mbg.max_diff(t['loss'], t64['loss']):.2e}")
    for k in t64:
        if k.startswith("grad."):
            print(f"    {k[5:]:22s} grad rel {mbg.rel_diff(t[k], t64[k]):.2e}")


def write_seed42(kind, model, meta, out_dir, extra):
    t, t64 = seed42(model, meta)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{kind}: {nparams:,} parameters, loss {t['loss'].item():.7f}, torch {torch.__version__}")
    report(t, t64)
    md = {k: meta[k] for k in ("names", "labels", "vocab", "train_name", "train_label", "step")}
    md.update(model=kind, torch=torch.__version__, generator="tests/golden/make_lstm_golden.py")
    md.update(extra)
    # The order of gru_seed42.safetensors: parameters, logits, gradients,
    # parameters after the step, loss.
    order = sorted(t, key=lambda k: (k == "loss", k.startswith("step1."), k.startswith("grad."),
                                     k.startswith("logits.")))
    path = os.path.join(out_dir, f"{kind}_seed42.safetensors")
    st_write(path, {k: t[k] for k in order}, md)
    print(f"  wrote {os.path.relpath(path, ROOT)}: {len(t)} tensors, {os.path.getsize(path):,} bytes")


def check_recipe(meta):
    """seed42() on bench/reference.py's GRU gives gru_seed42.safetensors.
    That file was made with two OpenBLAS threads, which sum the products in
    another order than one thread does (with two, seed42() reproduces it bit
    for bit): so within float32 rounding, with Adam's first step amplifying
    a gradient difference dg by up to lr / eps where |g| is near eps."""
    _, GRU = reference.make_models(torch, nn, V, H, C)
    t, _ = seed42(mbg.seeded(GRU), meta)
    want = st_read(os.path.join(HERE, "gru_seed42.safetensors"))
    assert set(t) == set(want), set(t) ^ set(want)
    out = max(mbg.max_diff(t[k], want[k]) for k in want if k.startswith("logits.") or k == "loss")
    grad = max(mbg.rel_diff(t[k], want[k]) for k in want if k.startswith("grad."))
    step = max(((t[k].double() - want[k]).abs()
                - SEED42_LR / EPS * (t["grad." + k[6:]].double() - want["grad." + k[6:]]).abs()).max().item()
               for k in want if k.startswith("step1."))
    print(f"seed42 recipe on the GRU vs gru_seed42.safetensors: logits and loss {out:.1e}, "
          f"gradients {grad:.1e} relative, step beyond Adam's amplification {step:.1e}")
    assert out <= 1e-7 and grad <= 1e-6 and step <= 1e-7


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=HERE, help="output directory (default: tests/golden)")
    args = p.parse_args()
    torch.set_num_threads(1)
    mbg.check_names(os.path.join(ROOT, "data", "names"))
    meta = golden_meta()
    check_recipe(meta)
    write_seed42("lstm", mbg.seeded(LSTM), meta, args.out, {"h0": "zeros (h0 and c0)"})
    # lstm_batch checks its initial parameters against the lstm_seed42 just
    # written (the same seed, the same init).
    mbg.make("lstm", mbg.seeded(LSTM), args.out, BATCH_LR, None, seed42_dir=args.out)
    write_seed42("bigru", mbg.seeded(BiGRU), meta, args.out, {
        "h0": "zeros", "hidden": str(BIGRU_H),
        "head": "fc(cat(h_n[-2], h_n[-1])): the last layer's forward final state "
                "(out[-1, :H]) then its backward final state (out[0, H:])"})
    write_seed42("embgru", mbg.seeded(EmbGRU), meta, args.out, {
        "h0": "zeros", "embedding": str(EMB_E), "hidden": str(EMB_H),
        "head": "fc(out[-1])"})


if __name__ == "__main__":
    main()
