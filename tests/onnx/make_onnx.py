#!/usr/bin/env python3
"""Writes the PyTorch models that tests/test_onnx.c imports (python3-torch,
python3-onnx from Debian 12; run from the repository root):

  tests/onnx/gru.onnx     the seed's GRU: nn.GRU(59, 256, num_layers=2) and
                          Linear(256, 18) on the last output (bench/reference.py's)
  tests/onnx/lstm.onnx    nn.LSTM(59, 32, num_layers=2) and Linear(32, 18)
  tests/onnx/emb.onnx     nn.Embedding(59, 16), nn.GRU(16, 32), Linear(32, 18): input 'ids'
                          [T, 1] int64 (character indices)
  tests/onnx/bigru.onnx   nn.GRU(59, 32, bidirectional=True) and Linear(64, 18) on
                          cat(h_n[-2], h_n[-1]) (each direction's final state)
  tests/onnx/bilstm.onnx  nn.LSTM(59, 16, num_layers=2, bidirectional=True) and
                          Linear(32, 18) on the last output (out[-1])
  tests/onnx/logits.safetensors
                          each model's logits for the names below, float32
                          ("gru", "lstm", "emb", "bigru", "bilstm", "revgru":
                          [len(NAMES), 18])

exported by torch.onnx.export at opset 14 with a dynamic sequence length
(input 'line' [T, 1, 59], one-hot characters; output 'logits' [1, 18]).
Weights are PyTorch's default initialization from a fixed seed, so the
files are the same on every run of the same PyTorch.

  tests/onnx/revgru.onnx  a GRU node with direction 'reverse' (onnx.helper; the weights of a
                          torch nn.GRU(59, 32)), a Relu and a Gemm on its final state; the
                          logits are PyTorch's GRU run over the reversed name
  tests/onnx/scan.onnx    an Elman RNN as an ONNX Scan (onnx.helper): state h [3], X [T, 1, 2],
                          out = (h_T G) F2 + c (a MatMul and a Gemm with transB 0: weights
                          rnnc stores transposed); scan.safetensors: an X [5, 2] and numpy's out
  tests/onnx/scan_reverse.onnx
                          the same Scan with scan_input_directions and
                          scan_output_directions [1] (the sequence read from its last
                          row), out from the scan output's row 0; scan_reverse.safetensors
  tests/onnx/bigru_node.onnx, bilstm_node.onnx
                          a bidirectional GRU node (linear_before_reset 0, layout 0) and LSTM
                          node (peepholes, layout 1), every input given, against numpy's
                          transcription of ONNX's equations (*.safetensors: X and out)
  tests/fuzz/onnx_corpus/*.onnx
                          small models for the fuzzer's corpus: copies of scan_reverse.onnx
                          and the two node models, and a bidirectional GRU and LSTM as
                          torch.onnx.export writes them, hidden 3
  tests/onnx/errors/*.onnx
                          small models (onnx.helper) that rnnc import must
                          refuse, each naming a node, its op and attribute:
                          see errors() below and tests/test_onnx.c
"""
import json
import os
import shutil
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


