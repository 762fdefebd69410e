#!/usr/bin/env python3
"""Writes the PyTorch models that tests/test_onnx.c imports (python3-torch,
python3-onnx from Debian 12; run from the repository root):

  tests/onnx/gru.onnx     the seed's GRU: nn.GRU(59, 256, num_layers=2) and
                          Linear(256, 18) on the last output (bench/reference.py's)
  tests/onnx/lstm.onnx    nn.LSTM(59, 32, num_layers=2) and Linear(32, 18)
  tests/onnx/emb.onnx     nn.Embedding(59, 16), nn.GRU(16, 32), Linear(32, 18): input 'ids'
                          [T, 1] int64 (character indices)
  tests/onnx/logits.safetensors
                          each model's logits for the names below, float32
                          ("gru", "lstm", "emb": [len(NAMES), 18])

exported by torch.onnx.export at opset 14 with a dynamic sequence length
(input 'line' [T, 1, 59], one-hot characters; output 'logits' [1, 18]).
Weights are PyTorch's default initialization from a fixed seed, so the
files are the same on every run of the same PyTorch.

  tests/onnx/scan.onnx    an Elman RNN as an ONNX Scan (onnx.helper): state h [3], X [T, 1, 2],
                          out = (h_T G) F2 + c (a MatMul and a Gemm with transB 0: weights
                          rnnc stores transposed); scan.safetensors: an X [5, 2] and numpy's out
  tests/onnx/errors/*.onnx
                          small models (onnx.helper) that rnnc import must
                          refuse, each naming a node, its op and attribute:
                          see errors() below and tests/test_onnx.c
"""
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import torch
import torch.nn as nn

V, C = 59, 18
VOCAB = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'"
NAMES = ["Dostoevsky", "Nakamura", "O'Brien", "Schmidt", "Slusarski", "Li", "Abandonato"]


class GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(V, 256, num_layers=2)
        self.fc = nn.Linear(256, C)

    def forward(self, line):  # [T, 1, V] -> [1, C]
        out, _ = self.gru(line)
        return self.fc(out[-1])


class LSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(V, 32, num_layers=2)
        self.fc = nn.Linear(32, C)

    def forward(self, line):
        out, _ = self.lstm(line)
        return self.fc(out[-1])


