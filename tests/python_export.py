#!/usr/bin/python3
"""tools/milscreen_torch.py for Python users, against `milscreen score` on the same images.

Trains two small checkpoints on a tiny synthetic plate set (Noisy-AND with the softmax head;
GM r=2.5 with the sigmoid head), scores the test shard with milscreen, and checks:
  1. from_checkpoint builds the network from the checkpoint alone (config text inside it) and
     predict() on the shard's raw uint16 images gives score's mil_prob, fc_prob, maps and
     pred; class names come from the checkpoint;
  2. the checkpoint's normalisation is applied by default: normalise=False on the same raw
     images is far off, and on images normalised by hand agrees again;
  3. TorchScript: the exported module, traced at another input size and loaded with
     torch.jit.load in a process that never imports milscreen_torch, gives score's outputs;
  4. ONNX: the exported model passes onnx.checker, has dynamic N, H, W, and evaluated by a
     small reference interpreter written here from the ONNX operator specification (no
     onnxruntime in Debian 12) gives score's outputs at a size other than the traced one;
     also for a GM network whose every logit is below -200 (log-sigmoid exported stably);
  5. the command line (milscreen_torch.py export) writes both files, and a failed export
     leaves no file under the name asked for.

usage: python_export.py MILSCREEN SOURCE_DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

MS, ROOT = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
import milscreen_torch as mt  # noqa: E402

# score computes in float32 like the twin, but in another order (oneDNN's convolutions, its
# own reductions): the end-to-end test (pipeline_e2e.py) holds both to 1e-4 of the largest
# value, and so does this one
TOL = 1e-4
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail else ""))
    if not ok:
        failures.append(what)
    return ok


def run(*args, **kw):
    r = subprocess.run([MS, *args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(f"milscreen {' '.join(args)} failed")
    return r


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def same_as_score(what, got, ref):
    """got: (mil_prob, fc_prob, maps[, pred]) against the score output's datasets."""
    names = ("mil_prob", "fc_prob", "maps")
    for name, g in zip(names, got):
        e = rel(g, ref[name])
        check(f"{what}: {name} equals score's", e <= TOL, f"{e:.1e}")
    if len(got) > 3:
        check(f"{what}: pred equals score's", np.array_equal(got[3], ref["pred"]))


