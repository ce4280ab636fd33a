#!/usr/bin/python3
"""Files that lie (issue 11, items 4, 5 and 6), made here with h5py as another tool would.

4. Every byte read is a byte written: shards whose pixels, masks or labels were declared but
   never (or only partly) written -- contiguous, chunked with missing chunks, another chunk
   shape, another filter -- are refused naming the file, by the reader (tests/io_shard_dump,
   both decoding paths) and by `score`; HDF5 would read them as fill-value zeros with exit 0.
5. Checkpoints prove themselves: a flipped weight byte is refused naming the dataset, an edit
   that kept HDF5's checksums is refused by the digest, /norm must be finite with std > 0, a
   truncated file is refused; a version 1 checkpoint (written before checksums) still loads and
   scores the same; a data.train list far over inih's 200-character line trains, scores and
   resumes.
6. Resources are checked before they are taken: a shard declaring huge images, a huge image
   count, a huge cell count, or more channels than memory holds is refused up front.
usage: fault_files.py MILSCREEN IO_SHARD_DUMP ROOT"""
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""),
          flush=True)
    if not ok:
        failures.append(name)
    return ok


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def shard(path, n=4, c=3, h=64, w=64, chunks="image", compression=None, fletcher32=False,
          write_images=True, skip=(), masks=None, write_labels=True, classes=("a", "b", "c"),
          rng=np.random.default_rng(1), declare=None, cells=None):
    """A shard as another tool would make it. chunks: None (contiguous), "image" (1, C, H, W)
    or a tuple; skip: images whose pixels are never written, or "half": the bottom halves of
    the last two; masks: None, "all" or the images whose mask is written; declare: an /images
    shape declared without data; cells: a /cells count declared without data."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "milscreen-shard"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["channel_names"] = [f"ch{j}" for j in range(c)]
        f.attrs["class_names"] = list(classes)
        f.attrs["multi_label"] = np.int64(0)
        shape = declare or (n, c, h, w)
        n = shape[0]
        ch = (1, shape[1], shape[2], shape[3]) if chunks == "image" else chunks
        d = f.create_dataset("images", shape=shape, dtype="u2", chunks=ch,
                             compression=compression, fletcher32=fletcher32)
        pix = rng.integers(0, 4096, size=tuple(shape), dtype=np.uint16) \
            if write_images else None
        if write_images and skip == "half":  # the last two images' bottom halves missing
            d[:n - 2] = pix[:n - 2]
            d[n - 2:, :, :shape[2] // 2] = pix[n - 2:, :, :shape[2] // 2]
        elif write_images:
            for i in range(n):
                if i not in skip:
                    d[i] = pix[i]
        m = f.create_group("meta")
        if n > 64:  # a huge count: the metadata declared as long, never written
            for k in ("image_id", "plate", "well", "treatment"):
                m.create_dataset(k, shape=(n,), dtype="S8", chunks=(1 << 16,))
            for k in ("site", "replicate", "label"):
                m.create_dataset(k, shape=(n,), dtype="i4", chunks=(1 << 16,))
        else:
            m["image_id"] = np.array([f"i{i}".encode() for i in range(n)])
            for k in ("plate", "well", "treatment"):
                m[k] = np.array([b"P1"] * n)
            m["site"] = np.zeros(n, "i4")
            m["replicate"] = np.ones(n, "i4")
            if write_labels:
                m["label"] = (np.arange(n) % len(classes)).astype("i4")
            else:
                m.create_dataset("label", shape=(n,), dtype="i4")  # declared, never written
        if masks is not None:
            md = f.create_dataset("masks", shape=(n, shape[2], shape[3]), dtype="u2",
                                  chunks=(1, shape[2], shape[3]), compression="gzip")
            for i in (range(n) if masks == "all" else masks):
                md[i] = (pix[i, 0] > 2000).astype(np.uint16)
        if cells is not None:
            g = f.create_group("cells")
            for k, t in (("image_index", "i4"), ("label", "i4"), ("x", "f4"), ("y", "f4")):
                g.create_dataset(k, shape=(cells,), dtype=t, chunks=(1 << 16,))
    return pix


def dump(tool, path):
    return sh([tool, path])


def refused(name, r, *words):
    err = r.stderr
    return check(name, r.returncode != 0 and r.returncode < 128 and all(w in err for w in words),
                 f"exit {r.returncode}: {err.strip()[-300:]}")


def data_offset(ds):
    """File offset of a dataset's first stored byte (chunked or contiguous)."""
    return ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()

def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    ms, tool, root = (os.path.abspath(a) for a in sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="ms-fault-files-")
    try:
        os.chdir(tmp)
        run_checks(ms, tool, root)
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)
    print("fault_files: " + ("FAILED: " + "; ".join(failures) if failures else "all checks passed"))
    return 1 if failures else 0