class Emb(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.gru = nn.GRU(16, 32)
        self.fc = nn.Linear(32, C)

    def forward(self, ids):  # [T, 1] -> [1, C]
        out, _ = self.gru(self.emb(ids))
        return self.fc(out[-1])


def indices(s):
    return torch.tensor([[VOCAB.index(ch)] for ch in s])


def one_hot(s):
    x = torch.zeros(len(s), 1, V)
    for t, ch in enumerate(s):
        x[t, 0, VOCAB.index(ch)] = 1
    return x


def st_write(path, tensors, metadata):
    """A safetensors file of float32 tensors (rnnc's runtime/safetensors.h)."""
    header, chunks, at = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [at, at + len(data)]}
        chunks.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def errors(here):
    """One small GRU model per refusal: X [T, 1, 2], hidden 3."""
    d = os.path.join(here, "errors")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.standard_normal((1, 9, 2)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.standard_normal((1, 9, 3)).astype(np.float32), "R")
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 1, 2])

    def model(name, nodes, inits=(), out="Y"):
        g = helper.make_graph(nodes, name, [X], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              initializer=[W, R, *inits])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_onnx.py")
        onnx.save(m, os.path.join(d, name + ".onnx"))

    gru = helper.make_node("GRU", ["X", "W", "R"], ["Yall", "Yh"], name="gru", hidden_size=3)
    sq = helper.make_node("Squeeze", ["Yh", "axes0"], ["H"], name="squeeze")
    axes0 = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0")
    # an op the graph language has no equivalent of
    model("unsupported_op", [gru, sq, helper.make_node("Relu", ["H"], ["Y"], name="relu")], [axes0])
    # an attribute rnnc does not support
    model("reverse", [helper.make_node("GRU", ["X", "W", "R"], ["Yall", "Yh"], name="gru_rev",
                                       hidden_size=3, direction="reverse"),
                      sq, helper.make_node("Identity", ["H"], ["Y"], name="id")], [axes0])
    model("unknown_attribute", [gru, sq, helper.make_node("Softmax", ["H"], ["Y"], name="soft",
                                                           axis=-1, temperature=2)], [axes0])
    # a shape that depends on the sequence length: zeros [T, 1, 3] as initial_h
    model("dynamic_shape", [
        helper.make_node("Shape", ["X"], ["s"], name="shape"),
        helper.make_node("Constant", [], ["zero"], name="c0",
                         value=numpy_helper.from_array(np.array([0], dtype=np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["t"], name="gather_t"),
        helper.make_node("Concat", ["t", "one", "three"], ["hs"], name="concat", axis=0),
        helper.make_node("ConstantOfShape", ["hs"], ["h0"], name="zeros_T"),
        helper.make_node("GRU", ["X", "W", "R", "", "", "h0"], ["Yall", "Yh"], name="gru",
                         hidden_size=3),
        sq, helper.make_node("Identity", ["H"], ["Y"], name="id")],
        [axes0, numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
         numpy_helper.from_array(np.array([3], dtype=np.int64), "three")])
    # a data type rnnc does not read
    half = numpy_helper.from_array(np.ones(3, dtype=np.float16), "half")
    model("float16", [gru, sq, helper.make_node("Add", ["H", "half"], ["Y"], name="add_half")],
          [axes0, half])


def scan(here):
    """h' = tanh(W x + U h + b) as a Scan whose body also emits h' as a scan output."""
    rng = np.random.default_rng(2)
    W, U = rng.standard_normal((3, 2)), rng.standard_normal((3, 3))
    b, G = rng.standard_normal(3), rng.standard_normal((3, 4))
    F2, c = rng.standard_normal((4, 4)), rng.standard_normal(4)
    W, U, b, G, F2, c = (a.astype(np.float32) for a in (W, U, b, G, F2, c))
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("MatMul", ["W", "x_t"], ["a"]), helper.make_node("MatMul", ["U", "h"], ["c"]),
         helper.make_node("Add", ["a", "c"], ["s"]), helper.make_node("Add", ["s", "b"], ["s2"]),
         helper.make_node("Tanh", ["s2"], ["h2"]), helper.make_node("Identity", ["h2"], ["y"])],
        "body", [helper.make_tensor_value_info("h", f, [3]), helper.make_tensor_value_info("x_t", f, [2])],
        [helper.make_tensor_value_info("h2", f, [3]), helper.make_tensor_value_info("y", f, [3])])
    inits = [numpy_helper.from_array(x, n) for x, n in
             [(W, "W"), (U, "U"), (b, "b"), (G, "G"), (F2, "F2"), (c, "bias"),
              (np.zeros(3, np.float32), "h0"), (np.array([1], np.int64), "ax1"),
              (np.array([0], np.int64), "ax0")]]
    g = helper.make_graph(
        [helper.make_node("Squeeze", ["X", "ax1"], ["xs"], name="squeeze"),
         helper.make_node("Scan", ["h0", "xs"], ["hT", "ys"], name="scan", body=body, num_scan_inputs=1),
         helper.make_node("Unsqueeze", ["hT", "ax0"], ["h1"], name="unsqueeze"),
         helper.make_node("MatMul", ["h1", "G"], ["z"], name="matmul"),
         helper.make_node("Gemm", ["z", "F2", "bias"], ["out"], name="gemm", transB=0, alpha=0.5)],
        "scan", [helper.make_tensor_value_info("X", f, ["T", 1, 2])],
        [helper.make_tensor_value_info("out", f, [1, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_onnx.py")
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(here, "scan.onnx"))
    X = rng.standard_normal((5, 2)).astype(np.float32)
    h = np.zeros(3, np.float64)
    for x in X:
        h = np.tanh(W.astype(np.float64) @ x + U @ h + b)
    st_write(os.path.join(here, "scan.safetensors"),
             {"X": torch.from_numpy(X),
              "out": torch.from_numpy((0.5 * (h @ G) @ F2 + c).astype(np.float32))}, {})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    torch.set_num_threads(1)
    logits = {}
    for seed, (name, cls, enc) in enumerate([("gru", GRU, one_hot), ("lstm", LSTM, one_hot),
                                             ("emb", Emb, indices)]):
        torch.manual_seed(seed)
        model = cls().eval()
        path = os.path.join(here, name + ".onnx")
        inp = "ids" if enc is indices else "line"
        torch.onnx.export(model, (enc("Abc"),), path, opset_version=14,
                          input_names=[inp], output_names=["logits"],
                          dynamic_axes={inp: {0: "T"}})
        onnx.checker.check_model(onnx.load(path))
        with torch.no_grad():
            logits[name] = torch.cat([model(enc(s)) for s in NAMES]).contiguous()
        print(f"{path}: {os.path.getsize(path)} bytes", file=sys.stderr)
    st_write(os.path.join(here, "logits.safetensors"), logits, {"names": ",".join(NAMES)})
    scan(here)
    errors(here)


if __name__ == "__main__":
    main()
