#!/usr/bin/python3
"""End to end on a tiny synthetic plate set: train, resume bit for bit (after an epoch and
after a signal mid-run), score, re-score skip, eval, render; the files checked with h5py and
the scores against the PyTorch twin loading the same checkpoint."""
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import milscreen_torch as mt  # noqa: E402

MS = sys.argv[1]
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what} {detail}")
    if not ok:
        failures.append(what)


def run(*args, ok=True, **kw):
    r = subprocess.run([MS, *args], capture_output=True, text=True, **kw)
    if ok and r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"milscreen {' '.join(args)} failed")
    return r


def weights(path):
    with h5py.File(path, "r") as f:
        out = {}
        f["weights"].visititems(lambda n, d: out.__setitem__(n, d[()]) if isinstance(d, h5py.Dataset) else None)
        return out


digest = mt.checkpoint_digest
resign = mt.resign_checkpoint


def newest(run_dir):
    c = sorted(p for p in os.listdir(run_dir) if p.startswith("ckpt-"))
    return os.path.join(run_dir, c[-1])


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    run("synth", "--preset", "tiny", "--out", "data", "--seed", "3")
    net = open(os.path.join(ROOT, "configs", "paper.ini")).read()
    net = net[net.index("[pool0]"):]
    cfg = ("[net]\nchannels = 3\nclasses = 3\n[train]\nbatch = 4\nepochs = 3\ncrop = 96\n"
           "checkpoint_every = 1\nkeep = 2\nseed = 5\n"
           "[data]\ntrain = data/train.h5\nval = data/test.h5\n" + net)
    open("tiny.ini", "w").write(cfg)

    # an uninterrupted run
    r = run("train", "--config", "tiny.ini", "--run", "a", "--progress", "lines")
    ck = sorted(p for p in os.listdir("a") if p.startswith("ckpt-"))
    check("keeps the last 2 checkpoints", len(ck) == 2, str(ck))
    log = [json.loads(line) for line in open("a/log.jsonl")]
    check("log.jsonl has steps and validations",
          any(e["event"] == "step" for e in log) and sum(e["event"] == "validation" for e in log) == 3)
    timing = [e for e in log if e["event"] == "timing"]
    check("log.jsonl says where the time went",
          len(timing) == 1 and 0 < timing[0]["engine_s"] < timing[0]["wall_s"] and
          timing[0]["validation_s"] > 0 and timing[0]["checkpoint_s"] > 0, str(timing))
    busy = [e["busy"] for e in log if e["event"] == "step"]
    check("step lines carry the backend's busy share", all(0 < b <= 1.01 for b in busy), str(busy))
    check("the run prints its time shares", "time: backend (busy)" in r.stdout, r.stdout[-300:])
    final_a = weights(newest("a"))

    # stop after one epoch, resume to the end
    run("train", "--config", "tiny.ini", "--run", "b", "--set", "train.epochs=1")
    run("train", "--config", "tiny.ini", "--run", "b", "--resume")
    final_b = weights(newest("b"))
    check("resume after an epoch is bit for bit",
          all(np.array_equal(final_a[k], final_b[k]) for k in final_a))

    # [train] lr_drop_epoch: lr_drop = 1 is the plain run; a real drop changes the result
    run("train", "--config", "tiny.ini", "--run", "d1", "--set", "train.lr_drop_epoch=1",
        "--set", "train.lr_drop=1")
    run("train", "--config", "tiny.ini", "--run", "d2", "--set", "train.lr_drop_epoch=1")
    w1, w2 = weights(newest("d1")), weights(newest("d2"))
    check("lr_drop = 1 changes nothing", all(np.array_equal(final_a[k], w1[k]) for k in w1))
    check("lr_drop changes the epochs after lr_drop_epoch",
          any(not np.array_equal(final_a[k], w2[k]) for k in w2))

    # a diverging run stops with an error and leaves no checkpoint with non-finite weights:
    # resume a run whose class maps were set to 1e38 (finite, but every logit overflows)
    os.makedirs("nan")
    shutil.copy(newest("a"), "nan/ckpt-00000001.h5")
    with h5py.File("nan/ckpt-00000001.h5", "r") as f:
        stored = f.attrs["digest"]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        check("the digest recomputed with h5py is the stored one", digest(f) == stored,
              f"{digest(f)} vs {stored}")
    with h5py.File("nan/ckpt-00000001.h5", "r+") as f:
        f["weights/conv7/bias"][...] = 1e38
        f["weights/conv7/weight"][...] = 1e38
    resign("nan/ckpt-00000001.h5")
    r = run("train", "--config", "tiny.ini", "--run", "nan", "--resume", "--set",
            "train.epochs=6", ok=False)
    check("a non-finite loss stops training with an error naming the step",
          r.returncode == 1 and "step" in r.stderr and ("loss is" in r.stderr or "not finite" in r.stderr),
          r.stderr.strip()[-300:])
    left = [p for p in os.listdir("nan") if p.startswith("ckpt-")]
    check("no checkpoint of a diverged run holds non-finite values",
          all(all(np.isfinite(v).all() for v in weights(os.path.join("nan", p)).values())
              for p in left), str(left))
    with h5py.File("nan/ckpt-00000001.h5", "r+") as f:
        f["weights/conv1/weight"][0, 0, 0, 0] = np.nan
    r = run("score", "--checkpoint", "nan/ckpt-00000001.h5", "--out", "nanscores",
            "data/test.h5", ok=False)
    check("a checkpoint holding NaN is refused, naming the dataset",
          r.returncode != 0 and "weights/conv1/weight" in r.stderr and "non-finite" in r.stderr,
          r.stderr.strip()[-200:])

    # a signal mid-run: checkpoint, clean exit, resume
    p = subprocess.Popen([MS, "train", "--config", "tiny.ini", "--run", "c", "--set",
                          "train.epochs=100", "--progress", "lines"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while time.time() - t0 < 120 and not (os.path.isdir("c") and any(
            n.startswith("ckpt-") for n in os.listdir("c"))):
        time.sleep(0.2)
    p.send_signal(signal.SIGUSR1)
    out, err = p.communicate(timeout=120)
    check("SIGUSR1 stops cleanly with exit 75 (EX_TEMPFAIL: stopped, resumable)",
          p.returncode == 75 and "stopped by signal" in err, f"exit {p.returncode} " + out[-300:] + err)
    stopped = newest("c")
    stop_step = int(os.path.basename(stopped)[5:13])
    check("stopped mid-run", 0 < stop_step < 100 * 4, str(stop_step))
    epochs = stop_step // 4 + 2  # 4 batches per epoch: finish the next epoch too
    run("train", "--config", "tiny.ini", "--run", "c", "--resume", "--set", f"train.epochs={epochs}")
    run("train", "--config", "tiny.ini", "--run", "a3", "--set", f"train.epochs={epochs}")
    check("resume after a signal is bit for bit",
          all(np.array_equal(weights(newest("a3"))[k], weights(newest("c"))[k]) for k in final_a),
          f"(stopped at step {stop_step}, trained to epoch {epochs})")

    # score
    ck = newest("a")
    r = run("score", "--checkpoint", ck, "--out", "scores", "data/test.h5")
    out = "scores/test.scores.h5"
    with h5py.File(out, "r") as f, h5py.File("data/test.h5", "r") as s:
        N, C, H, W = s["images"].shape
        K = 3
        for name, shape in [("mil_prob", (N, K)), ("fc_prob", (N, K)), ("pred", (N,)),
                            ("masks", (N, H, W)), ("image_id", (N,))]:
            check(f"/{name} shape", name in f and f[name].shape == shape,
                  str(f[name].shape if name in f else None))
        check("/maps is (N, K, h, w)", f["maps"].shape[:2] == (N, K))
        for name in ("mil_prob", "fc_prob", "maps"):
            v = f[name][()]
            check(f"/{name} in [0,1]", np.all((v >= 0) & (v <= 1)) and np.all(np.isfinite(v)))
        m = f["masks"][()]
        check("masks binary", set(np.unique(m)) <= {0, 1})
        check("fc_prob rows sum to 1", np.allclose(f["fc_prob"][()].sum(1), 1, atol=1e-5))
        for a in ("checkpoint_digest", "source_digest", "config", "milscreen_version", "source"):
            check(f"attribute {a}", a in f.attrs)
        check("cells scored", "cells/prob" in f and f["cells/prob"].shape[1] == K)
        ids = [x.decode() if isinstance(x, bytes) else x for x in f["image_id"][()]]
        sids = [x.decode() if isinstance(x, bytes) else x for x in s["meta/image_id"][()]]
        check("image ids follow the shard", ids == sids)

        # the PyTorch twin on the same checkpoint and images
        with h5py.File(ck, "r") as c:
            config = c.attrs["config"]
            mean, std = c["norm/mean"][()], c["norm/std"][()]
        open("ck.ini", "w").write(config if isinstance(config, str) else config.decode())
        model = mt.load_checkpoint(mt.build_model("ck.ini"), ck).eval()
        x = (s["images"][()].astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]
        with torch.no_grad():
            z, P, y = model(torch.from_numpy(x))
        rel = lambda a, b: np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
        check("mil_prob equals the twin's", rel(f["mil_prob"][()], P.numpy()) <= 1e-4,
              f"{rel(f['mil_prob'][()], P.numpy()):.2e}")
        check("fc_prob equals the twin's", rel(f["fc_prob"][()], model.head_prob().numpy()) <= 1e-4)
        check("maps equal the twin's", rel(f["maps"][()], torch.sigmoid(z).numpy()) <= 1e-4)

    r = run("score", "--checkpoint", ck, "--out", "scores", "data/test.h5")
    check("re-scoring skips", "up to date" in r.stdout, r.stdout)
    r = run("score", "--checkpoint", ck, "--out", "scores", "--force", "data/test.h5")
    check("--force scores again", "->" in r.stdout, r.stdout)
    r = run("score", "--checkpoint", ck, "--out", "scores", "--set", "localise.mode=otsu",
            "data/test.h5")
    with h5py.File(out, "r") as f:
        check("otsu mask mode", f.attrs["mask_mode"] in ("otsu", b"otsu"))

    # class-specific masks (paper Fig. 6): one guided pass per class's map
    r = run("score", "--checkpoint", ck, "--out", "scores_k", "--set", "score.class_masks=true",
            "data/test.h5")
    with h5py.File("scores_k/test.scores.h5", "r") as f, h5py.File("data/test.h5", "r") as s:
        N, C, H, W = s["images"].shape
        cm = f["class_masks"][()] if "class_masks" in f else np.zeros(0)
        check("/class_masks is (N, K, H, W) uint8, one chunk per mask",
              cm.shape == (N, 3, H, W) and cm.dtype == np.uint8 and
              f["class_masks"].chunks == (1, 1, H, W), str(cm.shape))
        check("class masks are binary", set(np.unique(cm)) <= {0, 1})
        check("each class has its own mask",
              any(not np.array_equal(cm[i, 0], cm[i, k]) for i in range(N) for k in (1, 2)))
        masks_k = f["masks"][()]
    run("score", "--checkpoint", ck, "--out", "scores_j", "data/test.h5")
    with h5py.File("scores_j/test.scores.h5", "r") as f:
        check("class_masks leaves /masks as it was", np.array_equal(f["masks"][()], masks_k))

    # a shard of another shape is an error naming both
    run("synth", "--preset", "yeast-like", "--out", "other", "--seed", "1", "--size", "96x96",
        "--treatments", "2", "--replicates", "1", "--sites", "1")
    r = run("score", "--checkpoint", ck, "--out", "scores2", "other/test.h5", ok=False)
    check("shard of other channels fails naming both",
          r.returncode != 0 and "other/test.h5" in r.stderr and "2 channels" in r.stderr, r.stderr)
    check("no partial output left", not os.path.exists("scores2/test.scores.h5")
          and not any(n.startswith(".") for n in os.listdir("scores2")) if os.path.isdir("scores2") else True)

    r = run("eval", out, "--json", "eval.json")
    ev = json.load(open("eval.json"))
    check("eval JSON", isinstance(ev, dict) and len(ev) > 0, str(list(ev)[:5]))
    run("render", "--input", out, "--index", "0", "--out", "r.png")
    png = open("r.png", "rb").read()
    check("render writes a PNG", png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000)

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
