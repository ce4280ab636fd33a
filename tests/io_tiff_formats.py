#!/usr/bin/python3
"""`milscreen ingest` on the TIFFs and manifests labs have (issue 12 item 1) and its guards
(issue 11 items 1, 3, 6, 7), each against files this test writes with tifffile (or, for bit
depths tifffile cannot pack without imagecodecs, a minimal TIFF writer below):
  OME-TIFF channel names, pages and pixel size; RGB contiguous and planar, split or --sample;
  palette as colours; min-is-white inverted; float32/float16/int16 through --value-range
  (exact for int16, out-of-range refused); 12-bit, 4-bit and 1-bit data kept; big-endian and
  tiled variants; CellProfiler LoadData CSVs (Metadata_* kept as /meta/<column>);
  class order (--classes, duplicates refused, the order always said); --out never an input,
  never an existing file without --force; a TIFF declaring huge dimensions refused before any
  allocation (under an address-space limit); libtiff warnings shown once per file;
  dimension labels on the shard's datasets.
Usage: io_tiff_formats.py --milscreen BIN"""
import argparse
import os
import resource
import struct
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import tifffile

failures = 0
H, W = 23, 29


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", msg, file=sys.stderr)
    return cond


def run(cmd, ok=True, limit_as=None, show=False):
    pre = None
    if limit_as:
        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre)
    if os.environ.get("MS_TEST_VERBOSE"):
        print("$", " ".join(cmd[1:]), "->", r.returncode, "\n" + r.stderr)
    if ok is True:
        check(r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    elif ok is False:
        check(r.returncode != 0, f"{' '.join(cmd)}: exit 0, a failure was expected\n{r.stderr}")
    return r


def write_packed(path, a, bits, byteorder="<", photometric=1):
    """A minimal uncompressed TIFF of unsigned 1..16-bit samples, rows packed most significant
    bit first and padded to a byte, as TIFF 6.0 stores them (tifffile needs imagecodecs for
    this)."""
    h, w = a.shape
    rows = []
    for r in a.astype(np.uint32):
        b = ((r[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).ravel()
        rows.append(np.packbits(b).tobytes())
    data = b"".join(rows)
    e = byteorder
    tags = [(256, 4, w), (257, 4, h), (258, 3, bits), (259, 3, 1), (262, 3, photometric),
            (273, 4, 0), (277, 3, 1), (278, 4, h), (279, 4, len(data)), (284, 3, 1),
            (339, 3, 1)]
    data_off = 8 + 2 + 12 * len(tags) + 4
    out = bytearray((b"II" if e == "<" else b"MM") + struct.pack(e + "HI", 42, 8))
    out += struct.pack(e + "H", len(tags))
    for tag, typ, val in tags:
        val = data_off if tag == 273 else val
        out += struct.pack(e + ("HHIHH" if typ == 3 else "HHII"), tag, typ, 1, val,
                           *((0,) if typ == 3 else ()))
    out += struct.pack(e + "I", 0) + data
    with open(path, "wb") as f:
        f.write(out)


def ifd_entries(data):
    """(offset of each IFD, {tag: (entry offset, type)}) of a little-endian classic TIFF."""
    assert data[:2] == b"II"
    off = struct.unpack_from("<I", data, 4)[0]
    ifds = []
    while off:
        n = struct.unpack_from("<H", data, off)[0]
        tags = {}
        for j in range(n):
            e = off + 2 + 12 * j
            tag, typ = struct.unpack_from("<HH", data, e)
            tags[tag] = (e, typ)
        ifds.append((off, tags))
        off = struct.unpack_from("<I", data, off + 2 + 12 * n)[0]
    return ifds


def patch_tag(data, entry, typ, value):
    struct.pack_into("<H" if typ == 3 else "<I", data, entry + 8, value)


def manifest(path, header, rows):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")


def names(v):
    return [] if isinstance(v, h5py.Empty) else [s.decode() for s in v]


def shard(path):
    with h5py.File(path, "r", locking=False) as f:
        return (f["images"][:], names(f.attrs["channel_names"]), names(f.attrs["class_names"]),
                f.attrs["pixel_size_um"] if "pixel_size_um" in f.attrs else None)


class T:
    def __init__(self, a, tmp):
        self.a, self.tmp, self.n = a, tmp, 0

    def path(self, name):
        return os.path.join(self.tmp, name)

    def ingest(self, header, rows, *opts, ok=True, limit_as=None, out=None):
        """Ingests a manifest of rows; returns (result, shard path)."""
        self.n += 1
        man = self.path(f"m{self.n}.csv")
        manifest(man, header, rows)
        out = out or self.path(f"s{self.n}.h5")
        existed = os.path.exists(out)
        r = run([self.a.milscreen, "ingest", "--manifest", man, "--out", out, *opts], ok=ok,
                limit_as=limit_as)
        if ok is False:
            check(existed or not os.path.exists(out), f"a failed ingest left {out}")
            check(not [f for f in os.listdir(os.path.dirname(out)) if ".tmp." in f],
                  "a failed ingest left a temporary file")
        return r, out


def test_ome(t, rng):
    """OME-TIFF: channel names, pages and pixel size from OME-XML; --channels picks by name."""
    chans = rng.integers(0, 65536, size=(2, 3, H, W), dtype=np.uint16)
    files = []
    for i in range(2):
        p = t.path(f"field{i}.ome.tif")
        tifffile.imwrite(p, chans[i], photometric="minisblack", metadata={
            "axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "Actin"]},
            "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.7}, tile=(16, 16) if i else None)
        files.append(os.path.basename(p))
    rows = [["P1", f"A0{i + 1}", os.path.basename(files[i])] for i in range(2)]
    r, out = t.ingest(["plate", "well", "file"], rows)
    if check(os.path.exists(out), "OME-TIFF ingest"):
        img, ch, _, ps = shard(out)
        check(ch == ["DAPI", "GFP", "Actin"], f"OME channel names: {ch}")
        check(np.array_equal(img, chans), "OME-TIFF pixels (one channel per page)")
        check(ps is not None and np.allclose(ps, [0.7, 0.65]), f"pixel_size_um (y, x): {ps}")
        check("pixel size (x, y) 0.65, 0.7 um from the OME-XML" in r.stderr,
              f"pixel size said: {r.stderr}")
    r, out = t.ingest(["plate", "well", "file"], rows, "--channels", "Actin,DAPI")
    if check(os.path.exists(out), "--channels"):
        img, ch, _, _ = shard(out)
        check(ch == ["Actin", "DAPI"] and np.array_equal(img, chans[:, [2, 0]]),
              f"--channels Actin,DAPI picks and orders by name: {ch}")
    # --pixel-size overrides, and says what the file declared
    r, out = t.ingest(["plate", "well", "file"], rows, "--pixel-size", "0.5")
    if check(os.path.exists(out), "--pixel-size"):
        check(np.allclose(shard(out)[3], [0.5, 0.5]) and "OME-XML says 0.65, 0.7 um" in r.stderr,
              f"--pixel-size 0.5 over OME's: {r.stderr}")
    # a unit in nanometres is converted; files that disagree are refused
    p = t.path("nm.ome.tif")
    tifffile.imwrite(p, chans[0], photometric="minisblack", metadata={
        "axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "Actin"]}, "PhysicalSizeX": 650,
        "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 650, "PhysicalSizeYUnit": "nm"})
    r, out = t.ingest(["plate", "well", "file"], [["P1", "A01", "nm.ome.tif"]])
    check(os.path.exists(out) and np.allclose(shard(out)[3], [0.65, 0.65]), "650 nm = 0.65 um")
    r, _ = t.ingest(["plate", "well", "file"], [rows[0], ["P1", "B01", "nm.ome.tif"]], ok=False)
    check("--pixel-size" in r.stderr and "nm.ome.tif" in r.stderr,
          f"disagreeing pixel sizes refused: {r.stderr}")
    # a z-stack is refused in a `file` column (never silently its first plane)
    p = t.path("zstack.ome.tif")
    tifffile.imwrite(p, rng.integers(0, 9, size=(4, 2, H, W), dtype=np.uint16),
                     photometric="minisblack", metadata={"axes": "ZCYX"})
    r, _ = t.ingest(["plate", "well", "file"], [["P1", "A01", "zstack.ome.tif"]], ok=False)
    check("SizeZ=4" in r.stderr and "m%d.csv:2" % t.n in r.stderr,
          f"z-stack refused naming the line: {r.stderr}")
    # and a page of it named explicitly is read as that page
    r, out = t.ingest(["plate", "well", "file_z3c1"], [["P1", "A01", "zstack.ome.tif#7"]])
    if check(os.path.exists(out), "page of a z-stack"):
        check(np.array_equal(shard(out)[0][0, 0], tifffile.imread(p)[3, 1]), "page 7 = z3 c1")
    # a plain multi-page TIFF has no channel names: a `file` column is refused
    p = t.path("pages.tif")
    tifffile.imwrite(p, chans[0], photometric="minisblack", metadata=None)
    r, _ = t.ingest(["plate", "well", "file"], [["P1", "A01", "pages.tif"]], ok=False)
    check("no OME-XML" in r.stderr and "pages.tif#0" in r.stderr,
          f"plain multi-page in a file column: {r.stderr}")
    print("OME-TIFF: channel names, pages, pixel size, --channels, --pixel-size, z-stack refused")


def test_rgb_palette(t, rng):
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    tifffile.imwrite(t.path("rgb.tif"), rgb, photometric="rgb")
    tifffile.imwrite(t.path("rgb_planar.tif"), np.moveaxis(rgb, 2, 0), photometric="rgb",
                     planarconfig="separate", tile=(16, 16))
    rows = [["P1", "A01", "rgb.tif"], ["P1", "A02", "rgb_planar.tif"]]
    r, out = t.ingest(["plate", "well", "file_bf"], rows)
    if check(os.path.exists(out), "RGB ingest"):
        img, ch, _, _ = shard(out)
        check(ch == ["bf.R", "bf.G", "bf.B"], f"RGB split into named channels: {ch}")
        want = np.moveaxis(rgb, 2, 0)
        check(img.dtype == np.uint8 and np.array_equal(img[0], want) and
              np.array_equal(img[1], want), "RGB contiguous and planar pixels")
        check("each sample a channel" in r.stderr, f"the split is said: {r.stderr}")
    r, out = t.ingest(["plate", "well", "file_bf"], rows, "--sample", "1")
    if check(os.path.exists(out), "--sample"):
        img, ch, _, _ = shard(out)
        check(ch == ["bf"] and np.array_equal(img[:, 0], np.stack([rgb[..., 1]] * 2)),
              f"--sample 1 keeps green: {ch}")
    # palette: the colours, never the indices (8-bit and 4-bit indices)
    idx = rng.integers(0, 256, size=(H, W), dtype=np.uint8)
    cmap = rng.integers(0, 65536, size=(3, 256), dtype=np.uint16)
    tifffile.imwrite(t.path("palette.tif"), idx, photometric="palette", colormap=cmap)
    r, out = t.ingest(["plate", "well", "file"], [["P1", "A01", "palette.tif"]])
    if check(os.path.exists(out), "palette ingest"):
        img, ch, _, _ = shard(out)
        check(ch == ["R", "G", "B"] and img.dtype == np.uint16 and
              np.array_equal(img[0], cmap[:, idx]), f"palette stored as its colours: {ch}")
        check("not as indices" in r.stderr, f"palette conversion said: {r.stderr}")
    # JPEG-compressed YCbCr (tiffcp's default for JPEG): the RGB libtiff's own RGBA path gives
    tifffile.imwrite(t.path("rgbsrc.tif"), rgb, photometric="rgb")
    subprocess.run(["tiffcp", "-c", "jpeg:90", t.path("rgbsrc.tif"), t.path("jpeg.tif")],
                   check=True)
    subprocess.run(["tiff2rgba", "-c", "none", t.path("jpeg.tif"), t.path("jpegrgba.tif")],
                   check=True)
    r, out = t.ingest(["plate", "well", "file"], [["P1", "A01", "jpeg.tif"]])
    if check(os.path.exists(out), "JPEG YCbCr ingest"):
        want = np.moveaxis(tifffile.imread(t.path("jpegrgba.tif"))[..., :3], 2, 0)
        check(np.array_equal(shard(out)[0][0], want) and "decoded to RGB" in r.stderr,
              "JPEG YCbCr decoded to RGB, as tiff2rgba decodes it")
    print("RGB contiguous/planar split and --sample; palette as colours; JPEG YCbCr")


def test_grey_conversions(t, rng):
    a16 = rng.integers(0, 65536, size=(H, W), dtype=np.uint16)
    a8 = rng.integers(0, 256, size=(H, W), dtype=np.uint8)
    tifffile.imwrite(t.path("white16.tif"), a16, photometric="miniswhite")
    tifffile.imwrite(t.path("white8.tif"), a8, photometric="miniswhite", tile=(16, 16))
    r, out = t.ingest(["plate", "well", "file_a"], [["P", "A01", "white16.tif"]])
    check(os.path.exists(out) and np.array_equal(shard(out)[0][0, 0], 65535 - a16) and
          "inverted" in r.stderr, f"16-bit min-is-white inverted: {r.stderr}")
    r, out = t.ingest(["plate", "well", "file_a"], [["P", "A01", "white8.tif"]])
    check(os.path.exists(out) and np.array_equal(shard(out)[0][0, 0], 255 - a8),
          "8-bit tiled min-is-white inverted")
    # 12-bit (little and big-endian, and LZW-compressed tiles by tiffcp) kept in 16 bits
    a12 = rng.integers(0, 4096, size=(H, W))
    write_packed(t.path("b12.tif"), a12, 12)
    write_packed(t.path("b12be.tif"), a12, 12, ">")
    subprocess.run(["tiffcp", "-c", "lzw", "-t", "-w", "16", "-l", "16", t.path("b12.tif"),
                    t.path("b12tiled.tif")], check=True)
    rows = [["P", f"A0{i}", f] for i, f in enumerate(["b12.tif", "b12be.tif", "b12tiled.tif"])]
    r, out = t.ingest(["plate", "well", "file_a"], rows)
    if check(os.path.exists(out), "12-bit ingest"):
        img = shard(out)[0]
        check(img.dtype == np.uint16 and all(np.array_equal(img[i, 0], a12) for i in range(3)),
              "12-bit values kept in 16 bits (strips, big-endian, LZW tiles)")
        check("widened to 16 bits, values kept" in r.stderr, f"said once: {r.stderr}")
    # 1-bit (tifffile writes bool arrays as 1-bit) and 4-bit: uint8 shard, values kept
    a1 = rng.integers(0, 2, size=(H, W)).astype(bool)
    tifffile.imwrite(t.path("b1.tif"), a1, photometric="minisblack")
    a4 = rng.integers(0, 16, size=(H, W))
    write_packed(t.path("b4.tif"), a4, 4)
    r, out = t.ingest(["plate", "well", "file_a", "file_b"], [["P", "A01", "b1.tif", "b4.tif"]])
    if check(os.path.exists(out), "1- and 4-bit ingest"):
        img = shard(out)[0]
        check(img.dtype == np.uint8 and np.array_equal(img[0, 0], a1) and
              np.array_equal(img[0, 1], a4), "1- and 4-bit values kept in a uint8 shard")
    # float32 and signed data: refused without --value-range, mapped exactly with it
    f32 = rng.random((H, W), dtype=np.float32)
    tifffile.imwrite(t.path("f32.tif"), f32)
    tifffile.imwrite(t.path("f32be.tif"), f32, byteorder=">", tile=(16, 16))
    tifffile.imwrite(t.path("f16.tif"), f32.astype(np.float16))
    r, _ = t.ingest(["plate", "well", "file_a"], [["P", "A01", "f32.tif"]], ok=False)
    check("--value-range" in r.stderr and "f32.tif" in r.stderr and "floating-point" in r.stderr,
          f"float refused without --value-range: {r.stderr}")
    rows = [["P", "A01", "f32.tif"], ["P", "A02", "f32be.tif"], ["P", "A03", "f16.tif"]]
    r, out = t.ingest(["plate", "well", "file_a"], rows, "--value-range", "0:1")
    if check(os.path.exists(out), "float ingest"):
        img = shard(out)[0]
        want = np.floor(f32.astype(np.float64) * 65535 + 0.5)
        want16 = np.floor(f32.astype(np.float16).astype(np.float64) * 65535 + 0.5)
        check(np.array_equal(img[0, 0], want) and np.array_equal(img[1, 0], want),
              "float32 mapped by u = round(v * 65535) (little, big-endian tiled)")
        check(np.array_equal(img[2, 0], want16), "float16 mapped")
        check("mapped linearly by --value-range 0:1" in r.stderr, f"said: {r.stderr}")
    bad = f32.copy()
    bad[5, 7] = 1.5
    tifffile.imwrite(t.path("f32bad.tif"), bad)
    r, _ = t.ingest(["plate", "well", "file_a"], [["P", "A01", "f32bad.tif"]], "--value-range",
                    "0:1", ok=False)
    check("value 1.5 at (x 7, y 5)" in r.stderr and "never clipped" in r.stderr,
          f"a value outside the range refused: {r.stderr}")
    nan = f32.copy()
    nan[1, 2] = np.nan
    tifffile.imwrite(t.path("f32nan.tif"), nan)
    r, _ = t.ingest(["plate", "well", "file_a"], [["P", "A01", "f32nan.tif"]], "--value-range",
                    "0:1", ok=False)
    check("nan" in r.stderr.lower(), f"NaN refused: {r.stderr}")
    i16 = rng.integers(-32768, 32768, size=(H, W)).astype(np.int16)
    tifffile.imwrite(t.path("i16be.tif"), i16, byteorder=">")
    r, out = t.ingest(["plate", "well", "file_a"], [["P", "A01", "i16be.tif"]],
                      "--value-range", "-32768:32767")
    check(os.path.exists(out) and np.array_equal(shard(out)[0][0, 0].astype(np.int32),
                                                 i16.astype(np.int32) + 32768),
          "int16 -> v + 32768 exactly")
    print("min-is-white, 12/4/1-bit, float32/float16/int16 with --value-range")


def test_loaddata(t, rng):
    """CellProfiler's LoadData CSV as is: FileName_/PathName_/Frame_, Metadata_* kept."""
    os.makedirs(t.path("images/plate7"))
    dna = rng.integers(0, 65536, size=(3, H, W), dtype=np.uint16)
    er = rng.integers(0, 65536, size=(3, H, W), dtype=np.uint16)
    rows = []
    for i in range(3):
        tifffile.imwrite(t.path(f"images/plate7/r{i}_dna.tif"), dna[i], photometric="minisblack")
        with tifffile.TiffWriter(t.path(f"images/plate7/r{i}_stack.tif")) as tw:
            tw.write(np.zeros((H, W), np.uint16), photometric="minisblack", contiguous=False)
            tw.write(er[i], photometric="minisblack", contiguous=False)
        rows.append([i + 1, f"r{i}_dna.tif", "images/plate7", f"r{i}_stack.tif", "images/plate7",
                     1, f"r{i}_illum.npy", "images/illum", "plate7", f"B0{i + 1}", i + 1,
                     ["taxol", "DMSO", "nocodazole"][i], ["stab", "ctrl", "destab"][i],
                     f"s3://bucket/r{i}_dna.tif"])
    header = ["ImageNumber", "FileName_OrigDNA", "PathName_OrigDNA", "FileName_OrigER",
              "PathName_OrigER", "Frame_OrigER", "FileName_IllumDNA", "PathName_IllumDNA",
              "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Compound",
              "Metadata_moa", "URL_OrigDNA"]
    r, out = t.ingest(header, rows, "--channels", "OrigDNA,OrigER", "--label-column",
                      "Metadata_moa", "--classes", "ctrl,stab,destab")
    if not check(os.path.exists(out), "LoadData ingest"):
        return
    check("CellProfiler LoadData layout" in r.stderr and "ImageNumber" in r.stderr,
          f"layout and unread columns said: {r.stderr}")
    with h5py.File(out, "r", locking=False) as f:
        check(np.array_equal(f["images"][:, 0], dna) and np.array_equal(f["images"][:, 1], er),
              "LoadData pixels (Frame_ picks the page)")
        check([s.decode() for s in f.attrs["channel_names"]] == ["OrigDNA", "OrigER"], "names")
        check([s.decode() for s in f["meta/plate"][:]] == ["plate7"] * 3 and
              [s.decode() for s in f["meta/well"][:]] == ["B01", "B02", "B03"] and
              list(f["meta/site"][:]) == [1, 2, 3], "Metadata_Plate/Well/Site")
        check([s.decode() for s in f["meta/Metadata_Compound"][:]] ==
              ["taxol", "DMSO", "nocodazole"], "Metadata_Compound kept as /meta/Metadata_Compound")
        check(list(f["meta/label"][:]) == [1, 0, 2], "--label-column Metadata_moa")
        check(f["meta/Metadata_Compound"].dims[0].label == "image", "extra column labelled")
    print("LoadData: FileName_/PathName_/Frame_, Metadata_* kept, --label-column, --channels")


def test_classes(t, rng):
    """Class order: stable across plates with --classes, duplicates refused, always said."""
    tifffile.imwrite(t.path("g.tif"), rng.integers(0, 256, (H, W), dtype=np.uint8))
    p1 = [["P1", "A01", "ctrl", "g.tif"], ["P1", "A02", "tox", "g.tif#0"],
          ["P1", "A03", "hit", "g.tif"]]
    p2 = [["P2", "A01", "tox", "g.tif"], ["P2", "A02", "hit", "g.tif#0"]]
    hdr = ["plate", "well", "label", "file_a"]
    r1, o1 = t.ingest(hdr, p1, "--classes", "ctrl,hit,tox")
    r2, o2 = t.ingest(hdr, p2, "--classes", "ctrl, hit ,tox")
    if check(os.path.exists(o1) and os.path.exists(o2), "two plates"):
        check(shard(o1)[2] == shard(o2)[2] == ["ctrl", "hit", "tox"], "same class order")
        with h5py.File(o2, "r", locking=False) as f:
            check(list(f["meta/label"][:]) == [2, 1], "labels by the given order")
        check("classes (--classes order): ctrl,hit,tox" in r2.stderr, f"order said: {r2.stderr}")
    r, _ = t.ingest(hdr, p1, "--classes", "ctrl,hit,ctrl", ok=False)
    check("'ctrl' twice" in r.stderr and r.returncode == 2, f"duplicates refused: {r.stderr}")
    r, _ = t.ingest(hdr, p1, "--classes", "ctrl,,hit", ok=False)
    check("empty name" in r.stderr, f"an empty class name refused: {r.stderr}")
    r, _ = t.ingest(hdr, p2)
    check("warning: no --classes" in r.stderr and "--classes hit,tox" in r.stderr,
          f"the guessed order said loudly, with the option to repeat: {r.stderr}")
    print("classes: --classes order kept across plates, duplicates refused, guesses said")


def test_out_guards(t, rng):
    """--out: never an input (by inode, not by name), never an existing file without --force."""
    tifffile.imwrite(t.path("o.tif"), rng.integers(0, 256, (H, W), dtype=np.uint8))
    hdr, rows = ["plate", "well", "file_a"], [["P", "A01", "o.tif"]]
    man = t.path(f"m{t.n + 1}.csv")  # the manifest the next ingest writes
    os.makedirs(t.path("sub"))
    # the manifest itself, through another spelling of its path
    r, _ = t.ingest(hdr, rows, out=os.path.join(t.tmp, ".", "sub", "..", os.path.basename(man)),
                    ok=False)
    check("is the input" in r.stderr and open(man).read().startswith("plate,"),
          f"--out = the manifest refused, manifest intact: {r.stderr}")
    # a TIFF input through a hard link
    os.link(t.path("o.tif"), t.path("olink.h5"))
    before = open(t.path("o.tif"), "rb").read()
    r, _ = t.ingest(hdr, rows, "--force", out=t.path("olink.h5"), ok=False)
    check("is the input" in r.stderr and open(t.path("o.tif"), "rb").read() == before,
          f"--out = a TIFF input (hard link) refused even with --force: {r.stderr}")
    # an existing shard: refused, kept; replaced with --force
    keep = t.path("keep.h5")
    with open(keep, "w") as f:
        f.write("precious\n")
    r, _ = t.ingest(hdr, rows, out=keep, ok=False)
    check("exists; give --force" in r.stderr and open(keep).read() == "precious\n",
          f"an existing file is not replaced: {r.stderr}")
    r, _ = t.ingest(hdr, rows, "--force", out=keep)
    check(h5py.is_hdf5(keep), "--force replaces it")
    print("--out: the manifest and a TIFF (by inode) refused; existing file kept without --force")


def test_resources(t, rng):
    """A TIFF declaring huge dimensions is refused up front, naming the memory, under an
    address-space limit that the allocation would break; ingest sizes its batch by memory."""
    small = t.path("small.tif")
    tifffile.imwrite(small, np.zeros((16, 16), np.uint16), photometric="minisblack")
    data = bytearray(open(small, "rb").read())
    (_, tags), = ifd_entries(data)
    for tag in (256, 257):
        patch_tag(data, *tags[tag], 65535)
    with open(t.path("huge.tif"), "wb") as f:
        f.write(data)
    lim = 1536 << 20
    r, _ = t.ingest(["plate", "well", "file_a"], [["P", "A01", "huge.tif"]], ok=False,
                    limit_as=lim)
    check("65535 x 65535" in r.stderr and "GiB" in r.stderr and "--max-image-pixels" in
          r.stderr and "huge.tif" in r.stderr, f"huge declared size refused: {r.stderr}")
    # tiles declared far larger than the image
    tifffile.imwrite(small, np.zeros((16, 16), np.uint16), photometric="minisblack",
                     tile=(16, 16))
    data = bytearray(open(small, "rb").read())
    (_, tags), = ifd_entries(data)
    for tag in (322, 323):
        patch_tag(data, *tags[tag], 65520 if tags[tag][1] == 3 else 1 << 20)
    with open(t.path("hugetile.tif"), "wb") as f:
        f.write(data)
    r, _ = t.ingest(["plate", "well", "file_a"], [["P", "A01", "hugetile.tif"]], ok=False,
                    limit_as=lim)
    check("tiles of 1048576 x 1048576" in r.stderr and "hugetile.tif" in r.stderr,
          f"huge tiles: {r.stderr}")
    # 2 images of 32 MiB with --threads 64: buffers for 2, not 64 (2 GiB) images
    big = rng.integers(0, 65536, size=(4096, 4096), dtype=np.uint16)
    big[:, 100:] = 7
    tifffile.imwrite(t.path("big.tif"), big, photometric="minisblack", compression=None)
    r, out = t.ingest(["plate", "well", "file_a"], [["P", "A01", "big.tif"],
                                                    ["P", "A02", "big.tif"]],
                      "--threads", "64", "--compression", "none", limit_as=lim)
    check(os.path.exists(out), "two large images under the address-space limit")
    print("resources: huge dimensions and tiles refused up front; batches sized by images")


def test_warnings_and_labels(t, rng):
    """libtiff warnings shown once per file (unknown tags, an IFD loop); dimension labels."""
    a = rng.integers(0, 256, (H, W), dtype=np.uint8)
    for i in range(5):
        tifffile.imwrite(t.path(f"tag{i}.tif"), a, photometric="minisblack",
                         extratags=[(65000, "s", 0, "private", True)])
    rows = [["P", f"A0{i}", f"tag{i}.tif"] for i in range(5)]
    r, out = t.ingest(["plate", "well", "file_a"], rows)
    lines = [x for x in r.stderr.splitlines() if "libtiff" in x and "65000" in x]
    check(len(lines) == 3 and "tag0.tif" in lines[0], f"first 3 files' warnings: {lines}")
    check("repeating an earlier text not shown" in r.stderr, f"the rest counted: {r.stderr}")
    # an IFD loop: page 1's next-IFD pointer back at page 0
    p = t.path("loop.tif")
    with tifffile.TiffWriter(p) as tw:
        for _ in range(2):
            tw.write(a, photometric="minisblack", contiguous=False)
    data = bytearray(open(p, "rb").read())
    ifds = ifd_entries(data)
    off1, tags1 = ifds[1]
    n1 = struct.unpack_from("<H", data, off1)[0]
    struct.pack_into("<I", data, off1 + 2 + 12 * n1, ifds[0][0])
    with open(p, "wb") as f:
        f.write(data)
    r, out = t.ingest(["plate", "well", "file_a"], [["P", "A01", "loop.tif#1"]], ok=None)
    check(("loop" in r.stderr.lower() and "loop.tif" in r.stderr),
          f"an IFD loop is surfaced naming the file: {r.stderr}")
    # dimension labels
    r, out = t.ingest(["plate", "well", "label", "file_a"], [["P", "A01", "x", "tag0.tif"]])
    if check(os.path.exists(out), "labels"):
        with h5py.File(out, "r", locking=False) as f:
            check([d.label for d in f["images"].dims] == ["image", "channel", "y", "x"],
                  f"/images dims {[d.label for d in f['images'].dims]}")
            check(f["meta/label"].dims[0].label == "image" and
                  f["meta/plate"].dims[0].label == "image", "/meta dims")
            check("pixel_size_um" not in f.attrs, "no pixel size when unknown")
    print("libtiff warnings once per file (3 shown, the rest counted), IFD loop; dim labels")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--milscreen", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(12)
    with tempfile.TemporaryDirectory(prefix="ms_tiff_formats.") as tmp:
        t = T(a, tmp)
        test_ome(t, rng)
        test_rgb_palette(t, rng)
        test_grey_conversions(t, rng)
        test_loaddata(t, rng)
        test_classes(t, rng)
        test_out_guards(t, rng)
        test_resources(t, rng)
        test_warnings_and_labels(t, rng)
    print(f"io_tiff_formats: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
