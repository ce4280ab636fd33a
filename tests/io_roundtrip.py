#!/usr/bin/python3
"""Round trip of milscreen shards against h5py (Debian's python3-h5py): for each shard made by
`milscreen synth`, `tools/make-cluttered-mnist` and `milscreen ingest`, what milscreen's reader
sees (tests/io_shard_dump) must equal what h5py reads: shape, names, every image's metadata
and pixels, cells, masks and the SHA-256 digest. For cluttered MNIST also the paper's rules
(digit counts per label, disjoint train/test digit pools, determinism from the seed).
Usage: io_roundtrip.py --dump BIN --milscreen BIN --root SRCDIR [--only synth|mnist]"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

failures = 0


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", msg, file=sys.stderr)


def fnv(a):
    b = np.ascontiguousarray(a.astype("<u2")).view(np.uint8).ravel()
    h = 1469598103934665603
    # vectorised FNV would change the hash; images here are small, so a plain loop in chunks
    for x in b.tobytes():
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def h5py_dump(path):
    out = []
    with h5py.File(path, "r", locking=False) as f:
        check(f.attrs["format"] == b"milscreen-shard", f"{path}: format")
        check(int(f.attrs["format_version"]) == 1, f"{path}: version")
        im = f["images"]
        n, c, hh, ww = im.shape
        classes = [s.decode() for s in f.attrs["class_names"]]
        multi = int(f.attrs["multi_label"])
        out.append(f"shape\t{n}\t{c}\t{hh}\t{ww}\t{len(classes)}\t{multi}\t{im.dtype}")
        out += [f"class\t{j}\t{s}" for j, s in enumerate(classes)]
        out += [f"channel\t{j}\t{s.decode()}" for j, s in enumerate(f.attrs["channel_names"])]
        m = {k: f["meta/" + k][:] for k in ("image_id", "plate", "well", "site", "treatment",
                                           "replicate")}
        for i in range(n):
            if multi:
                row = f["meta/labels"][i]
                known = not np.all(row == 255)
                lab = int(np.argmax(row == 1)) if known and (row == 1).any() else -1
                labs = "".join(str(int(v)) for v in row) if known else "?" * len(classes)
            else:
                lab = int(f["meta/label"][i])
                labs = "".join("1" if j == lab else "0" for j in range(len(classes))) \
                    if lab >= 0 else "?" * len(classes)
            out.append("image\t%d\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s" % (
                i, m["image_id"][i].decode(), m["plate"][i].decode(), m["well"][i].decode(),
                m["site"][i], m["treatment"][i].decode(), m["replicate"][i], lab, labs,
                fnv(im[i])))
        if "cells" in f:
            cl = f["cells"]
            for j in range(cl["image_index"].shape[0]):
                out.append("cell\t%d\t%.3f\t%.3f\t%d\t%d" % (
                    cl["image_index"][j], cl["x"][j], cl["y"][j], cl["label"][j],
                    cl["mask_id"][j] if "mask_id" in cl else 0))
        if "masks" in f:
            out += [f"mask\t{i}\t{fnv(f['masks'][i])}" for i in range(n)]
    with open(path, "rb") as fh:
        out.append("digest\t" + hashlib.sha256(fh.read()).hexdigest())
    return out


def roundtrip(dump, path):
    r = subprocess.run([dump, path], capture_output=True, text=True)
    check(r.returncode == 0, f"io_shard_dump {path}: {r.stderr.strip()}")
    ours = r.stdout.splitlines()
    theirs = h5py_dump(path)
    check(len(ours) == len(theirs), f"{path}: {len(ours)} lines from milscreen, "
          f"{len(theirs)} from h5py")
    bad = [(a, b) for a, b in zip(ours, theirs) if a != b]
    for a, b in bad[:5]:
        check(False, f"{path}:\n  milscreen: {a}\n  h5py:      {b}")
    print(f"round trip {os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}: "
          f"{len(ours)} records, {len(bad)} differ")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return r


def test_synth(a, tmp):
    out = os.path.join(tmp, "synth")
    run([a.milscreen, "synth", "--preset", "tiny", "--out", out, "--seed", "5",
         "--treatments", "2", "--replicates", "2", "--sites", "1"])
    for split in ("train", "test"):
        roundtrip(a.dump, os.path.join(out, f"{split}.h5"))
    # same seed, same bytes (no timestamps in the file): the digest identifies the content
    again = os.path.join(tmp, "synth_again")
    run([a.milscreen, "synth", "--preset", "tiny", "--out", again, "--seed", "5",
         "--treatments", "2", "--replicates", "2", "--sites", "1", "--threads", "1"])
    for split in ("train", "test"):
        with open(os.path.join(out, f"{split}.h5"), "rb") as f0, \
                open(os.path.join(again, f"{split}.h5"), "rb") as f1:
            check(f0.read() == f1.read(), f"synth {split}.h5 differs between runs with one seed "
                  "(and other thread counts)")
    with h5py.File(os.path.join(out, "train.h5"), "r", locking=False) as f:
        check(f["images"].dtype == np.uint16 and f["images"].shape == (6, 3, 128, 128),
              f"synth tiny shape {f['images'].shape}")
        check(f["images"].compression == "gzip" and f["images"].shuffle, "deflate + shuffle")
        check(f["masks"].shape == (6, 128, 128), "masks")
        # the phenotype shows in some cells of every image, not all (MIL's premise)
        lab = f["cells/label"][:]
        idx = f["cells/image_index"][:]
        for i in range(6):
            sel = lab[idx == i]
            check(0 < (sel >= 0).sum() < len(sel), f"synth image {i}: {sel}")


def test_synth_multilabel(a, tmp):
    """yeast-like: 2 channels, 17 classes, multi-label rows; cells show one of their image's
    compartments or none."""
    out = os.path.join(tmp, "yeast")
    run([a.milscreen, "synth", "--preset", "yeast-like", "--out", out, "--seed", "2",
         "--size", "200x160", "--replicates", "1"])
    path = os.path.join(out, "train.h5")
    if not os.path.exists(path):
        return
    roundtrip(a.dump, path)
    with h5py.File(path, "r", locking=False) as f:
        check(f["images"].shape == (17, 2, 160, 200), f"yeast shape {f['images'].shape}")
        check(int(f.attrs["multi_label"]) == 1 and "meta/label" not in f, "multi-label layout")
        y = f["meta/labels"][:]
        # one training strain per class, in class order
        check(y.shape == (17, 17) and set(y.sum(1)) <= {1, 2} and
              (y[np.arange(17), np.arange(17)] == 1).all(),
              f"each strain has its compartment and at most one more: {y.sum(1)}")
        lab, idx = f["cells/label"][:], f["cells/image_index"][:]
        ok = all(l < 0 or y[i, l] == 1 for l, i in zip(lab, idx))
        check(ok and (lab >= 0).any() and (lab < 0).any(),
              "cell labels are one of the image's compartments or -1")


def test_mnist(a, tmp):
    tool = os.path.join(a.root, "tools", "make-cluttered-mnist")
    outs = []
    for j in range(2):
        out = os.path.join(tmp, f"mnist{j}")
        cmd = [tool, "--out", out, "--seed", "9", "--size", "128", "--digits", "20",
               "--train-per-class", "3", "--test-per-class", "2"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 3:  # the MNIST digits cannot be fetched here: skip, do not pass
            print("io_roundtrip: SKIPPED cluttered MNIST:", r.stderr.strip())
            return "skip"
        check(r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
        outs.append(out)
    for split in ("train", "test"):
        p0, p1 = (os.path.join(o, f"{split}.h5") for o in outs)
        with open(p0, "rb") as f0, open(p1, "rb") as f1:
            check(f0.read() == f1.read(), f"{split}.h5 differs between two runs with one seed")
        roundtrip(a.dump, p0)
    src = {}
    for split, per in (("train", 3), ("test", 2)):
        with h5py.File(os.path.join(outs[0], f"{split}.h5"), "r", locking=False) as f:
            y = f["meta/label"][:]
            check(list(np.bincount(y, minlength=9)) == [per] * 9, f"{split}: {per} per class")
            check([s.decode() for s in f.attrs["class_names"]] == [str(k) for k in range(1, 10)],
                  "class names 1..9")
            idx, lab = f["cells/image_index"][:], f["cells/label"][:]
            for i in range(len(y)):
                sel = lab[idx == i]
                k = y[i] + 1
                nk = max(1, int(np.floor(20 * k / 10 + 0.5)))
                check(len(sel) == 20 and (sel == y[i]).sum() == nk and (sel == -1).sum() == 20 - nk,
                      f"{split} image {i} (label {k}): {nk} digits {k} and {20 - nk} zeros")
            # the digit's class is its label + 1, or 0 for a zero
            digit = np.where(lab >= 0, lab + 1, 0)
            src[split] = set(zip(digit.tolist(), f["cells/source"][:].tolist()))
            img = f["images"][0, 0]
            check(img.dtype == np.uint8 and img.max() > 200, "digits are bright uint8")
    check(not (src["train"] & src["test"]), "train and test digit pools are disjoint")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--milscreen", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--only")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ms_io_roundtrip.") as tmp:
        if a.only in (None, "synth"):
            test_synth(a, tmp)
            test_synth_multilabel(a, tmp)
        if a.only in (None, "mnist"):
            if test_mnist(a, tmp) == "skip" and not failures:
                return 77
    print(f"io_roundtrip: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
