#!/usr/bin/python3
"""Training curves: the per-epoch lines of log.jsonl and `milscreen plot`.

A short training run on an easy shard made here (class k: bright spots in channel k), then
resumed: every epoch line has every field; the epochs and steps go on across --resume in one
file; the training loss is the mean of the epoch's step losses; the validation loss and
accuracies equal what the PyTorch twin computes from the epoch's checkpoint; with lr = 0 and
the training shard as validation, training and validation figures agree. `plot` draws a log
written here with chosen values: every marker lies where its value says (pixels checked
against the frame plot prints), a superseded epoch and a cut-off line are left out, a resume
is marked. Usage: cli_curves.py MILSCREEN"""
import datetime
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import milscreen_torch as mt  # noqa: E402

MS = os.path.abspath(sys.argv[1])
FAILS = []


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        FAILS.append(what)


def run(*args, rc=0, env=None):
    r = subprocess.run([MS, *args], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})))
    if r.returncode != rc:
        print(r.stdout, r.stderr)
        raise SystemExit(f"milscreen {' '.join(args)}: exit {r.returncode}, expected {rc}")
    return r


def make_shard(path, n, rng, size=64):
    """3 classes, 3 channels: an image of class k has 6 bright spots in channel k only."""
    y = np.arange(n) % 3
    img = rng.integers(90, 110, size=(n, 3, size, size)).astype(np.uint16)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        for _ in range(6):
            cx, cy = rng.integers(6, size - 6, 2)
            img[i, y[i], (xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = 2000
    with h5py.File(path, "w") as f:
        f.attrs["format"] = np.bytes_(b"milscreen-shard")
        f.attrs["format_version"] = 1
        f.attrs["channel_names"] = np.array([b"c0", b"c1", b"c2"])
        f.attrs["class_names"] = np.array([b"zero", b"one", b"two"])
        f.attrs["multi_label"] = 0
        f.create_dataset("images", data=img, chunks=(1, 3, size, size))
        f.create_dataset("meta/image_id", data=np.array([b"i%d" % i for i in range(n)]))
        f.create_dataset("meta/plate", data=np.array([b"P"] * n))
        f.create_dataset("meta/well", data=np.array([b"A%02d" % (i % 12) for i in range(n)]))
        f.create_dataset("meta/site", data=np.zeros(n, np.int32))
        f.create_dataset("meta/label", data=y.astype(np.int32))
        f.create_dataset("meta/treatment", data=np.array([b"t%d" % (i % 3) for i in range(n)]))
        f.create_dataset("meta/replicate", data=np.zeros(n, np.int32))
    return img, y


NET = """[net]
channels = 3
classes = 3
[train]
batch = 8
epochs = 4
crop = 0
augment = false
seed = 7
keep = 100
[data]
train = train.h5
val = val.h5
[conv1]
type = conv
filters = 8
size = 5
stride = 2
[pool1]
type = maxpool
size = 3
stride = 2
[conv2]
type = conv
filters = 16
size = 3
[conv7]
type = conv
filters = classes
size = 1
activation = linear
[mil]
type = mil
pool = noisy_and
a = 10
[fc]
type = fc
head = softmax
identity = 5
"""

EPOCH_FIELDS = {"event", "epoch", "step", "lr", "train_loss", "train_accuracy_mil",
                "train_accuracy_head", "train_images", "train_batches", "val_loss",
                "val_accuracy_mil", "val_accuracy_head", "val_images", "epoch_s", "time",
                "elapsed_s"}


def read_log(path):
    return [json.loads(l) for l in open(path)]


def twin_eval(ck, x_raw, y):
    """Loss, MIL and head accuracy of checkpoint ck on images x_raw (N,C,H,W) with labels y,
    as validate() computes them: per image, no dropout, normalised with ck's statistics."""
    model = mt.load_checkpoint(mt.build_model("run.ini"), ck).eval()
    with h5py.File(ck, "r") as f:
        mean, std = f["norm/mean"][()], f["norm/std"][()]
    x = (x_raw.astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]
    t = torch.nn.functional.one_hot(torch.from_numpy(y).long(), 3).float()
    losses, right_mil, right_fc = [], 0, 0
    with torch.no_grad():
        for i in range(len(y)):
            z, P, yh = model(torch.from_numpy(x[i:i + 1]))
            losses.append(float(model.loss(t[i:i + 1])))
            right_mil += int(P.argmax(1)) == y[i]
            right_fc += int(model.head_prob().argmax(1)) == y[i]
    return np.mean(losses), right_mil / len(y), right_fc / len(y)


def png_pixels(path):
    """An 8-bit RGB PNG (what milscreen writes) decoded with zlib and numpy alone."""
    data = open(path, "rb").read()
    pos, idat = 8, b""
    while pos < len(data):
        ln, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + ln]
        if typ == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype == 2
        elif typ == b"IDAT":
            idat += body
        pos += 12 + ln
    raw = zlib.decompress(idat)
    out = np.zeros((h, w * 3), np.int32)
    prev = np.zeros(w * 3, np.int32)
    stride = w * 3 + 1
    for y in range(h):
        ft = raw[y * stride]
        line = np.frombuffer(raw[y * stride + 1:(y + 1) * stride], np.uint8).astype(np.int32)
        if ft == 0:
            cur = line
        elif ft == 1:
            cur = np.cumsum(line.reshape(w, 3), axis=0).reshape(-1) & 255
        elif ft == 2:
            cur = (line + prev) & 255
        else:
            ln, up, c_l = line.tolist(), prev.tolist(), [0] * (w * 3)
            for x in range(w * 3):
                a = c_l[x - 3] if x >= 3 else 0
                b = up[x]
                if ft == 3:
                    p = (a + b) // 2
                else:
                    c = up[x - 3] if x >= 3 else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                c_l[x] = (ln[x] + p) & 255
            cur = np.array(c_l, np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3)


def frames(stdout):
    """The mapping plot prints: {panel: (xmin, xmax, x0, x1, ytop, ybottom, y0, y1)}."""
    out = {}
    for line in stdout.splitlines():
        if " on x " in line:
            name, rest = line.strip().split(": ", 1)
            w = rest.replace(",", "").split()
            out[name] = tuple(float(w[i]) for i in (1, 3, 6, 8, 9, 11, 14, 16))
    return out


def blobs(mask):
    """Connected groups of True pixels (4-neighbours): list of (count, cx, cy)."""
    seen = np.zeros_like(mask)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                v, u = y + dy, x + dx
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and \
                        not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
        p = np.array(pts)
        out.append((len(p), p[:, 1].mean(), p[:, 0].mean()))
    return out


def marker(rgb):
    return tuple(int(c * 0.6 + 0.5) for c in rgb)


TRAIN, VAL, TRAIN2, VAL2 = (0, 114, 178), (213, 94, 0), (86, 180, 233), (230, 159, 0)


def main():
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        xtr, ytr = make_shard("train.h5", 48, rng)
        xva, yva = make_shard("val.h5", 15, rng)
        open("run.ini", "w").write(NET)
        env = {"MS_PROGRESS_INTERVAL": "0.000001"}  # a step line for every step
        spe = 48 // 8

        # --- 4 epochs, then resumed to 7: one log, epochs and steps going on
        run("train", "--config", "run.ini", "--run", "a", "--progress", "lines", env=env)
        r = run("train", "--config", "run.ini", "--run", "a", "--set", "train.epochs=7",
                "--resume", "--progress", "lines", env=env)
        check("the console shows the epoch's figures",
              "epoch 7/7: train loss" in r.stdout and "validation loss" in r.stdout,
              r.stdout.splitlines()[-4] if r.stdout else "")
        log = read_log("a/log.jsonl")
        ep = [e for e in log if e["event"] == "epoch"]
        check("an epoch line per epoch, numbered on across --resume",
              [e["epoch"] for e in ep] == list(range(1, 8)), str([e["epoch"] for e in ep]))
        check("every epoch line has every field", all(set(e) == EPOCH_FIELDS for e in ep),
              str(sorted(set().union(*map(set, ep)) ^ EPOCH_FIELDS)))
        check("steps go on across --resume", [e["step"] for e in ep] ==
              [spe * (i + 1) for i in range(7)], str([e["step"] for e in ep]))
        starts = [e for e in log if e["event"] == "start"]
        check("each process logs where it started",
              [s["step"] for s in starts] == [0, 4 * spe], str(starts))
        check("learning rate, images and batches per epoch",
              all(e["lr"] == 0.001 and e["train_images"] == 48 and e["train_batches"] == spe and
                  e["val_images"] == 15 for e in ep))
        times = [datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ") for e in log]
        check("every line has a UTC timestamp, in order",
              all(a <= b for a, b in zip(times, times[1:])) and
              abs((times[-1] - datetime.datetime.utcnow()).total_seconds()) < 600)
        check("accuracies are fractions of the images",
              all(abs(e[k] * n - round(e[k] * n)) < 1e-6 and 0 <= e[k] <= 1
                  for e in ep for k, n in (("train_accuracy_mil", 48),
                                           ("train_accuracy_head", 48),
                                           ("val_accuracy_mil", 15), ("val_accuracy_head", 15))))
        steps = {e["step"]: e["loss"] for e in log if e["event"] == "step"}
        worst = 0
        for e in ep:
            ls = [steps[s] for s in range(e["step"] - spe + 1, e["step"] + 1)]
            worst = max(worst, abs(np.mean(ls) - e["train_loss"]) / e["train_loss"])
        check("train_loss is the mean of the epoch's step losses", worst < 1e-6, f"{worst:.2g}")
        vals = {e["epoch"]: e for e in log if e["event"] == "validation"}
        check("the validation line carries the same loss",
              all(vals[e["epoch"]]["loss"] == e["val_loss"] for e in ep))
        # the twin from each epoch's checkpoint (written at its end) gives the same figures
        worst_l, same_acc = 0, True
        for e in ep:
            loss, am, af = twin_eval(f"a/ckpt-{e['step']:08d}.h5", xva, yva)
            worst_l = max(worst_l, abs(loss - e["val_loss"]) / loss)
            same_acc &= abs(am - e["val_accuracy_mil"]) < 1e-6 and \
                abs(af - e["val_accuracy_head"]) < 1e-6
        # float32 forward passes in two stacks: the loss agrees to float rounding
        check("val_loss equals the PyTorch twin's loss on the validation shard", worst_l < 1e-4,
              f"(relative {worst_l:.2g})")
        check("val accuracies equal the twin's", same_acc)
        acc = [e["val_accuracy_mil"] for e in ep]
        print(f"     validation accuracy by epoch: {acc}; loss {[round(e['val_loss'], 4) for e in ep]}")

        # --- lr = 0 and the training shard as validation: the same images, the same network
        # (from epoch 2's checkpoint, part-trained, so that the accuracies are not all 1)
        os.makedirs("b")
        os.link(f"a/ckpt-{2 * spe:08d}.h5", f"b/ckpt-{2 * spe:08d}.h5")
        run("train", "--config", "run.ini", "--run", "b", "--resume", "--set", "train.lr=0",
            "--set", "train.epochs=3", "--set", "data.val=train.h5")
        e8 = [e for e in read_log("b/log.jsonl") if e["event"] == "epoch"]
        check("a run resumed into a new folder goes on at epoch 3", [e["epoch"] for e in e8] == [3])
        e8 = e8[0]
        check("with lr 0 training and validation figures agree (no dropout, no augmentation)",
              abs(e8["train_loss"] - e8["val_loss"]) <= 1e-5 * e8["val_loss"] and
              e8["train_accuracy_mil"] == e8["val_accuracy_mil"] and
              e8["train_accuracy_head"] == e8["val_accuracy_head"] and e8["lr"] == 0,
              f"loss {e8['train_loss']} vs {e8['val_loss']}, MIL {e8['train_accuracy_mil']} vs "
              f"{e8['val_accuracy_mil']}")

        # --- plot the real run: two panels, the resume marked at epoch 4
        r = run("plot", "a")
        fr = frames(r.stdout)
        check("plot writes curves.png in the run folder with a loss and an accuracy panel",
              os.path.exists("a/curves.png") and set(fr) == {"loss", "accuracy"}, r.stdout)
        r = run("plot", "a", rc=2)
        check("the default output is never replaced", "--out a/curves.png" in r.stderr,
              r.stderr.strip())
        before = os.stat("a/curves.png").st_ino
        run("plot", "a", "--out", "a/curves.png")
        check("named, it is replaced (a new file renamed over it)",
              os.stat("a/curves.png").st_ino != before)
        px = png_pixels("a/curves.png")
        xmin, xmax, x0, x1, yt, yb, y0, y1 = fr["loss"]
        col = int(round(x0 + (4 - xmin) / (xmax - xmin) * (x1 - x0)))
        grey = np.all(px[int(y0):int(y1), col] == (120, 120, 120), axis=1).sum()
        check("the resume is a dashed grey line at epoch 4", 0.3 * (y1 - y0) < grey < 0.8 * (y1 - y0),
              f"({grey} grey pixels of {y1 - y0:.0f})")

        # --- plot a log with chosen values: markers where the values say
        lines = [{"event": "start", "step": 0}]
        vals = {1: (2.0, 2.3, 0.30, 0.20, 0.35, 0.25), 2: (1.5, 1.9, 0.45, 0.30, 0.55, 0.40),
                3: (1.2, None, 0.60, None, 0.70, None), 4: (0.9, 1.4, 0.80, 0.60, 0.90, 0.65),
                5: (0.8, 1.35, 0.95, 0.70, 1.00, 0.75)}
        keys = ("train_loss", "val_loss", "train_accuracy_mil", "val_accuracy_mil",
                "train_accuracy_head", "val_accuracy_head")
        for e in (1, 2, 3, 4):
            lines.append(dict(event="epoch", epoch=e, step=10 * e, lr=1e-3,
                              **{k: (9.0 if e == 4 else v) for k, v in zip(keys, vals[e])}))
        # epoch 4 again (resumed from an older checkpoint): this one counts
        lines.append({"event": "start", "step": 30})
        for e in (4, 5):
            lines.append(dict(event="epoch", epoch=e, step=10 * e, lr=1e-4 if e == 5 else 1e-3,
                              **dict(zip(keys, vals[e]))))
        with open("chosen.jsonl", "w") as f:
            for l in lines:
                f.write(json.dumps(l) + "\n")
            f.write('{"event": "step", "step": 51, "lo')  # a line cut short by a kill
        r = run("plot", "chosen.jsonl", "--out", "chosen.png", "--title", "chosen values")
        check("a line cut short is skipped with a warning", "1 of 9 lines" in r.stderr,
              r.stderr.strip())
        fr = frames(r.stdout)
        px = png_pixels("chosen.png")
        series = {"loss": [(0, TRAIN), (1, VAL)],
                  "accuracy": [(2, TRAIN), (3, VAL), (4, TRAIN2), (5, VAL2)]}
        for panel, ss in series.items():
            xmin, xmax, x0, x1, yt, yb, y0, y1 = fr[panel]
            for k, rgb in ss:
                want = [(e, v[k]) for e, v in vals.items() if v[k] is not None]
                m = np.all(px[int(y0) - 6:int(y1) + 7, int(x0) - 6:int(x1) + 7] ==
                           marker(rgb), axis=2)
                got = sorted((cx + x0 - 6, cy + y0 - 6) for n, cx, cy in blobs(m) if n >= 9)
                exp = [(round(x0 + (e - xmin) / (xmax - xmin) * (x1 - x0)),
                        round(y0 + (yt - v) / (yt - yb) * (y1 - y0))) for e, v in want]
                ok = len(got) == len(exp) and all(abs(a - c) <= 0.6 and abs(b - d) <= 0.6
                                                  for (a, b), (c, d) in zip(got, exp))
                check(f"{panel} {keys[k]}: a marker at each value and nowhere else",
                      ok, f"{[(round(a, 1), round(b, 1)) for a, b in got]} vs {exp}")
        xmin, xmax, x0, x1, yt, yb, y0, y1 = fr["loss"]
        check("the loss axis covers the values, not the superseded 9.0", yt < 9 and yt >= 2.3 and
              yb <= 0.8, f"({yb} to {yt})")

        # --- what plot refuses
        r = run("plot", "nowhere", rc=1)
        check("a missing run is an error naming the log", "nowhere" in r.stderr, r.stderr.strip())
        open("empty.jsonl", "w").write('{"event": "start", "step": 0}\n')
        r = run("plot", "empty.jsonl", "--out", "e.png", rc=1)
        check("a log without epoch lines is an error", "no \"epoch\" lines" in r.stderr and
              not os.path.exists("e.png"), r.stderr.strip())
        r = run("plot", rc=2)
        check("no run is a usage error", "which run" in r.stderr)
    if FAILS:
        print(f"{len(FAILS)} failed")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
