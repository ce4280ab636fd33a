#!/usr/bin/python3
"""Integration test of `milscreen eval` and `milscreen render` on small shards and score
outputs made here with h5py (the layout of DESIGN.md section 3): every number eval prints
in its JSON is recomputed with sklearn / numpy, and render's PNG is checked for size and
content. Usage: test_eval_render.py --milscreen PATH [--keep DIR]"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, balanced_accuracy_score

FAILS = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        FAILS.append(msg)


def close(a, b, tol=1e-5):
    # eval prints 6 decimals; its metrics are computed in double from the same float32 data
    return a is not None and b is not None and abs(a - b) <= tol


def make_pair(d, name, n, k, rng, multilabel=False, treat_offset=0, with_cells=True,
              h=96, w=120, c=2):
    """A shard and its score output. Cells: 3 bright discs per image on a dim background,
    so that Otsu's split is unambiguous and equals the true mask."""
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.zeros((n, c, h, w), np.uint16)
    true = np.zeros((n, h, w), np.uint8)
    cells = []
    for i in range(n):
        img = rng.integers(90, 110, size=(c, h, w))
        for j in range(3):
            cx, cy = rng.integers(15, w - 15), rng.integers(15, h - 15)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= 8 ** 2
            true[i][disc] = 1
            cells.append((i, cx, cy))
        img[:, true[i] > 0] = rng.integers(2900, 3100, size=(c, int(true[i].sum())))
        images[i] = img
    labels = rng.integers(0, k, size=n)
    labels[0] = -1  # one unknown
    treatments = np.array([b"T%d" % (treat_offset + i // 3) for i in range(n)])
    shard = os.path.join(d, name + ".h5")
    with h5py.File(shard, "w") as f:
        # The shard format of docs/FORMATS.md (milscreen-shard version 1).
        f.attrs["format"] = np.bytes_(b"milscreen-shard")
        f.attrs["format_version"] = 1
        f.attrs["channel_names"] = np.array([b"ch%d" % j for j in range(c)])
        f.attrs["class_names"] = np.array([b"class_%d" % j for j in range(k)])
        f.attrs["multi_label"] = int(multilabel)
        f.create_dataset("images", data=images, chunks=(1, c, h, w), compression="gzip",
                         shuffle=True)
        f.create_dataset("meta/image_id", data=np.array([b"%s_%d" % (name.encode(), i)
                                                         for i in range(n)]))
        f.create_dataset("meta/plate", data=np.array([name.encode()] * n))
        f.create_dataset("meta/well", data=np.array([b"B%02d" % (i // 3) for i in range(n)]))
        f.create_dataset("meta/site", data=(np.arange(n) % 3).astype(np.int32))
        if multilabel:
            multi = (rng.random((n, k)) < 0.4).astype(np.uint8)
            multi[np.arange(n), np.arange(n) % k] = 1
            multi[3] = 255  # an unknown row (docs/FORMATS.md)
            f.create_dataset("meta/labels", data=multi)
        else:
            f.create_dataset("meta/label", data=labels.astype(np.int32))
        f.create_dataset("meta/treatment", data=treatments)
        f.create_dataset("meta/replicate", data=(np.arange(n) % 3).astype(np.int32))
        # True masks as instance ids (uint16, 0 background), as synthetic shards store them.
        f.create_dataset("masks", data=true.astype(np.uint16) * (np.arange(n) % 5 + 1)[:, None,
                                                                                      None])
        cells = np.array(cells)
        # A third of the cells look like control cells (-1), unlike their image's label.
        cell_label = np.where((cells[:, 0] == 0) | (np.arange(len(cells)) % 3 == 2), -1,
                              labels[cells[:, 0]]).astype(np.int32)
        f.create_dataset("cells/image_index", data=cells[:, 0].astype(np.int32))
        f.create_dataset("cells/x", data=cells[:, 1].astype(np.float32))
        f.create_dataset("cells/y", data=cells[:, 2].astype(np.float32))
        f.create_dataset("cells/label", data=cell_label)
    m = len(cells)
    # Probabilities correlated with the labels, so metrics are neither 0 nor 1.
    def probs(rows, lab):
        p = rng.random((rows, k)).astype(np.float32)
        good = rng.random(rows) < 0.7
        p[good, np.maximum(lab[good], 0)] += 0.8
        return p / p.sum(1, keepdims=True)
    mil = probs(n, labels)
    fc = probs(n, labels)
    cell_prob = probs(m, labels[cells[:, 0]])
    # Masks: the truth with a band of wrong pixels, so IoU is below 1 and known exactly.
    masks = true.copy()
    masks[:, :4, :] = 1
    mh, mw = 4, 6
    maps = rng.random((n, k, mh, mw)).astype(np.float32)
    out = os.path.join(d, name + ".scores.h5")
    with h5py.File(out, "w") as f:
        f.create_dataset("image_id", data=np.array([b"%s_%d" % (name.encode(), i)
                                                    for i in range(n)]))
        f.create_dataset("mil_prob", data=mil)
        f.create_dataset("fc_prob", data=fc)
        f.create_dataset("pred", data=np.argmax(fc, 1).astype(np.int32))
        f.create_dataset("maps", data=maps)
        f.create_dataset("masks", data=masks)
        if with_cells:
            f.create_dataset("cells/prob", data=cell_prob)
            f.create_dataset("cells/image_index", data=cells[:, 0].astype(np.int32))
        f.attrs["format"] = "milscreen-scores"
        f.attrs["format_version"] = 1
        f.attrs["source"] = shard
        f.attrs["class_names"] = np.array([b"class_%d" % j for j in range(k)])
        f.attrs["config"] = ""
    return dict(out=out, shard=shard, labels=labels, treat=treatments, rep=np.arange(n) % 3,
                mil=mil, fc=fc,
                cell_prob=cell_prob, cell_label=cell_label,
                masks=masks, true=true, multi=multi if multilabel else None,
                cell_img=cells[:, 0])


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def treatment_acc(prob, labels, treat, rep):
    """Median over replicates of each replicate's mean prediction."""
    right = n = 0
    for t in np.unique(treat):
        idx = np.flatnonzero(treat == t)
        lab = labels[idx]
        lab = lab[lab >= 0]
        if lab.size == 0:
            continue
        want = np.argmax(np.bincount(lab))
        means = [prob[idx[rep[idx] == r]].astype(np.float64).mean(0) for r in np.unique(rep[idx])]
        n += 1
        right += int(np.argmax(np.median(np.array(means), 0)) == want)
    return right / n, n


def run(args, expect_rc=0):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != expect_rc:
        print(r.stdout, r.stderr)
    return r


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def png_pixels(path):
    """Decodes an 8-bit RGB, non-interlaced PNG (what milscreen writes) with zlib alone."""
    data = open(path, "rb").read()
    pos, idat, w, h = 8, b"", 0, 0
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
        elif ft == 1:  # Sub: a running sum per channel, modulo 256
            cur = np.cumsum(line.reshape(w, 3), axis=0).reshape(-1) & 255
        elif ft == 2:  # Up
            cur = (line + prev) & 255
        else:  # Average and Paeth depend on the pixel just decoded: one at a time
            ln, up, cur_l = line.tolist(), prev.tolist(), [0] * (w * 3)
            for x in range(w * 3):
                a = cur_l[x - 3] if x >= 3 else 0
                b = up[x]
                if ft == 3:
                    pr = (a + b) // 2
                else:
                    c = up[x - 3] if x >= 3 else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur_l[x] = (ln[x] + pr) & 255
            cur = np.array(cur_l, np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--milscreen", required=True)
    ap.add_argument("--keep", help="write the files here and keep them")
    a = ap.parse_args()
    rng = np.random.default_rng(5)
    d = a.keep or tempfile.mkdtemp(prefix="ms_eval_")
    os.makedirs(d, exist_ok=True)
    ms = a.milscreen

    # --- single-label, two files pooled; treatments T0..T3 in A, T3..T6 in B (T3 spans both)
    A = make_pair(d, "plateA", 12, 3, rng)
    B = make_pair(d, "plateB", 12, 3, rng, treat_offset=3)
    js = os.path.join(d, "eval.json")
    r = run([ms, "eval", A["out"], B["out"], "--json", js])
    check(r.returncode == 0, "eval of two single-label outputs runs")
    print(r.stdout)
    e = json.load(open(js))
    lab = np.concatenate([A["labels"], B["labels"]])
    known = lab >= 0
    for head in ("fc", "mil"):
        p = np.concatenate([A[head], B[head]])
        pred = np.argmax(p, 1)
        check(close(e[head]["accuracy"], accuracy_score(lab[known], pred[known])),
              f"{head} accuracy {e[head]['accuracy']} equals sklearn's")
        check(close(e[head]["mean_class_accuracy"],
                    balanced_accuracy_score(lab[known], pred[known])),
              f"{head} mean class accuracy equals sklearn's balanced accuracy")
        want, nt = treatment_acc(p, lab, np.concatenate([A["treat"], B["treat"]]),
                                 np.concatenate([A["rep"], B["rep"]]))
        check(close(e["treatment"][head], want) and e["treatment"]["count"] == nt == 7,
              f"{head} treatment accuracy {e['treatment'][head]} over "
              f"{e['treatment']['count']} (numpy {want} over {nt}; T3 spans both files)")
    cp = np.concatenate([A["cell_prob"], B["cell_prob"]])
    cl = np.concatenate([A["cell_label"], B["cell_label"]])
    ck = cl >= 0
    check(close(e["cells"]["accuracy"], accuracy_score(cl[ck], np.argmax(cp, 1)[ck])),
          "per-cell accuracy equals sklearn's")
    onehot = np.eye(3, dtype=int)[cl[ck]]
    check(close(e["cells"]["map"], average_precision_score(onehot, cp[ck], average="macro")),
          f"per-cell mAP {e['cells']['map']} equals sklearn's (one class against the rest)")
    # Every cell labelled with its image's label (paper Table 2, "bag level labels").
    bag = np.concatenate([A["labels"][A["cell_img"]], B["labels"][B["cell_img"]]])
    bk = bag >= 0
    check(close(e["cells_image_label"]["accuracy"], accuracy_score(bag[bk],
                                                                   np.argmax(cp, 1)[bk])),
          "per-cell accuracy against image labels equals sklearn's")
    check(close(e["cells_image_label"]["map"],
                average_precision_score(np.eye(3, dtype=int)[bag[bk]], cp[bk], average="macro")),
          "per-cell mAP against image labels equals sklearn's")
    masks = np.concatenate([A["masks"], B["masks"]])
    true = np.concatenate([A["true"], B["true"]])
    want = np.mean([iou(m, t) for m, t in zip(masks, true)])
    check(close(e["masks"]["iou_mask_true"], want) and e["masks"]["with_truth"] == 24,
          f"mask IoU vs truth {e['masks']['iou_mask_true']} (numpy {want:.6f})")
    # The images are bimodal with far-apart modes: Otsu recovers the true masks exactly.
    check(close(e["masks"]["iou_otsu_true"], 1.0), "Otsu vs truth IoU is 1 on bimodal images")
    check(close(e["masks"]["iou_mask_otsu"], want), "mask vs Otsu IoU equals mask vs truth")

    # --- an output without masks: the Otsu baseline against the truth is still measured
    nomask = os.path.join(d, "nomask.scores.h5")
    shutil.copy(A["out"], nomask)
    with h5py.File(nomask, "a") as f:
        del f["masks"]
    r = run([ms, "eval", nomask, "--json", js])
    e = json.load(open(js))
    check(r.returncode == 0 and e["masks"]["iou_mask_true"] is None and
          close(e["masks"]["iou_otsu_true"], 1.0) and e["masks"]["with_truth"] == 12 and
          e["masks"]["images"] == 0, "no output masks: Otsu vs truth alone " + str(e["masks"]))

    # --- multi-label: mAP of both heads
    M = make_pair(d, "yeast", 20, 4, rng, multilabel=True, with_cells=False)
    r = run([ms, "eval", M["out"], "--json", js])
    check(r.returncode == 0, "eval of a multi-label output runs")
    e = json.load(open(js))
    for head in ("fc", "mil"):
        keep = np.all(M["multi"] <= 1, axis=1)  # rows of 255 are unknown
        want = average_precision_score(M["multi"][keep], M[head][keep], average="macro")
        check(close(e[head]["map"], want), f"{head} mAP {e[head]['map']} equals sklearn's "
              f"{want:.6f}")
    check(e["multilabel"] and e["cells"] is None and e["fc"]["accuracy"] is None,
          "multi-label: no accuracy, no cells")

    # --- errors name the problem
    bad = os.path.join(d, "bad.h5")
    with h5py.File(bad, "w") as f:
        f.attrs["format"] = "something-else"
    r = run([ms, "eval", bad], expect_rc=1)
    check(r.returncode == 1 and "not a milscreen score file" in r.stderr,
          "a foreign file is refused: " + r.stderr.strip())
    r = run([ms, "eval"], expect_rc=2)
    check(r.returncode == 2, "no files is a usage error")
    moved = os.path.join(d, "moved")
    os.makedirs(moved, exist_ok=True)
    with h5py.File(A["out"], "a") as f:
        f.attrs["source"] = "/nonexistent/plateA.h5"
    r = run([ms, "eval", A["out"]])
    check(r.returncode == 0, "a moved shard is found beside its output")

    # --- render
    png = os.path.join(d, "render.png")
    r = run([ms, "render", "--input", A["out"], "--index", "4", "--zoom", "1", "--out", png])
    check(r.returncode == 0 and os.path.exists(png), "render writes a PNG: " + r.stdout.strip())
    if os.path.exists(png):
        w, h = png_size(png)
        check(w > 120 and h >= 96, f"PNG {w}x{h}: the 120x96 image plus a text panel")
        px = png_pixels(png)
        cyan = (px[:96, :120, 0] == 0) & (px[:96, :120, 1] == 255) & (px[:96, :120, 2] == 255)
        check(cyan.sum() > 50, f"mask outline drawn ({cyan.sum()} cyan pixels)")
        yellow = (px[:, 120:, 0] == 255) & (px[:, 120:, 1] == 230)
        check(yellow.sum() > 20, "the shown class highlighted in the panel")
    r = run([ms, "render", "--input", A["out"], "--index", "99", "--out", png], expect_rc=2)
    check(r.returncode == 2 and "12 images" in r.stderr, "index out of range: " +
          r.stderr.strip())
    r = run([ms, "render", "--input", A["out"], "--index", "1", "--class", "nope", "--out", png],
            expect_rc=2)
    check(r.returncode == 2, "unknown class name is an error")
    r = run([ms, "render", "--input", A["out"], "--index", "1", "--class", "class_2",
             "--colours", "red,cyan", "--no-mask", "--out", png])
    check(r.returncode == 0 and "class map 2" in r.stdout, "class by name, colours, no mask")
    r = run([ms, "render", "--input", A["out"], "--id", "plateA_7", "--out", png])
    check(r.returncode == 0 and "image 7 " in r.stdout, "image chosen by its id")
    if r.returncode == 0:
        w, h = png_size(png)
        check(w > 4 * 120 and h == 4 * 96, f"a 120x96 image is enlarged 4 times ({w}x{h})")
    r = run([ms, "render", "--input", A["out"], "--id", "nope", "--out", png], expect_rc=2)
    check(r.returncode == 2 and "no such image" in r.stderr, "unknown id is an error")

    # --- the panel says where the image comes from, in the case the shard spells it
    r = run([ms, "render", "--input", A["out"], "--index", "4", "--zoom", "1", "--out", png])
    panel = [l[4:] for l in r.stdout.splitlines() if l.startswith("  | ")]
    check("plate plateA  well B01  site 1" in panel and "treatment T1  replicate 1" in panel and
          "image 4  plateA_4" in panel, "plate, well, site, treatment in the panel: " +
          repr(panel[:3]))
    check("ch0" in panel and "ch1" in panel, "the channels' names in the legend")
    check("no scale bar" in r.stdout, "no pixel size recorded: no scale bar, and it says so")
    # heat colour bar: a row of the panel going from (255,230,0) to (255,0,0) left to right
    px = png_pixels(png)
    side = px[:, 120:]
    best = 0
    for y in range(side.shape[0]):
        row = side[y]
        ramp = np.flatnonzero((row[:, 0] == 255) & (row[:, 2] == 0) & (row[:, 1] <= 230))
        if len(ramp) > 50 and row[ramp[0], 1] == 230 and row[ramp[-1], 1] == 0 and \
                np.all(np.diff(row[ramp, 1]) <= 0) and np.all(np.diff(ramp) == 1):
            best = max(best, len(ramp))
    check(best > 100, f"the heat colour bar: yellow to red over {best} pixels")

    # --- a scale bar where the shard records its pixel size
    with h5py.File(A["shard"], "a") as f:
        f.attrs["pixel_size_um"] = np.array([0.5, 0.4])  # (y, x) micrometres per pixel
    r = run([ms, "render", "--input", A["out"], "--index", "4", "--zoom", "2",
             "--colours", "red,green", "--out", png])
    # 120 px * 0.4 um = 48 um wide; a fifth is 9.6: a 5 um bar of 12.5 px, 25 at zoom 2
    check(r.returncode == 0 and "scale bar 5 \u00b5m = 25 pixels" in r.stdout,
          "scale bar from pixel_size_um (x): " + r.stdout.splitlines()[1 if r.stdout else 0])
    px = png_pixels(png)
    img = px[:192, :240]
    white = np.all(img == 255, axis=2)  # red+green images have no white pixel of their own
    runs = []
    for y in range(img.shape[0]):
        xs = np.flatnonzero(white[y])
        if len(xs):
            # longest run of consecutive white pixels in this row
            splits = np.split(xs, np.flatnonzero(np.diff(xs) != 1) + 1)
            longest = max(splits, key=len)
            runs.append((len(longest), y, longest[0]))
    longest = max(runs) if runs else (0, 0, 0)
    check(longest[0] == 25 and longest[1] > 192 * 0.8 and longest[2] < 240 * 0.2,
          f"the bar is 25 white pixels at the bottom left (run {longest})")
    # swatches in the legend: the channels' colours, red and green, in the panel
    side = px[:, 240:]
    for name, rgb in (("red", (255, 0, 0)), ("green", (0, 255, 0))):
        n = np.all(side == rgb, axis=2).sum()
        check(n >= 16, f"a {name} swatch in the legend ({n} pixels)")
    with h5py.File(A["shard"], "a") as f:
        f.attrs["pixel_size_um"] = np.array([0.5, -1.0])
    r = run([ms, "render", "--input", A["out"], "--index", "4", "--out", png], expect_rc=1)
    check(r.returncode == 1 and "pixel_size_um" in r.stderr,
          "a nonsensical pixel size is an error, not a wrong bar: " + r.stderr.strip())
    with h5py.File(A["shard"], "a") as f:
        del f.attrs["pixel_size_um"]

    # --- --class: a name, or #index; a class named "3" is never index 3
    named = os.path.join(d, "named.scores.h5")
    shutil.copy(A["out"], named)
    with h5py.File(named, "a") as f:
        f.attrs["class_names"] = np.array([b"2", b"0", b"1"])
    r = run([ms, "render", "--input", named, "--index", "1", "--class", "2", "--out", png])
    check(r.returncode == 0 and "class map 0 (2, by name)" in r.stdout,
          "--class 2 is the class named \"2\" (index 0): " + r.stdout.splitlines()[0])
    r = run([ms, "render", "--input", named, "--index", "1", "--class", "#2", "--out", png])
    check(r.returncode == 0 and "class map 2 (1, by index)" in r.stdout,
          "--class '#2' is index 2 (named \"1\"): " + r.stdout.splitlines()[0])
    r = run([ms, "render", "--input", A["out"], "--index", "1", "--class", "2", "--out", png],
            expect_rc=2)
    check(r.returncode == 2 and "'#2'" in r.stderr,
          "a number that names no class is refused, pointing to #2: " + r.stderr.strip())
    r = run([ms, "render", "--input", A["out"], "--index", "1", "--class", "#3", "--out", png],
            expect_rc=2)
    check(r.returncode == 2 and "#0 to #2" in r.stderr, "#3 of 3 classes is refused")
    r = run([ms, "render", "--input", A["out"], "--index", "1", "--class", "CLASS_1",
             "--out", png])
    check(r.returncode == 0 and "class map 1 (class_1, by name)" in r.stdout,
          "a name in another case, when unambiguous")

    if not a.keep:
        shutil.rmtree(d)
    if FAILS:
        print(f"{len(FAILS)} failed")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