# ---- a reference interpreter for the ONNX operators the exported network uses -------------
# Semantics from the ONNX operator specification (opset 13); torch.nn.functional does the
# arithmetic of the two windowed operators, with every attribute taken from the graph.
def onnx_run(model, feeds):
    import onnx
    from onnx import numpy_helper

    def attrs(n):
        return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}

    def sym(pads, what):
        if pads[:len(pads) // 2] != pads[len(pads) // 2:]:
            raise NotImplementedError(f"{what}: asymmetric pads {pads}")
        return tuple(pads[:len(pads) // 2])

    def axes_of(n, a, ins, x):
        ax = a.get("axes")
        if ax is None and len(ins) > 1 and ins[1] is not None:   # ReduceSum-13: an input
            ax = ins[1].tolist()
        return [d % x.dim() for d in ax] if ax is not None else list(range(x.dim()))

    env = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
           for t in model.graph.initializer}
    env.update({k: torch.from_numpy(v) for k, v in feeds.items()})
    unary = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Exp": torch.exp, "Log": torch.log,
             "Neg": torch.neg, "Abs": torch.abs}
    binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div,
              "Min": torch.minimum, "Max": torch.maximum}
    for n in model.graph.node:
        a = attrs(n)
        ins = [env[i] if i else None for i in n.input]
        op = n.op_type
        if op == "Constant":
            out = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
        elif op in unary:
            out = unary[op](ins[0])
        elif op in binary:
            out = binary[op](ins[0], ins[1])
        elif op == "Conv":
            out = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                           tuple(a.get("strides", [1, 1])),
                           sym(list(a.get("pads", [0, 0, 0, 0])), op),
                           tuple(a.get("dilations", [1, 1])), a.get("group", 1))
        elif op == "MaxPool":
            out = F.max_pool2d(ins[0], tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])),
                               sym(list(a.get("pads", [0, 0, 0, 0])), op),
                               tuple(a.get("dilations", [1, 1])), bool(a.get("ceil_mode", 0)))
        elif op == "AveragePool":
            out = F.avg_pool2d(ins[0], tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1])),
                               sym(list(a.get("pads", [0, 0, 0, 0])), op),
                               bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0)))
        elif op == "Clip":
            lo = ins[1] if len(ins) > 1 else None
            hi = ins[2] if len(ins) > 2 else None
            out = ins[0]
            out = torch.maximum(out, lo) if lo is not None else out
            out = torch.minimum(out, hi) if hi is not None else out
        elif op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceLogSumExp"):
            x = ins[0]
            ax = axes_of(n, a, ins, x)
            keep = bool(a.get("keepdims", 1))
            if op == "ReduceMean":
                out = x.mean(ax, keepdim=keep)
            elif op == "ReduceSum":
                out = x.sum(ax, keepdim=keep)
            elif op == "ReduceMax":
                out = x.amax(ax, keepdim=keep)
            else:
                out = torch.logsumexp(x, ax, keepdim=keep)
        elif op == "Shape":
            out = torch.tensor(list(ins[0].shape), dtype=torch.int64)
        elif op == "Slice":
            x, starts, ends = ins[0], ins[1].tolist(), ins[2].tolist()
            given = lambda i: len(ins) > i and ins[i] is not None  # noqa: E731
            axes = ins[3].tolist() if given(3) else list(range(len(starts)))
            steps = ins[4].tolist() if given(4) else [1] * len(starts)
            idx = [slice(None)] * x.dim()
            for s0, e0, ax, st in zip(starts, ends, axes, steps):
                idx[ax] = slice(s0, min(e0, x.shape[ax]) if e0 >= 0 else e0, st)
            out = x[tuple(idx)]
        elif op == "Concat":
            out = torch.cat(ins, a["axis"])
        elif op == "Unsqueeze":
            out = ins[0]
            for ax in sorted(ins[1].tolist()):
                out = out.unsqueeze(ax)
        elif op == "Squeeze":
            out = ins[0]
            axes = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else \
                [i for i, n in enumerate(out.shape) if n == 1]
            for ax in sorted((x % out.dim() for x in axes), reverse=True):
                out = out.squeeze(ax)
        elif op == "Reshape":
            shape = [ins[0].shape[i] if d == 0 else d for i, d in enumerate(ins[1].tolist())]
            out = ins[0].reshape(shape)
        elif op == "Gemm":
            A, B = ins[0], ins[1]
            A = A.t() if a.get("transA", 0) else A
            B = B.t() if a.get("transB", 0) else B
            out = a.get("alpha", 1.0) * (A @ B)
            if len(ins) > 2 and ins[2] is not None:
                out = out + a.get("beta", 1.0) * ins[2]
        elif op == "Softmax":
            out = torch.softmax(ins[0], a.get("axis", -1))
        else:
            raise NotImplementedError(f"ONNX operator {op} (add it to this interpreter)")
        env[n.output[0]] = out
    return [env[o.name].numpy() for o in model.graph.output]


# the paper's network with 4 to 8 filters per conv: trains in seconds
TINY = ["conv1.filters=4", "conv2.filters=4", "conv3.filters=4", "conv4.filters=8",
        "conv5.filters=8", "conv6.filters=8", "train.crop=0", "train.batch=4", "train.epochs=2",
        "train.seed=3"]
# (case, synth options, config overrides): single-label 3 channels; multi-label 2 channels
CASES = [("noisy_and softmax", ["--preset", "tiny", "--sites", "2"], ["net.classes=3"]),
         ("gm sigmoid", ["--preset", "yeast-like", "--size", "96x96", "--sites", "1"],
          ["net.channels=2", "net.classes=17", "mil.pool=gm", "mil.r=2.5", "fc.head=sigmoid"])]

