#!/usr/bin/python3
"""`milscreen ingest` on TIFFs this test makes: every variant the issue lists (8/16 bit, striped
and tiled, none/LZW/deflate/PackBits, multi-page, little/big-endian),
the pixels and metadata read back equal (and the shard round-trips through h5py, see
io_roundtrip.py; palette, RGB, OME-TIFF and the conversions are tests/io_tiff_formats.py); bad inputs fail naming the file and CSV line and leave no shard; BBBC021's
layout from tests/data/bbbc021 (an excerpt of the real tables) joins as published.
Usage: io_ingest.py --milscreen BIN --dump BIN --root SRCDIR"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import tifffile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import io_roundtrip  # noqa: E402  (h5py-side dump and comparison)

failures = 0
H, W = 37, 45


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", msg, file=sys.stderr)


def run(cmd, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if ok:
        check(r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return r


def tiffcp(src, dst, *opts):
    run(["tiffcp", *opts, src, dst])


def make_variants(d, rng):
    """Files with known pixels: {name: (path#page, array)}."""
    a16 = rng.integers(0, 65536, size=(H, W), dtype=np.uint16)
    a8 = rng.integers(0, 256, size=(H, W), dtype=np.uint8)
    v = {}
    base16, base8 = os.path.join(d, "b16.tif"), os.path.join(d, "b8.tif")
    tifffile.imwrite(base16, a16, photometric="minisblack", rowsperstrip=8)
    tifffile.imwrite(base8, a8, photometric="minisblack", rowsperstrip=8)
    v["u16_strips"] = (base16, a16)
    v["u8_strips"] = (base8, a8)
    for bits, base, arr in ((16, base16, a16), (8, base8, a8)):
        for comp in ("lzw", "zip", "packbits"):
            p = os.path.join(d, f"u{bits}_{comp}.tif")
            tiffcp(base, p, "-c", comp)
            v[f"u{bits}_{comp}"] = (p, arr)
            p = os.path.join(d, f"u{bits}_{comp}_tiled.tif")
            tiffcp(base, p, "-c", comp, "-t", "-w", "16", "-l", "16")
            v[f"u{bits}_{comp}_tiled"] = (p, arr)
        p = os.path.join(d, f"u{bits}_tiled.tif")
        tiffcp(base, p, "-c", "none", "-t", "-w", "32", "-l", "16")
        v[f"u{bits}_tiled"] = (p, arr)
        p = os.path.join(d, f"u{bits}_bigendian.tif")
        tiffcp(base, p, "-B", "-c", "none")
        v[f"u{bits}_bigendian"] = (p, arr)
        p = os.path.join(d, f"u{bits}_bigendian_lzw_tiled.tif")
        tiffcp(base, p, "-B", "-c", "lzw", "-t", "-w", "16", "-l", "16")
        v[f"u{bits}_bigendian_lzw_tiled"] = (p, arr)
    # palette, RGB, min-is-white and the other conversions: tests/io_tiff_formats.py
    # multi-page, one channel per page
    pages = rng.integers(0, 65536, size=(3, H, W), dtype=np.uint16)
    p = os.path.join(d, "pages.tif")
    with tifffile.TiffWriter(p) as tw:
        for pg in pages:
            tw.write(pg, photometric="minisblack", contiguous=False)
    for j in range(3):
        v[f"page{j}"] = (f"{p}#{j}", pages[j])
    return v


def write_manifest(path, rows, chans, label_col="label"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "plate", "well", "site", "treatment", "replicate", label_col] +
                   [f"file_{c}" for c in chans])
        for r in rows:
            w.writerow(r)


def shard_images(path):
    with h5py.File(path, "r", locking=False) as f:
        return f["images"][:], {k: f["meta/" + k][:] for k in f["meta"]}


def test_variants(a, tmp, rng):
    d = os.path.join(tmp, "tiffs")
    os.makedirs(d)
    v = make_variants(d, rng)
    names = sorted(v)
    # 16-bit manifest: channel "a" walks through every variant, channel "b" is page 1 or 2
    rows, want = [], []
    for i, n in enumerate(names):
        pb = "page1" if i % 2 else "page2"
        rows.append([f"img{i}", "PL1", f"A{i + 1:02d}", i % 3, f"cmpd{i % 4}", 1 + i % 3,
                     ["ctrl", "hit", ""][i % 3], os.path.relpath(v[n][0], tmp),
                     os.path.relpath(v[pb][0], tmp)])
        want.append(np.stack([v[n][1].astype(np.uint16), v[pb][1]]))
    man = os.path.join(tmp, "manifest.csv")
    write_manifest(man, rows, ["a", "b"])
    out = os.path.join(tmp, "out", "ingested.h5")
    os.makedirs(os.path.dirname(out))
    run([a.milscreen, "ingest", "--manifest", man, "--out", out, "--threads", "3"])
    if not os.path.exists(out):
        return
    imgs, meta = shard_images(out)
    check(imgs.dtype == np.uint16 and imgs.shape == (len(names), 2, H, W), f"shape {imgs.shape}")
    for i, n in enumerate(names):
        check(np.array_equal(imgs[i], want[i]), f"pixels of variant {n} differ")
    check([s.decode() for s in meta["image_id"]] == [f"img{i}" for i in range(len(names))], "ids")
    check(list(meta["site"]) == [i % 3 for i in range(len(names))], "sites")
    check(list(meta["replicate"]) == [1 + i % 3 for i in range(len(names))], "replicates")
    with h5py.File(out, "r", locking=False) as f:
        check([s.decode() for s in f.attrs["class_names"]] == ["ctrl", "hit"], "classes sorted")
        check([s.decode() for s in f.attrs["channel_names"]] == ["a", "b"], "channel names")
        check(list(f["meta/label"][:]) == [[0, 1, -1][i % 3] for i in range(len(names))],
              "labels, empty = -1")
    io_roundtrip.failures = 0
    io_roundtrip.roundtrip(a.dump, out)
    check(io_roundtrip.failures == 0, "ingested shard round trip through h5py")
    print(f"ingest: {len(names)} TIFF variants read back equal: {', '.join(names)}")

    # all 8-bit inputs make a uint8 shard; uncompressed, tiled; multi-label with --classes
    rows8 = [[f"p{i}", "PL2", "B01", i, "", "", "hit;ctrl" if i else "ctrl",
              os.path.relpath(v[n][0], tmp)]
             for i, n in enumerate(["u8_strips", "u8_lzw_tiled", "u8_bigendian"])]
    man8 = os.path.join(tmp, "manifest8.csv")
    write_manifest(man8, rows8, ["grey"], label_col="labels")
    out8 = os.path.join(tmp, "out", "u8.h5")
    run([a.milscreen, "ingest", "--manifest", man8, "--out", out8, "--compression", "none",
         "--tile", "16", "--classes", "hit,ctrl,other"])
    if os.path.exists(out8):
        imgs, _ = shard_images(out8)
        check(imgs.dtype == np.uint8 and np.array_equal(imgs[0, 0], v["u8_strips"][1]),
              "8-bit TIFFs make a uint8 shard")
        with h5py.File(out8, "r", locking=False) as f:
            check(f["images"].chunks == (1, 1, 16, 16) and f["images"].compression is None,
                  f"tiles, no compression: {f['images'].chunks}")
            check(f["meta/labels"][:].tolist() == [[0, 1, 0], [1, 1, 0], [1, 1, 0]],
                  f"multi-hot in --classes order: {f['meta/labels'][:].tolist()}")
        io_roundtrip.roundtrip(a.dump, out8)
        check(io_roundtrip.failures == 0, "uint8 shard round trip")
    return v, rows


def test_errors(a, tmp, v, rows):
    outdir = os.path.join(tmp, "err")
    os.makedirs(outdir)
    out = os.path.join(outdir, "x.h5")
    trunc = os.path.join(tmp, "tiffs", "truncated.tif")
    with open(v["u16_zip"][0], "rb") as f:
        data = f.read()
    with open(trunc, "wb") as f:
        f.write(data[: len(data) // 2])
    # the header intact, the last strip cut: found while writing, after the shard was created
    cut = os.path.join(tmp, "tiffs", "cutdata.tif")
    with open(v["u16_strips"][0], "rb") as f:
        data = f.read()
    check(int.from_bytes(data[4:8], "little") == 8, "tifffile writes the directory first")
    with open(cut, "wb") as f:
        f.write(data[:-500])
    small = os.path.join(tmp, "tiffs", "small.tif")
    tifffile.imwrite(small, np.zeros((H, W - 1), np.uint16))
    rgb = os.path.join(tmp, "tiffs", "rgb.tif")
    tifffile.imwrite(rgb, np.zeros((H, W, 3), np.uint8), photometric="rgb")
    notiff = os.path.join(tmp, "tiffs", "text.tif")
    with open(notiff, "w") as f:
        f.write("not a tiff\n")
    cases = [
        ("missing", 3, lambda r: r[7].replace(".tif", "_gone.tif"), "_gone.tif"),
        ("truncated", 4, lambda r: os.path.relpath(trunc, tmp), "truncated.tif"),
        ("truncated data", 6, lambda r: os.path.relpath(cut, tmp), "cutdata.tif"),
        ("other size", 5, lambda r: os.path.relpath(small, tmp), "small.tif"),
        # an RGB file is three channels a.R, a.G, a.B: not the a of the other rows
        ("rgb", 3, lambda r: os.path.relpath(rgb, tmp), "rgb.tif"),
        ("not a tiff", 3, lambda r: os.path.relpath(notiff, tmp), "text.tif"),
        ("missing page", 4, lambda r: r[8].split("#")[0] + "#7", "pages.tif"),
    ]
    for what, row, change, name in cases:
        bad = [list(r) for r in rows[:6]]
        bad[row - 2][7 if what != "missing page" else 8] = change(bad[row - 2])
        man = os.path.join(tmp, "bad.csv")
        write_manifest(man, bad, ["a", "b"])
        r = run([a.milscreen, "ingest", "--manifest", man, "--out", out], ok=False)
        check(r.returncode != 0, f"{what}: exit 0")
        check(f"bad.csv:{row}" in r.stderr and name in r.stderr,
              f"{what}: message should name bad.csv:{row} and {name}: {r.stderr.strip()}")
        check(os.listdir(outdir) == [], f"{what}: left {os.listdir(outdir)}")
        print(f"ingest error ({what}): {r.stderr.strip()}")
    # bad CSV rows: a non-number, a short row, an unknown class, an unknown column
    texts = [
        ("site", "image_id,plate,well,site,file_a\nx,P,A01,1,%s\ny,P,A02,two,%s\n", "bad.csv:3"),
        ("short", "image_id,plate,well,site,file_a\nx,P,A01,1,%s\ny,P,A02,%s\n", "bad.csv:3"),
        ("class", "plate,well,label,file_a\nP,A01,hit,%s\nP,A02,typo,%s\n", "bad.csv:3"),
        ("column", "plate,well,lable,file_a\nP,A01,hit,%s\nP,A02,hit,%s\n", "bad.csv:1"),
    ]
    for what, text, where in texts:
        man = os.path.join(tmp, "bad.csv")
        with open(man, "w") as f:
            f.write(text % (rows[0][7], rows[1][7]))
        extra = ["--classes", "hit"] if what == "class" else []
        r = run([a.milscreen, "ingest", "--manifest", man, "--out", out, *extra], ok=False)
        check(r.returncode != 0 and where in r.stderr, f"bad CSV ({what}): {r.stderr.strip()}")
        check(os.listdir(outdir) == [], f"bad CSV ({what}): left {os.listdir(outdir)}")
        print(f"ingest error (CSV {what}): {r.stderr.strip()}")


def test_csv(a, tmp, v):
    """CSV details: a byte order mark, CR LF, quoted fields with commas, quotes and a line
    break, blank lines; the line numbers in messages count the file's lines."""
    f0 = os.path.relpath(v["u16_strips"][0], tmp)
    text = ('\ufeffplate,well,treatment,label,file_a\r\n'
            'P,A01,"taxol, 0.3 uM",x,%s\r\n'
            '\r\n'
            'P,A02,"say ""hi""\nthere",y,%s\r\n'
            'P,A03,plain,x,%s\r\n' % (f0, f0, f0))
    man = os.path.join(tmp, "quoted.csv")
    with open(man, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    out = os.path.join(tmp, "out", "quoted.h5")
    run([a.milscreen, "ingest", "--manifest", man, "--out", out])
    if os.path.exists(out):
        with h5py.File(out, "r", locking=False) as f:
            t = [x.decode() for x in f["meta/treatment"][:]]
            check(t == ["taxol, 0.3 uM", 'say "hi"\nthere', "plain"], f"quoted fields: {t}")
            check([x.decode() for x in f.attrs["class_names"]] == ["x", "y"], "BOM-free header")
    # the row after a quoted line break is line 6 of the file
    bad = text.replace("P,A03,plain,x,", "P,A03,plain,x,missing_")
    with open(man, "w", encoding="utf-8", newline="") as f:
        f.write(bad)
    r = run([a.milscreen, "ingest", "--manifest", man, "--out", out + "2"], ok=False)
    check(r.returncode != 0 and "quoted.csv:6:" in r.stderr, f"line numbers: {r.stderr.strip()}")
    with open(man, "w") as f:
        f.write('plate,well,file_a\nP,"A01,%s\n' % f0)
    r = run([a.milscreen, "ingest", "--manifest", man, "--out", out + "3"], ok=False)
    check(r.returncode != 0 and "quoted.csv:2: a quoted field is not closed" in r.stderr,
          f"unclosed quote: {r.stderr.strip()}")


def test_bbbc021(a, tmp, rng):
    data = os.path.join(a.root, "tests", "data", "bbbc021")
    img_csv = os.path.join(data, "BBBC021_v1_image.csv")
    moa_csv = os.path.join(data, "BBBC021_v1_moa.csv")
    root = os.path.join(tmp, "bbbc021")
    moa = {(r["compound"], float(r["concentration"])): r["moa"]
           for r in csv.DictReader(open(moa_csv))}
    classes = sorted(set(moa.values()))
    check(len(classes) == 13 and "DMSO" in classes, f"12 MoAs + DMSO: {classes}")
    rows = list(csv.DictReader(open(img_csv)))
    pix = {}
    for r in rows:
        for c in ("DAPI", "Tubulin", "Actin"):
            p = os.path.join(root, r[f"Image_PathName_{c}"], r[f"Image_FileName_{c}"])
            os.makedirs(os.path.dirname(p), exist_ok=True)
            arr = rng.integers(0, 65536, size=(24, 32), dtype=np.uint16)
            tifffile.imwrite(p, arr, photometric="minisblack")
            pix[p] = arr
    want = [r for r in rows
            if (r["Image_Metadata_Compound"], float(r["Image_Metadata_Concentration"])) in moa]
    out = os.path.join(tmp, "bbbc021.h5")
    run([a.milscreen, "ingest", "--bbbc021", img_csv, "--moa", moa_csv, "--root", root,
         "--out", out])
    if not os.path.exists(out):
        return
    imgs, meta = shard_images(out)
    check(len(imgs) == len(want) and 0 < len(want) < len(rows),
          f"{len(imgs)} images, {len(want)} of {len(rows)} rows have a MoA")
    with h5py.File(out, "r", locking=False) as f:
        check([s.decode() for s in f.attrs["class_names"]] == classes, "class names")
        check([s.decode() for s in f.attrs["channel_names"]] == ["DAPI", "Tubulin", "Actin"],
              "channels")
        lab = f["meta/label"][:]
    for i, r in enumerate(want):
        m = moa[(r["Image_Metadata_Compound"], float(r["Image_Metadata_Concentration"]))]
        check(classes[lab[i]] == m, f"row {i}: label {classes[lab[i]]} != {m}")
        check(meta["plate"][i].decode() == r["Image_Metadata_Plate_DAPI"] and
              meta["well"][i].decode() == r["Image_Metadata_Well_DAPI"] and
              meta["replicate"][i] == int(r["Replicate"]), f"row {i}: plate/well/replicate")
        check(meta["treatment"][i].decode().startswith(r["Image_Metadata_Compound"] + "@"),
              f"row {i}: treatment {meta['treatment'][i]}")
        site = int(r["Image_FileName_DAPI"].split("_s")[-1].split("_")[0])
        check(meta["site"][i] == site, f"row {i}: site {meta['site'][i]} != {site}")
        for c, ch in enumerate(("DAPI", "Tubulin", "Actin")):
            p = os.path.join(root, r[f"Image_PathName_{ch}"], r[f"Image_FileName_{ch}"])
            check(np.array_equal(imgs[i, c], pix[p]), f"row {i} channel {ch}: pixels")
    io_roundtrip.roundtrip(a.dump, out)
    # --all keeps unlabelled images as -1; --plates selects
    out_all = os.path.join(tmp, "bbbc021_all.h5")
    run([a.milscreen, "ingest", "--bbbc021", img_csv, "--moa", moa_csv, "--root", root,
         "--out", out_all, "--all"])
    if os.path.exists(out_all):
        with h5py.File(out_all, "r", locking=False) as f:
            lab = f["meta/label"][:]
            check(len(lab) == len(rows) and (lab == -1).sum() == len(rows) - len(want),
                  "--all: unlabelled rows as -1")
    plate = want[0]["Image_Metadata_Plate_DAPI"]
    out_p = os.path.join(tmp, "bbbc021_plate.h5")
    run([a.milscreen, "ingest", "--bbbc021", img_csv, "--moa", moa_csv, "--root", root,
         "--out", out_p, "--plates", plate])
    if os.path.exists(out_p):
        _, m = shard_images(out_p)
        n = sum(r["Image_Metadata_Plate_DAPI"] == plate for r in want)
        check(len(m["plate"]) == n and all(p.decode() == plate for p in m["plate"]),
              f"--plates {plate}: {len(m['plate'])} images, expected {n}")
    # a missing image of the real layout names the row of the table
    os.unlink(os.path.join(root, want[1]["Image_PathName_Actin"], want[1]["Image_FileName_Actin"]))
    bad = os.path.join(tmp, "none", "bad.h5")
    os.makedirs(os.path.dirname(bad))
    r = run([a.milscreen, "ingest", "--bbbc021", img_csv, "--moa", moa_csv, "--root", root,
             "--out", bad], ok=False)
    line = rows.index(want[1]) + 2
    check(r.returncode != 0 and f"BBBC021_v1_image.csv:{line}" in r.stderr and
          want[1]["Image_FileName_Actin"] in r.stderr and not os.listdir(os.path.dirname(bad)),
          f"missing BBBC021 image: {r.stderr.strip()}")
    print(f"ingest bbbc021: {len(want)} labelled of {len(rows)} rows, {len(classes)} classes")
    # the whole published table, joined without reading images: 3,848 labelled images
    # beside the repository (a checkout in /work/main, or a worktree in /work/wt/NAME)
    real = os.path.join(a.root, "..", "shared", "data", "bbbc021")
    if not os.path.exists(os.path.join(real, "BBBC021_v1_image.csv")):
        real = os.path.join(a.root, "..", "..", "shared", "data", "bbbc021")
    if os.path.exists(os.path.join(real, "BBBC021_v1_image.csv")):
        r = run([a.milscreen, "ingest", "--bbbc021", os.path.join(real, "BBBC021_v1_image.csv"),
                 "--moa", os.path.join(real, "BBBC021_v1_moa.csv"), "--dry-run"])
        check("3848 images (3848 labelled)" in r.stderr and "13 classes" in r.stderr,
              f"full table join: {r.stderr.splitlines()[:1]}")
    else:
        print("ingest bbbc021: the full table is not beside the repository; join count not checked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--milscreen", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--root", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    if not shutil.which("tiffcp"):
        print("io_ingest: tiffcp (libtiff-tools) is missing; tools/setup-deps installs it")
        return 1
    with tempfile.TemporaryDirectory(prefix="ms_io_ingest.") as tmp:
        v, rows = test_variants(a, tmp, rng)
        test_errors(a, tmp, v, rows)
        test_csv(a, tmp, v)
        test_bbbc021(a, tmp, rng)
    fails = failures + io_roundtrip.failures
    print(f"io_ingest: {fails} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