class BiGRU(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.gru = nn.GRU(V, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, C)

    def forward(self, line):
        _, h_n = self.gru(line)
        return self.fc(torch.cat((h_n[-2], h_n[-1]), dim=-1))


class BiLSTM(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.lstm = nn.LSTM(V, hidden, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, C)

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
    model("unsupported_op", [gru, sq, helper.make_node("LeakyRelu", ["H"], ["Y"], name="leaky")],
          [axes0])
    # attributes rnnc does not support
    model("activations", [helper.make_node("GRU", ["X", "W", "R"], ["Yall", "Yh"], name="gru_relu",
                                           hidden_size=3, activations=["Relu", "Tanh"]),
                          sq, helper.make_node("Identity", ["H"], ["Y"], name="id")], [axes0])
    model("clip", [helper.make_node("GRU", ["X", "W", "R"], ["Yall", "Yh"], name="gru_clip",
                                    hidden_size=3, clip=1.0),
                   sq, helper.make_node("Identity", ["H"], ["Y"], name="id")], [axes0])
    # a bidirectional output [T, 2, 1, 3] transposed to [T, 3, 1, 2]: the
    # directions' features interleaved, which rnnc's vectors cannot hold
    W2 = numpy_helper.from_array(rng.standard_normal((2, 9, 2)).astype(np.float32), "W2")
    R2 = numpy_helper.from_array(rng.standard_normal((2, 9, 3)).astype(np.float32), "R2")
    model("transpose", [helper.make_node("GRU", ["X", "W2", "R2"], ["Yall"], name="bigru",
                                         hidden_size=3, direction="bidirectional"),
                        helper.make_node("Transpose", ["Yall"], ["Yt"], name="interleave",
                                         perm=[0, 3, 2, 1]),
                        helper.make_node("Gather", ["Yt", "minus1"], ["Y"], name="last", axis=0)],
          [W2, R2, numpy_helper.from_array(np.array(-1, dtype=np.int64), "minus1")])
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


def revgru(path):
    """A GRU node with direction 'reverse' holding a torch nn.GRU(59, 32)'s weights (ONNX's gate
    order z, r, h; linear_before_reset 1, as PyTorch computes), and a Gemm on the Relu of the
    mean of its Y_h and Y's row 0 (both the state after reading the name from its last
    character to its first). Returns PyTorch's logits: the GRU run over each name reversed."""
    torch.manual_seed(5)
    H = 32
    gru, fc = nn.GRU(V, H), nn.Linear(H, C)

    def zrh(t):
        t = t.detach().numpy()
        return np.concatenate([t[H:2 * H], t[:H], t[2 * H:]])

    arrays = [(zrh(gru.weight_ih_l0)[None], "W"), (zrh(gru.weight_hh_l0)[None], "R"),
              (np.concatenate([zrh(gru.bias_ih_l0), zrh(gru.bias_hh_l0)])[None], "B"),
              (fc.weight.detach().numpy(), "fc.weight"), (fc.bias.detach().numpy(), "fc.bias"),
              (np.array(0.5, np.float32), "half")]
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in arrays]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "axes0"),
              numpy_helper.from_array(np.array(0, np.int64), "row0")]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("GRU", ["line", "W", "R", "B"], ["Y", "Y_h"], name="gru_rev", hidden_size=H,
                          direction="reverse", linear_before_reset=1),
         helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"], name="squeeze_h"),
         helper.make_node("Gather", ["Y", "row0"], ["y0"], name="row0", axis=0),
         helper.make_node("Squeeze", ["y0", "axes0"], ["h0"], name="squeeze_y0"),
         helper.make_node("Add", ["h", "h0"], ["sum"], name="add"),
         helper.make_node("Mul", ["sum", "half"], ["mean"], name="mean"),
         helper.make_node("Relu", ["mean"], ["relu"], name="relu"),
         helper.make_node("Gemm", ["relu", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)],
        "revgru", [helper.make_tensor_value_info("line", f, ["T", 1, V])],
        [helper.make_tensor_value_info("logits", f, [1, C])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_onnx.py")
    onnx.checker.check_model(m)
    onnx.save(m, path)
    with torch.no_grad():
        return torch.cat([fc(torch.relu(gru(torch.flip(one_hot(s), [0]))[1][0])) for s in NAMES]).contiguous()


def scan(here, reverse=False):
    """h' = tanh(W x + U h + b) as a Scan whose body also emits h' as a scan output; reverse: the
    Scan reads X from its last row and stacks its scan output the same way (directions [1]), and
    out is computed from the scan output's row 0, the state after reading every row."""
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
    dirs = dict(scan_input_directions=[1], scan_output_directions=[1]) if reverse else {}
    final = [helper.make_node("Gather", ["ys", "row0"], ["y0"], name="row0", axis=0),
             helper.make_node("Unsqueeze", ["y0", "ax0"], ["h1"], name="unsqueeze")] if reverse else \
        [helper.make_node("Unsqueeze", ["hT", "ax0"], ["h1"], name="unsqueeze")]
    if reverse:
        inits.append(numpy_helper.from_array(np.array(0, np.int64), "row0"))
    g = helper.make_graph(
        [helper.make_node("Squeeze", ["X", "ax1"], ["xs"], name="squeeze"),
         helper.make_node("Scan", ["h0", "xs"], ["hT", "ys"], name="scan", body=body, num_scan_inputs=1,
                          **dirs),
         *final,
         helper.make_node("MatMul", ["h1", "G"], ["z"], name="matmul"),
         helper.make_node("Gemm", ["z", "F2", "bias"], ["out"], name="gemm", transB=0, alpha=0.5)],
        "scan", [helper.make_tensor_value_info("X", f, ["T", 1, 2])],
        [helper.make_tensor_value_info("out", f, [1, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_onnx.py")
    onnx.checker.check_model(m)
    name = "scan_reverse" if reverse else "scan"
    onnx.save(m, os.path.join(here, name + ".onnx"))
    X = rng.standard_normal((5, 2)).astype(np.float32)
    h = np.zeros(3, np.float64)
    for x in (X[::-1] if reverse else X):
        h = np.tanh(W.astype(np.float64) @ x + U @ h + b)
    st_write(os.path.join(here, name + ".safetensors"),
             {"X": torch.from_numpy(X),
              "out": torch.from_numpy((0.5 * (h @ G) @ F2 + c).astype(np.float32))}, {})


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def onnx_gru(X, W, R, B, h, reverse):
    """ONNX's GRU equations (gates z, r, h; linear_before_reset 0), one direction, float64:
    Y [T, H], row t the state after step t (reverse: after rows T-1 .. t)."""
    H = R.shape[1]
    Wb, Rb = B[:3 * H], B[3 * H:]
    Y = np.zeros((len(X), H))
    for t in (reversed(range(len(X))) if reverse else range(len(X))):
        gi, gh = W @ X[t] + Wb, R[:2 * H] @ h + Rb[:2 * H]
        z, r = sigmoid(gi[:H] + gh[:H]), sigmoid(gi[H:2 * H] + gh[H:])
        n = np.tanh(gi[2 * H:] + R[2 * H:] @ (r * h) + Rb[2 * H:])
        Y[t] = h = (1 - z) * n + z * h
    return Y


def onnx_lstm(X, W, R, B, P, h, c, reverse):
    """ONNX's LSTM equations (gates i, o, f, c; peepholes P = i, o, f), one direction, float64:
    Y and the cell states, [T, H] each."""
    H = R.shape[1]
    Y, Cs = np.zeros((len(X), H)), np.zeros((len(X), H))
    for t in (reversed(range(len(X))) if reverse else range(len(X))):
        g = W @ X[t] + R @ h + B[:4 * H] + B[4 * H:]
        i = sigmoid(g[:H] + P[:H] * c)
        f = sigmoid(g[2 * H:3 * H] + P[2 * H:] * c)
        c = f * c + i * np.tanh(g[3 * H:])
        o = sigmoid(g[H:2 * H] + P[H:2 * H] * c)
        h = o * np.tanh(c)
        Y[t], Cs[t] = h, c
    return Y, Cs


def node_tests(here):
    """Bidirectional GRU and LSTM nodes (onnx.helper) against numpy's transcription of ONNX's
    equations: every input given (B, nonzero initial states, peepholes), layouts 0 and 1, and
    out = concat(Y_h, Y's first row, Y's last row) (+ Y_c for the LSTM), each flattened."""
    rng = np.random.default_rng(7)
    f, T, I, H = TensorProto.FLOAT, 5, 3, 4
    X = rng.standard_normal((T, I))
    i64 = lambda v, n: numpy_helper.from_array(np.array(v, np.int64), n)
    for name, G in [("bigru_node", 3), ("bilstm_node", 4)]:
        lstm, layout = G == 4, 1 if G == 4 else 0
        W, R = rng.standard_normal((2, G * H, I)), rng.standard_normal((2, G * H, H))
        B = rng.standard_normal((2, 2 * G * H))
        h0, c0, P = rng.standard_normal((2, H)), rng.standard_normal((2, H)), rng.standard_normal((2, 3 * H))
        # [num_directions, batch, H], or [batch, num_directions, H] with layout 1
        state = (lambda a: a[None]) if layout else (lambda a: a[:, None])
        arrays = [(W, "W"), (R, "R"), (B, "B"), (state(h0), "initial_h")]
        ins = ["X", "W", "R", "B", "", "initial_h"]
        if lstm:
            arrays += [(state(c0), "initial_c"), (P, "P")]
            ins += ["initial_c", "P"]
        inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in arrays]
        inits += [i64([1, -1], "flat"), i64(0, "first"), i64(-1, "last")]
        outs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
        nodes = [helper.make_node("LSTM" if lstm else "GRU", ins, outs, name=name, hidden_size=H,
                                  direction="bidirectional", layout=layout)]
        parts = []
        for o in outs[1:]:
            nodes.append(helper.make_node("Reshape", [o, "flat"], [o + "_flat"]))
            parts.append(o + "_flat")
        for row in ["first", "last"]:  # Y: [T, 2, 1, H], or [1, T, 2, H] with layout 1
            nodes += [helper.make_node("Gather", ["Y", row], ["Y_" + row], axis=layout),
                      helper.make_node("Reshape", ["Y_" + row, "flat"], ["Y_" + row + "_flat"])]
            parts.append("Y_" + row + "_flat")
        nodes.append(helper.make_node("Concat", parts, ["out"], axis=1))
        xshape = [1, "T", I] if layout else ["T", 1, I]
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("X", f, xshape)],
                              [helper.make_tensor_value_info("out", f, [1, 2 * H * len(parts)])],
                              initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="make_onnx.py")
        onnx.checker.check_model(m)
        onnx.save(m, os.path.join(here, name + ".onnx"))
        W, R, B, h0, c0, P, X32 = (a.astype(np.float32).astype(np.float64) for a in (W, R, B, h0, c0, P, X))
        if lstm:
            (Yf, Cf), (Yb, Cb) = (onnx_lstm(X32, W[d], R[d], B[d], P[d], h0[d], c0[d], d == 1) for d in (0, 1))
        else:
            Yf, Yb = (onnx_gru(X32, W[d], R[d], B[d], h0[d], d == 1) for d in (0, 1))
        Y = np.concatenate([Yf, Yb], axis=1)  # [T, 2H]: each row forward, then reverse
        out = [Yf[-1], Yb[0]] + ([Cf[-1], Cb[0]] if lstm else []) + [Y[0], Y[-1]]
        st_write(os.path.join(here, name + ".safetensors"),
                 {"X": torch.from_numpy(X.astype(np.float32)),
                  "out": torch.from_numpy(np.concatenate(out).astype(np.float32))}, {})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    torch.set_num_threads(1)
    logits = {}
    for seed, (name, cls, enc) in enumerate([("gru", GRU, one_hot), ("lstm", LSTM, one_hot),
                                             ("emb", Emb, indices), ("bigru", BiGRU, one_hot),
                                             ("bilstm", BiLSTM, one_hot)]):
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
    logits["revgru"] = revgru(os.path.join(here, "revgru.onnx"))
    st_write(os.path.join(here, "logits.safetensors"), logits, {"names": ",".join(NAMES)})
    scan(here)
    scan(here, reverse=True)
    node_tests(here)
    errors(here)
    # the fuzzer's seeds: the small models of the directions' paths, and bidirectional
    # layers as torch.onnx.export writes them, hidden 3
    corpus = os.path.join(here, "..", "fuzz", "onnx_corpus")
    for name in ["scan_reverse", "bigru_node", "bilstm_node"]:
        shutil.copy(os.path.join(here, name + ".onnx"), corpus)
    for seed, (name, cls) in enumerate([("bigru_h3", BiGRU), ("bilstm_h3", BiLSTM)]):
        torch.manual_seed(seed)
        path = os.path.join(corpus, name + ".onnx")
        torch.onnx.export(cls(3).eval(), (one_hot("Abc"),), path, opset_version=14,
                          input_names=["line"], output_names=["logits"], dynamic_axes={"line": {0: "T"}})


if __name__ == "__main__":
    main()
