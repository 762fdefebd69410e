#!/usr/bin/python3
"""tests/golden/make_batch_golden.py: PyTorch's batched training, two Adam steps.

    /usr/bin/python3 tests/golden/make_batch_golden.py [--out DIR]

Writes rnn_batch.safetensors and gru_batch.safetensors (README.md says what
each tensor is) into DIR (default: this directory). Both models start from
torch.manual_seed(42) and PyTorch's default init, the parameters of
rnn_seed42.safetensors / gru_seed42.safetensors (checked bit for bit, so
the new files do not repeat them), and take two Adam steps, each on its own
batch (BATCHES below), with the minibatch recipe of bench/reference.py
--batch (whose models this script imports): the batch packed with
pack_sequence(enforce_sorted=False), each name's logits from its own last
character, loss = the mean of the names' cross entropies, rnn.nn: a
kaiming_uniform h0 row drawn per name per step and clip_grad_norm_(1.0)
on the gradient of that mean.

Checks and prints: the packed logits against each name run alone, the
gradient of the mean against the mean of the names' own gradients, and
the float32 run against the same two steps in float64 (what float32
rounding alone changes: the tolerances in README.md come from it).

Needs Debian's python3-torch only (run it with /usr/bin/python3); one
thread. The output is the same byte for byte from run to run.
"""
import argparse
import copy
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import reference  # noqa: E402  (bench/reference.py: the models and the vocabulary)

reference.set_threads_env(1)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.utils.rnn import pack_sequence  # noqa: E402

VOCAB = reference.VOCAB
V, H = len(VOCAB), 256
LABELS = ["Arabic", "Chinese", "Czech", "Dutch", "English", "French", "German", "Greek", "Irish",
          "Italian", "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Scottish",
          "Spanish", "Vietnamese"]

# Batch 1: every length 1 to 15 and five repeated lengths, not in length
# order. Batch 2: other names, 2 to 20 characters (the longest in the data).
# (name, label); MADE_UP names are not in data/names: there is no name of
# one character, and no name with '.', ':' or ';'.
BATCHES = [
    [("Mueller", "German"), ("Q", "Chinese"), ("Schwarzenberg", "Dutch"), ("Abe", "Japanese"),
     ("Nguyen", "Vietnamese"), ("Alexandropoulos", "Greek"), ("To", "Vietnamese"),
     ("Kowalski", "Polish"), ("De la fuente", "Spanish"), ("Yoon", "Korean"),
     ("Tanaka", "Japanese"), ("Thistlethwaite", "English"), ("Quach", "Vietnamese"),
     ("Villanueva", "Spanish"), ("O'Brien", "Irish"), ("Ivanov", "Russian"),
     ("Blazejovsky", "Czech"), ("Haddad", "Arabic"), ("Bartonova", "Czech"),
     ("Nakamura", "Japanese")],
    [("Kaiser", "German"), ("Shirinsky-Shikhmatov", "Russian"), ("Li", "Korean"),
     ("Xy.:;z", "Scottish"), ("Fernandes", "Portuguese"), ("Rossi", "Italian"),
     ("Smith", "English")],
]
MADE_UP = {"Q", "Xy.:;z"}
LR = {"rnn": 1e-3, "gru": 2e-3}  # rnn.nn's own setting; the gru's batched recipe (issue 13)
CLIP = {"rnn": 1.0, "gru": None}
EPS = 1e-8


# ---------------------------------------------------------------- safetensors

