#!/usr/bin/python3
"""Renders images of a milscreen shard as an RGB PNG to look at: channels mapped to
blue/green/red (DAPI-like first), each stretched between its 1st and 99.8th percentile;
with --masks the true mask outlines are drawn in white.
Usage: io_view.py SHARD OUT.png [--index i,j,...] [--masks]"""
import argparse
import h5py
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("shard")
ap.add_argument("out")
ap.add_argument("--index", default="0")
ap.add_argument("--masks", action="store_true")
a = ap.parse_args()
tiles = []
with h5py.File(a.shard, "r") as f:
    for i in [int(s) for s in a.index.split(",")]:
        img = f["images"][i].astype(np.float32)  # (C, H, W)
        C, H, W = img.shape
        rgb = np.zeros((H, W, 3), np.float32)
        order = [2, 1, 0] if C >= 3 else [1, 0]  # channel 0 -> blue ... or GFP green/RFP red
        cols = {3: [(0, 0, 1), (0, 1, 0), (1, 0, 0)], 2: [(0, 1, 0), (1, 0, 1)],
                1: [(1, 1, 1)]}[min(C, 3)]
        for c in range(min(C, 3)):
            lo, hi = np.percentile(img[c], [1, 99.8])
            v = np.clip((img[c] - lo) / max(hi - lo, 1), 0, 1)
            for k in range(3):
                rgb[..., k] += v * cols[c][k]
        if a.masks and "masks" in f:
            m = f["masks"][i]
            edge = np.zeros_like(m, bool)
            edge[:, 1:] |= m[:, 1:] != m[:, :-1]
            edge[1:, :] |= m[1:, :] != m[:-1, :]
            rgb[edge] = 1
        tiles.append((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
        labels = f["meta/labels"][i] if "meta/labels" in f else f["meta/label"][i]
        names = [s.decode() for s in f.attrs["class_names"]]
        print(i, f["meta/image_id"][i].decode(), labels if np.ndim(labels) else names[labels])
Image.fromarray(np.concatenate(tiles, axis=1)).save(a.out)
