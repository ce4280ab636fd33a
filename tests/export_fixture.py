"""What the export tests share: shards (milscreen synth, and a multi-label one made here with
h5py) and score outputs for them written with h5py in the layout of docs/FORMATS.md "Score
output", so that every value export must write is known here. Not a test by itself."""
import hashlib
import os
import subprocess

import h5py
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# The paper's network (configs/paper.ini from [pool0] on): receptive field centres at
# 34 + 16 * (u, v), derived by hand from its layers (avgpool 3/1, conv 3, conv 3, maxpool 3/2,
# conv 5, maxpool 3/2, conv 3, maxpool 3/2, conv 3, maxpool 3/2, conv 1, conv 1):
# sum of (size-1)/2 times the stride so far = 1+1+1+1 + 2*2+1*2 + 4+4 + 8+8 = 34.
STRIDE, OFFSET = 16, 34.0


def net_config(channels, classes):
    net = open(os.path.join(ROOT, "configs", "paper.ini")).read()
    return (f"[net]\nchannels = {channels}\nclasses = {classes}\nrounding = ceil\n"
            + net[net.index("[pool0]"):])


def map_side(n):
    """The paper network's instance-map side for an n-pixel side (valid convs, ceil pools)."""
    def pool(x):  # 3/2, ceil mode
        return -(-(x - 3) // 2) + 1
    n = n - 2          # avgpool 3/1
    n = n - 2 - 2      # conv1, conv2
    n = pool(n) - 4    # pool1, conv3 (5)
    n = pool(n) - 2    # pool2, conv4
    n = pool(n) - 2    # pool3, conv5
    return pool(n)     # pool4; conv6, conv7 are 1x1


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def strings(values):
    """Fixed-length UTF-8 strings, as milscreen writes them."""
    enc = [v.encode() for v in values]
    return np.array(enc, dtype=f"S{max(1, max(len(e) for e in enc))}")


def synth(ms, out, seed=3):
    r = subprocess.run([ms, "synth", "--preset", "tiny", "--out", out, "--seed", str(seed)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)


def spice_shard(path, pixel_size=(0.65, 0.5)):
    """Names a spreadsheet must quote: a class with a comma, one with quotes, a treatment with
    a comma, a quote, a line break and non-ASCII text; plus a pixel size."""
    with h5py.File(path, "r+") as f:
        names = [s.decode() for s in f.attrs["class_names"]]
        names[1] = 'Microtubule "stabilizers"'
        names[2] = "Actin, disruptors"
        f.attrs["class_names"] = strings(names)
        t = [s.decode() for s in f["meta/treatment"][:]]
        t[0] = 'taxol, 0.3 "\u00b5M"\nbatch 2'
        del f["meta/treatment"]
        f["meta/treatment"] = strings(t)
        if pixel_size:
            f.attrs["pixel_size_um"] = np.array(pixel_size, np.float64)


def multilabel_shard(path, n=7, k=4, h=80, w=96, rng=None):
    """A multi-label shard with one unknown row, no cells, no masks, uint8 pixels."""
    rng = rng or np.random.default_rng(7)
    labels = (rng.random((n, k)) < 0.4).astype(np.uint8)
    labels[np.arange(n), np.arange(n) % k] = 1
    labels[3] = 255
    with h5py.File(path, "w") as f:
        f.attrs["format"] = np.bytes_(b"milscreen-shard")
        f.attrs["format_version"] = 1
        f.attrs["channel_names"] = strings(["GFP", "RFP"])
        f.attrs["class_names"] = strings(["nucleus", "ER", "mito", "vacuole"][:k])
        f.attrs["multi_label"] = 1
        f.create_dataset("images", data=rng.integers(0, 256, (n, 2, h, w), dtype=np.uint8),
                         chunks=(1, 2, h, w), compression="gzip", shuffle=True)
        f["meta/image_id"] = strings([f"y{i}" for i in range(n)])
        f["meta/plate"] = strings(["YEAST-1"] * n)
        f["meta/well"] = strings(["C7", "c7", "H12", "A1", "A1", "A1", "B2"][:n])
        f["meta/site"] = np.array([2, 1, 0, 5, 3, 4, 0][:n], np.int32)
        f["meta/treatment"] = strings([f"ORF{i}" for i in range(n)])
        f["meta/replicate"] = np.ones(n, np.int32)
        f["meta/labels"] = labels
    return labels


def score_output(out, shard, classes, rng, cells=True, class_masks=True, maps=True,
                 masks=True):
    """A score output for shard with made-up but known values; returns them."""
    with h5py.File(shard, "r") as f:
        n, c, hh, ww = f["images"].shape
        ids = [s.decode() for s in f["meta/image_id"][:]]
        has_cells = "cells/image_index" in f
        cell_img = f["cells/image_index"][:] if has_cells else None
        true = (f["masks"][:] > 0) if "masks" in f else rng.random((n, hh, ww)) < 0.3
    k = len(classes)
    mil = rng.random((n, k)).astype(np.float32)
    fc = rng.random((n, k)).astype(np.float32)
    fc /= fc.sum(1, keepdims=True)
    v = {"ids": ids, "mil": mil, "fc": fc, "pred": np.argmax(fc, 1).astype(np.int32),
         "classes": classes}
    with h5py.File(out, "w") as f:
        f["image_id"] = strings(ids)
        f["mil_prob"] = mil
        f["fc_prob"] = fc
        f["pred"] = v["pred"]
        if maps:
            mh, mw = map_side(hh), map_side(ww)
            v["maps"] = rng.random((n, k, mh, mw)).astype(np.float32)
            v["maps"][0, 0, 0, 0] = 1.0  # the ends of the range
            v["maps"][0, 0, 0, 1] = 0.0
            f.create_dataset("maps", data=v["maps"], chunks=(1, k, mh, mw), compression="gzip")
        if masks:
            m = true.astype(np.uint8)
            m[:, :3, :] = 1  # not the truth: a band of wrong pixels
            v["masks"] = m
            f.create_dataset("masks", data=m, chunks=(1, hh, ww), compression="gzip")
        if class_masks:
            v["class_masks"] = (rng.random((n, k, hh, ww)) < 0.2).astype(np.uint8)
            f.create_dataset("class_masks", data=v["class_masks"], chunks=(1, 1, hh, ww),
                             compression="gzip")
        if cells and has_cells:
            v["cell_prob"] = rng.random((len(cell_img), k)).astype(np.float32)
            f["cells/prob"] = v["cell_prob"]
            f["cells/image_index"] = cell_img.astype(np.int32)
        f.attrs["format"] = "milscreen-scores"
        f.attrs["format_version"] = 1
        f.attrs["class_names"] = strings(classes)
        f.attrs["source"] = os.path.abspath(shard)
        f.attrs["source_digest"] = sha256(shard)
        f.attrs["config"] = net_config(c, k)
    return v


def upsampled(m, hh, ww):
    """A class map (h, w) at every pixel: the value of the instance whose centre, OFFSET +
    STRIDE * (u, v), is nearest (ties to the next), clamped at the borders; as stored,
    round(p * 65535)."""
    h, w = m.shape
    v = np.clip(np.floor((np.arange(hh) - OFFSET) / STRIDE + 0.5), 0, h - 1).astype(int)
    u = np.clip(np.floor((np.arange(ww) - OFFSET) / STRIDE + 0.5), 0, w - 1).astype(int)
    return np.rint(m[v][:, u].astype(np.float64) * 65535)