def run_checks(ms, tool, root):
    # -- 4. every byte read is a byte written ---------------------------------------------
    pix = shard("whole_contig.h5", chunks=None, masks="all")
    r = dump(tool, "whole_contig.h5")
    check("a whole h5py shard, contiguous /images (the generic path), reads", r.returncode == 0,
          r.stderr)
    pix2 = shard("whole_tiles.h5", chunks=(2, 3, 32, 64), compression="gzip", masks="all")
    r = dump(tool, "whole_tiles.h5")
    check("a whole h5py shard, chunks of 2 images in half tiles, reads", r.returncode == 0,
          r.stderr)
    with h5py.File("whole_tiles.h5", "r") as f:
        check("(and h5py agrees with what it wrote)", np.array_equal(f["images"][()], pix2[:4]))
    del pix

    shard("contig_unwritten.h5", chunks=None, write_images=False)
    refused("contiguous /images never written: refused", dump(tool, "contig_unwritten.h5"),
            "contig_unwritten.h5", "never written")
    shard("tiles_missing.h5", chunks=(2, 3, 32, 64), compression="gzip", skip="half")
    refused("another chunk shape, one image's chunks missing: refused",
            dump(tool, "tiles_missing.h5"), "tiles_missing.h5", "chunks were written")
    shard("filter_missing.h5", compression="gzip", fletcher32=True, skip=(1,))
    refused("another filter (fletcher32: HDF5's own decoding), a chunk missing: refused",
            dump(tool, "filter_missing.h5"), "filter_missing.h5", "chunks were written")
    shard("mask_missing.h5", masks=(0, 1, 3))
    refused("/masks with a mask never written: refused", dump(tool, "mask_missing.h5"),
            "mask_missing.h5", "masks", "chunks were written")
    shard("labels_unwritten.h5", write_labels=False)
    refused("/meta/label declared, never written (it would read as class 0): refused",
            dump(tool, "labels_unwritten.h5"), "labels_unwritten.h5", "meta/label",
            "never written")

    # -- 6. resources checked before they are taken ---------------------------------------
    shard("huge_image.h5", declare=(1, 3, 200000, 200000), chunks=None, write_images=False)
    refused("an image declared 200000 x 200000: refused with the memory it would take",
            dump(tool, "huge_image.h5"), "huge_image.h5", "GiB per image")
    shard("many_channels.h5", declare=(1, 1024, 16384, 16384), chunks=None,
          write_images=False)
    refused("1024 channels of 16384 x 16384 (under the plane limit): refused, more than memory",
            dump(tool, "many_channels.h5"), "many_channels.h5", "GiB", "memory")
    shard("huge_count.h5", declare=(1 << 28, 1, 4, 4), write_images=False)
    refused("2^28 images declared, none written: refused before N sizes an allocation",
            dump(tool, "huge_count.h5"), "huge_count.h5", "chunks were written")
    shard("huge_cells.h5", cells=1 << 29)
    refused("2^29 cells declared, none written: refused before the count sizes an allocation",
            dump(tool, "huge_cells.h5"), "huge_cells.h5", "cells")

    # ...but a shard larger than memory is fine: only one image at a time is held. 800 images
    # of 4096 x 4096, black: 25 GiB of pixels in 25 MB of deflated chunks, written directly
    n_big = max(800, int(1.05 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                         / (4096 * 4096 * 2)) + 1)
    with h5py.File("larger_than_memory.h5", "w") as f:
        f.attrs["format"] = "milscreen-shard"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["channel_names"] = ["dna"]
        f.attrs["class_names"] = ["a", "b", "c"]
        f.attrs["multi_label"] = np.int64(0)
        d = f.create_dataset("images", shape=(n_big, 1, 4096, 4096), dtype="u2",
                             chunks=(1, 1, 4096, 4096), compression="gzip", shuffle=True)
        black = zlib.compress(bytes(4096 * 4096 * 2), 1)
        for i in range(n_big):
            d.id.write_direct_chunk((i, 0, 0, 0), black)
        f["meta/image_id"] = np.array([f"i{i}".encode() for i in range(n_big)])
        for k in ("plate", "well", "treatment"):
            f[f"meta/{k}"] = np.array([b"P1"] * n_big)
        f["meta/site"] = np.zeros(n_big, "i4")
        f["meta/replicate"] = np.ones(n_big, "i4")
        f["meta/label"] = (np.arange(n_big) % 3).astype("i4")
    r = sh([ms, "train", "--config", os.path.join(root, "configs", "paper.ini"), "--set",
            "net.channels=1", "--set", "net.classes=3", "--set", "train.crop=900",
            "--set", "data.train=larger_than_memory.h5", "--run", "big", "--dry-run"])
    check(f"a shard of {n_big} 4096 x 4096 images, more than memory, opens (train --dry-run)",
          r.returncode == 0 and f"{n_big} labelled images" in r.stdout, r.stderr[-300:])

    # -- 5. checkpoints prove themselves ----------------------------------------------------
    r = sh([ms, "synth", "--preset", "tiny", "--size", "64x64", "--sites", "1", "--treatments",
            "2", "--replicates", "2", "--out", "data", "--threads", "1"])
    if not check("synth", r.returncode == 0, r.stderr):
        return
    # a data.train list far longer than inih's 200-character line: the same shard, spelled
    # through many ./ prefixes (the loader takes each entry as one shard)
    long_path = "./" * 120 + "data/train.h5"
    tiny = ["--config", os.path.join(root, "configs", "paper.ini"),
            "--set", "conv1.filters=4", "--set", "conv2.filters=4", "--set", "conv3.filters=4",
            "--set", "conv4.filters=8", "--set", "conv5.filters=8", "--set", "conv6.filters=8",
            "--set", "net.classes=3", "--set", "train.crop=0", "--set", "train.batch=2",
            "--set", f"data.train={long_path} {long_path}", "--set", "data.val=data/test.h5",
            "--set", "train.checkpoint_every=2", "--set", "train.keep=5",
            "--threads", "1", "--progress", "lines"]
    r = sh([ms, "train", *tiny, "--set", "train.epochs=1", "--run", "long"])
    if not check(f"train with a data.train of {2 * len(long_path) + 1} characters",
                 r.returncode == 0, r.stderr[-500:]):
        return
    ck_long = os.path.join("long", sorted(f for f in os.listdir("long") if f.startswith("ckpt-"))[-1])
    r = sh([ms, "score", "--checkpoint", ck_long, "--out", "s_long", "--threads", "1",
            "data/test.h5"])
    check("...its checkpoint loads (score)", r.returncode == 0, r.stderr[-500:])
    r = sh([ms, "train", *tiny, "--set", "train.epochs=2", "--run", "long", "--resume"])
    check("...and resumes", r.returncode == 0 and "(resumed)" in r.stdout, r.stderr[-500:])

    # the damage below is done to a checkpoint of a short config
    short = [a if not a.startswith("data.train=") else "data.train=data/train.h5" for a in tiny]
    r = sh([ms, "train", *short, "--set", "train.epochs=1", "--run", "short"])
    if not check("train with a short config", r.returncode == 0, r.stderr[-300:]):
        return
    ck = os.path.join("short", sorted(f for f in os.listdir("short") if f.startswith("ckpt-"))[-1])
    with h5py.File(ck, "r") as f:
        check("checkpoint: format version 2, every weight dataset checksummed (fletcher32)",
              int(f.attrs["format_version"]) == 2 and all(
                  d.fletcher32 for d in (f["weights/conv1/weight"], f["weights/fc/weight"],
                                         f["norm/std"], f["optimizer/m"])))
    r = sh([ms, "score", "--checkpoint", ck, "--out", "s_good", "--threads", "1",
            "data/test.h5"])
    check("it scores", r.returncode == 0, r.stderr[-500:])
    good = None
    if os.path.exists("s_good/test.scores.h5"):
        with h5py.File("s_good/test.scores.h5", "r") as f:
            good = f["mil_prob"][()]

    def variant(name, edit):
        p = f"{name}.h5"
        shutil.copy(ck, p)
        edit(p)
        return sh([ms, "score", "--checkpoint", p, "--out", f"s_{name}", "--threads", "1",
                   "data/test.h5"])

    def flip(p):
        with h5py.File(p, "r") as f:
            off = data_offset(f["weights/conv2/weight"])
        with open(p, "r+b") as fh:
            fh.seek(off + 5)
            b = fh.read(1)
            fh.seek(off + 5)
            fh.write(bytes([b[0] ^ 0x10]))
    refused("a flipped weight byte: refused, naming the dataset", variant("flip", flip),
            "weights/conv2/weight", "checksum")

    def edit(p):  # h5py keeps the checksums right: only the digest can tell
        with h5py.File(p, "r+") as f:
            f["weights/fc/bias"][0] += 0.5
    refused("weights edited after writing (checksums recomputed): refused by the digest",
            variant("edit", edit), "digest")

    def std0(p):
        with h5py.File(p, "r+") as f:
            f["norm/std"][1] = 0
    refused("/norm std 0: refused", variant("std0", std0), "norm", "std")

    def meannan(p):
        with h5py.File(p, "r+") as f:
            f["norm/mean"][0] = np.nan
    refused("/norm mean NaN: refused", variant("meannan", meannan), "norm")

    def truncate(p):
        with open(p, "r+b") as fh:
            fh.truncate(os.path.getsize(p) // 2)
    refused("a truncated checkpoint: refused, naming it", variant("trunc", truncate), "trunc.h5")

    def v1(p):  # as written before checksums: contiguous datasets, format_version 1
        with h5py.File(ck, "r") as src, h5py.File(p, "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            dst.attrs["format_version"] = np.int64(1)
            names = []
            src.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            for n in names:
                dst.create_dataset(n, data=src[n][()])
    r = variant("v1", v1)
    ok = check("a version 1 checkpoint (no checksums) still loads", r.returncode == 0,
               r.stderr[-300:])
    if ok:
        with h5py.File("s_v1/test.scores.h5", "r") as f:
            check("...and scores exactly as its version 2 copy",
                  good is not None and np.array_equal(f["mil_prob"][()], good))

    def v1edit(p):
        v1(p)
        with h5py.File(p, "r+") as f:
            f["weights/conv1/weight"][0, 0, 0, 0] += 1
    refused("a version 1 checkpoint with a changed weight: refused by the digest",
            variant("v1edit", v1edit), "digest")


if __name__ == "__main__":
    sys.exit(main())