with tempfile.TemporaryDirectory(prefix="ms-pyexport-") as d:
    os.chdir(d)
    paper = os.path.join(ROOT, "configs", "paper.ini")
    for case, synth, extra in CASES:
        tag = case.split()[0]
        data = f"data-{tag}"
        run("synth", *synth, "--out", data, "--seed", "4", "--treatments", "2", "--replicates",
            "1", "--threads", "2")
        with h5py.File(f"{data}/test.h5", "r") as s:
            images = s["images"][()]                             # (N, C, H, W) uint16
        sets = [a for kv in TINY + extra + [f"data.train={data}/train.h5"] for a in ("--set", kv)]
        run("train", "--config", paper, "--run", f"run-{tag}", *sets)
        cks = sorted(f for f in os.listdir(f"run-{tag}") if f.startswith("ckpt-"))
        ck = os.path.join(f"run-{tag}", cks[-1])
        run("score", "--checkpoint", ck, "--out", f"scores-{tag}", "--set", "score.masks=false",
            f"{data}/test.h5")
        with h5py.File(f"scores-{tag}/test.scores.h5", "r") as f:
            ref = {k: f[k][()] for k in ("mil_prob", "fc_prob", "maps", "pred")}
            score_classes = [x.decode() if isinstance(x, bytes) else str(x)
                             for x in f.attrs.get("class_names", [])]

        # 1. the checkpoint alone, raw images
        p = mt.from_checkpoint(ck)
        out = p.predict(images, batch=4)
        same_as_score(f"{case}: predict", [out[k] for k in ("mil_prob", "fc_prob", "maps", "pred")],
                      ref)
        K = ref["mil_prob"].shape[1]
        check(f"{case}: class names from the checkpoint",
              len(p.class_names) == K and (not score_classes or p.class_names == score_classes),
              f"{p.class_names[:3]}... / {score_classes[:3]}...")
        one = p.predict(images[0])
        check(f"{case}: predict on one (C, H, W) image",
              rel(one["mil_prob"], ref["mil_prob"][:1]) <= TOL)

        # 2. normalisation by default
        raw = mt.from_checkpoint(ck, normalise=False)
        e_raw = rel(raw.predict(images)["maps"], ref["maps"])
        check(f"{case}: without the checkpoint's normalisation the maps are far off",
              e_raw > 100 * TOL, f"{e_raw:.1e}")
        ckd = mt.read_checkpoint(ck)
        std = np.where(ckd["std"] > 0, ckd["std"], 1)
        xn = (images.astype(np.float32) - ckd["mean"][None, :, None, None]) / \
            std[None, :, None, None]
        e_n = rel(raw.predict(xn)["maps"], ref["maps"])
        check(f"{case}: normalise=False on images normalised by hand agrees", e_n <= TOL,
              f"{e_n:.1e}")

        # 3. TorchScript, traced at 100x116, run at the shard's size without milscreen_torch
        H, W = images.shape[2:]
        ts = p.export_torchscript(f"{tag}.pt", size=(100, 116))
        np.save("images.npy", images)
        code = ("import sys, numpy as np, torch\n"
                "assert 'milscreen_torch' not in sys.modules\n"
                "m = torch.jit.load(sys.argv[1])\n"
                "x = torch.from_numpy(np.load('images.npy').astype(np.float32))\n"
                "with torch.no_grad():\n"
                "    P, Y, M = m(x)\n"
                "np.savez(sys.argv[2], mil_prob=P.numpy(), fc_prob=Y.numpy(), maps=M.numpy())\n")
        r = subprocess.run(["/usr/bin/python3", "-c", code, ts, f"{tag}-ts.npz"],
                           capture_output=True, text=True, cwd=d)
        if check(f"{case}: the TorchScript file loads and runs with torch alone",
                 r.returncode == 0, r.stderr[-600:]):
            z = np.load(f"{tag}-ts.npz")
            same_as_score(f"{case}: TorchScript at {H}x{W}",
                          [z[k] for k in ("mil_prob", "fc_prob", "maps")], ref)

        # 4. ONNX, traced at 100x116, evaluated at the shard's size
        import onnx
        p.export_onnx(f"{tag}.onnx", size=(100, 116))
        model = onnx.load(f"{tag}.onnx")
        try:
            onnx.checker.check_model(model, full_check=True)
            check(f"{case}: the ONNX model passes onnx.checker", True)
        except Exception as e:  # noqa: BLE001 - the checker's own error types vary
            check(f"{case}: the ONNX model passes onnx.checker", False, str(e)[:300])
        dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        check(f"{case}: ONNX input 'images' has dynamic N, H, W",
              model.graph.input[0].name == "images" and dims[1] == images.shape[1] and
              all(isinstance(dims[i], str) for i in (0, 2, 3)), str(dims))
        check(f"{case}: ONNX outputs are mil_prob, fc_prob, maps",
              [o.name for o in model.graph.output] == ["mil_prob", "fc_prob", "maps"])
        got = onnx_run(model, {"images": images.astype(np.float32)})
        same_as_score(f"{case}: ONNX at {H}x{W}", got, ref)

    # 4b. the exported log-space pooling where every logit is far below -88 (float's sigmoid
    # underflows): GM with the class maps' bias lowered by 300, ONNX against score
    neg = "run-gm/neg.h5"
    shutil.copy(ck, neg)
    with h5py.File(neg, "r+") as f:
        f["weights/conv7/bias"][...] = f["weights/conv7/bias"][()] - 300
    mt.resign_checkpoint(neg)  # changed on purpose
    run("score", "--checkpoint", neg, "--out", "scores-neg", "--set", "score.masks=false",
        f"{data}/test.h5")
    with h5py.File("scores-neg/test.scores.h5", "r") as f:
        ref = {k: f[k][()] for k in ("mil_prob", "fc_prob", "maps", "pred")}
    mt.from_checkpoint(neg).export_onnx("neg.onnx", size=(100, 116))
    got = onnx_run(onnx.load("neg.onnx"), {"images": images.astype(np.float32)})
    check("GM, every logit below -200: the ONNX outputs are finite",
          all(np.isfinite(g).all() for g in got), str([np.isfinite(g).all() for g in got]))
    same_as_score("GM, every logit below -200: ONNX", got, ref)

    # 5. the command line
    r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "milscreen_torch.py"), "export",
                        ck, "--torchscript", "cli.pt", "--onnx", "cli.onnx", "--size", "96x96"],
                       capture_output=True, text=True)
    check("milscreen_torch.py export writes both files",
          r.returncode == 0 and os.path.getsize("cli.pt") > 0 and os.path.getsize("cli.onnx") > 0,
          r.stderr[-500:])
    r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "milscreen_torch.py"), "export",
                        ck, "--onnx", "small.onnx", "--size", "20x20"],
                       capture_output=True, text=True)
    check("an export that fails (input below the smallest size) exits 1 with a message",
          r.returncode == 1 and "error" in r.stderr, r.stderr[-300:])
    check("... and leaves no file, partial or temporary",
          not any(f.startswith(("small.onnx", ".small.onnx")) for f in os.listdir(".")),
          str(sorted(os.listdir("."))))
    r = subprocess.run(["/usr/bin/python3", os.path.join(TOOLS, "milscreen_torch.py"), "export",
                        f"{data}/test.h5", "--onnx", "x.onnx"], capture_output=True, text=True)
    check("a shard given as the checkpoint is refused naming it",
          r.returncode == 1 and f"{data}/test.h5" in r.stderr
          and "not a milscreen checkpoint" in r.stderr,
          r.stderr[-300:])

print("all passed" if not failures else "FAILED: " + ", ".join(failures))
sys.exit(1 if failures else 0)