def st_read(path):
    """{name: float32 tensor} of a safetensors file (F32 tensors only)."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", name
        a, b = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(blob[8 + n + a:8 + n + b]),
                                     dtype=torch.float32).reshape(t["shape"])
    return out


def st_write(path, tensors, metadata):
    """tensors: {name: float32 or int32 tensor}, written in this order:
    8-byte little-endian header length, the JSON header (padded with spaces
    to 8 bytes), the raw little-endian data."""
    assert sys.byteorder == "little"
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    header, chunks, at = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().tobytes()  # this host's order: little-endian
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [at, at + len(data)]}
        chunks.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the recipe

def check_names(data_dir):
    """Every name not MADE_UP is in data/names with its label; the made-up
    ones are not; every name is in the vocabulary."""
    have = set()
    for label in LABELS:
        with open(os.path.join(data_dir, label + ".txt"), encoding="utf-8") as f:
            have.update((line.rstrip(), label) for line in f)
    for batch in BATCHES:
        for name, label in batch:
            assert all(ch in VOCAB for ch in name), name
            assert ((name, label) in have) == (name not in MADE_UP), (name, label)
    lengths = sorted(len(name) for name, _ in BATCHES[0])
    assert set(lengths) == set(range(1, 16)) and len(lengths) == 20


def one_hots(batch, dtype):
    return [reference.one_hot(torch, name).to(dtype) for name, _ in batch]


def two_steps(kind, model, lr, clip, h0s=None):
    """Two Adam steps of the batched recipe on BATCHES at learning rate lr,
    clipping the gradient norm to clip (None: no clipping); model's dtype is
    float32 or float64. h0s: the rnn's noise of each step (None: draw it,
    one kaiming_uniform row per name). Returns what each step saw and did."""
    dtype = next(model.parameters()).dtype
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=EPS)
    crit = nn.CrossEntropyLoss()
    steps = []
    for k, batch in enumerate(BATCHES):
        seqs = one_hots(batch, dtype)
        ys = torch.tensor([LABELS.index(label) for _, label in batch])
        packed = pack_sequence(seqs, enforce_sorted=False)
        s = {"targets": ys}
        if kind == "rnn":
            h0 = (torch.cat([model.init_hidden(1) for _ in batch]) if h0s is None else h0s[k])
            s["h0"] = h0 = h0.to(dtype)
            logits = model.packed_logits(packed, h0)
            alone = [model.logits(x.unsqueeze(1), h0[b:b + 1]) for b, x in enumerate(seqs)]
        else:
            logits = model.packed_logits(packed)
            alone = [model.logits(x.unsqueeze(1)) for x in seqs]
        loss = crit(logits, ys)
        params = list(model.parameters())
        # The mean of the names' own gradients, each name alone at batch 1
        # (None: a name of one character does not reach the rnn's in2hidden).
        mean_alone = [torch.zeros_like(p) for p in params]
        for b, out in enumerate(alone):
            grads = torch.autograd.grad(crit(out, ys[b:b + 1]), params, allow_unused=True)
            for acc, g in zip(mean_alone, grads):
                if g is not None:
                    acc += g / len(batch)
        opt.zero_grad()
        loss.backward()
        s["logits"] = logits.detach().clone()
        s["alone"] = torch.cat(alone).detach()
        s["losses"] = nn.functional.cross_entropy(logits, ys, reduction="none").detach()
        s["loss"] = loss.detach().reshape(1).clone()
        s["grad"] = {n: p.grad.clone() for n, p in model.named_parameters()}
        s["mean_alone"] = dict(zip((n for n, _ in model.named_parameters()), mean_alone))
        if clip is not None:
            s["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), clip).reshape(1)
        opt.step()
        s["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        steps.append(s)
    moments = {n: {key: opt.state[p][key].clone() for key in ("exp_avg", "exp_avg_sq")}
               for n, p in model.named_parameters()}
    return steps, moments


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def rel_diff(a, b):
    return max_diff(a, b) / max(b.double().abs().max().item(), 1e-30)


def seeded(factory):
    """factory() right after torch.manual_seed(42): PyTorch's default init
    of the seed42 files (and the random stream the rnn's h0 draws follow)."""
    torch.manual_seed(42)
    return factory()


def make(kind, model, out_dir, lr, clip, seed42_dir=HERE):
    """Writes KIND_batch.safetensors into out_dir: two steps of the batched
    recipe from model, fresh from seeded(), whose parameters must be those
    of seed42_dir/KIND_seed42.safetensors. model has logits(line [T, 1, V])
    and packed_logits(packed) (the rnn: also an h0 argument, and
    init_hidden)."""
    init = st_read(os.path.join(seed42_dir, f"{kind}_seed42.safetensors"))
    for n, p in model.state_dict().items():
        assert torch.equal(p, init[n]), f"{n} differs from {kind}_seed42.safetensors"
    model64 = copy.deepcopy(model).double()
    steps, moments = two_steps(kind, model, lr, clip)
    steps64, moments64 = two_steps(kind, model64, lr, clip, [s.get("h0") for s in steps])
    pnames = [n for n, _ in model.named_parameters()]
    # Parameters after step 1 and Adam's moments only for a model under 1 MB
    # a copy (the rnn; the gru is 2.6 MB): step 2's parameters depend on all
    # of them.
    small = sum(p.numel() for p in model.parameters()) * 4 < 1e6

    print(f"{kind}: lr {lr:g}, torch {torch.__version__}")
    for k, (s, s64) in enumerate(zip(steps, steps64), 1):
        print(f"  step {k}: {len(BATCHES[k - 1])} names, mean loss {s['loss'].item():.7f}"
              + (f", gradient norm {s['grad_norm'].item():.6f}" if "grad_norm" in s else ""))
        d = max_diff(s["logits"], s["alone"])
        print(f"    packed logits vs each name alone: max |diff| {d:.2e}")
        assert d <= 1e-6, "packed sequences changed the logits"
        d = max(rel_diff(s["grad"][n], s["mean_alone"][n]) for n in pnames)
        print(f"    gradient of the mean vs mean of the names' gradients: max rel diff {d:.2e}")
        assert d <= 1e-5
        print(f"    float32 vs float64: logits {max_diff(s['logits'], s64['logits']):.2e}, "
              f"loss {max_diff(s['loss'], s64['loss']):.2e}"
              + (f", grad_norm {max_diff(s['grad_norm'], s64['grad_norm']):.2e}"
                 if "grad_norm" in s else ""))
        for n in pnames:
            print(f"      {n:18s} grad rel {rel_diff(s['grad'][n], s64['grad'][n]):.2e}, "
                  f"params after the step {max_diff(s['params'][n], s64['params'][n]):.2e}")
    # Adam amplifies a gradient difference dg of a weight whose gradient is
    # near eps by up to lr / eps a step (README.md): the bound the test uses.
    ratio = lr / EPS
    for n in pnames:
        d1 = (steps[0]["grad"][n].double() - steps64[0]["grad"][n]).abs()
        d2 = (steps[1]["grad"][n].double() - steps64[1]["grad"][n]).abs()
        d = (steps[1]["params"][n].double() - steps64[1]["params"][n]).abs()
        bound = 2e-6 + ratio * (2.25 * d1 + 1.25 * d2)
        print(f"    {n:18s} after step 2: {int((d > 2e-6).sum())} weights past 2e-6, "
              f"worst |diff| / bound {(d / bound).max().item():.3f}")
        assert (d <= bound).all()
        for key in ("exp_avg", "exp_avg_sq"):
            m, m64 = moments[n][key], moments64[n][key]
            print(f"      {key:10s} rel {rel_diff(m, m64):.2e}")

    t = {}
    for k, (s, batch) in enumerate(zip(steps, BATCHES), 1):
        p = f"step{k}."
        t[p + "chars"] = torch.tensor([VOCAB.index(ch) for name, _ in batch for ch in name],
                                      dtype=torch.int32)
        t[p + "lengths"] = torch.tensor([len(name) for name, _ in batch], dtype=torch.int32)
        t[p + "targets"] = s["targets"].to(torch.int32)
        if "h0" in s:
            t[p + "h0"] = s["h0"]
        t[p + "logits"] = s["logits"]
        t[p + "losses"] = s["losses"]
        t[p + "loss"] = s["loss"]
        if "grad_norm" in s:
            t[p + "grad_norm"] = s["grad_norm"]
        for n in pnames:
            t[p + "grad." + n] = s["grad"][n]
        if small or k == 2:
            for n in pnames:
                t[p + n] = s["params"][n]
    if small:
        for key in ("exp_avg", "exp_avg_sq"):
            for n in pnames:
                t[f"{key}.{n}"] = moments[n][key]
    meta = {
        "model": kind,
        "init": f"the parameters of {kind}_seed42.safetensors (torch.manual_seed(42), default init)",
        "names1": "\n".join(name for name, _ in BATCHES[0]),
        "names2": "\n".join(name for name, _ in BATCHES[1]),
        "labels": ",".join(LABELS), "vocab": VOCAB,
        "optimizer": f"Adam(lr={lr:g}, betas=(0.9,0.999), eps=1e-8), one step per batch",
        "loss": "mean over the batch of the names' cross entropies",
        "clip": f"clip_grad_norm_({clip:.1f}) of the gradient of the mean loss" if clip else "none",
        "h0": "kaiming_uniform, one row per name per step (stepK.h0)" if kind == "rnn" else "zeros",
        "torch": torch.__version__,
        "generator": os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),  # the script run
    }
    path = os.path.join(out_dir, f"{kind}_batch.safetensors")
    st_write(path, t, meta)
    print(f"  wrote {os.path.relpath(path, ROOT)}: {len(t)} tensors, {os.path.getsize(path):,} bytes")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=HERE, help="output directory (default: tests/golden)")
    args = p.parse_args()
    torch.set_num_threads(1)
    check_names(os.path.join(ROOT, "data", "names"))
    RNN, GRU = reference.make_models(torch, nn, V, H, len(LABELS))
    make("rnn", seeded(RNN), args.out, LR["rnn"], CLIP["rnn"])
    make("gru", seeded(GRU), args.out, LR["gru"], CLIP["gru"])


if __name__ == "__main__":
    main()
