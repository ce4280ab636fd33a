#!/usr/bin/python3
"""milscreen export's OME-Zarr plates, read back two ways: with zarr-python (Debian's
python3-zarr), comparing every field's channels with the shard's pixels, its class-map channels
with the score output's maps (upsampled as documented), every resolution level with level 0,
and its label images with the score output's masks, per-class masks and the shard's true
cells; and with a reader of our own written against the OME-NGFF 0.4 specification
(https://ngff.openmicroscopy.org/0.4/): plate, well, multiscales, axes, coordinate
transformations, omero channels, labels and image-label metadata, and the Zarr v2 arrays and
chunk files themselves. The spec reader is shown to catch broken stores too.
Usage: export_zarr.py MILSCREEN"""
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib

import h5py
import numpy as np

try:
    import zarr
except ImportError:
    raise SystemExit("export_zarr: python3-zarr is missing (tools/setup-deps --test installs "
                     "it)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_fixture as fx  # noqa: E402

MS = os.path.abspath(sys.argv[1])
FAILS = []


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f"  {detail}"))
    if not ok:
        FAILS.append(what)


def export(*args):
    r = subprocess.run([MS, "export", *args], capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr)
    return r


# ------------------------------------------------------------ a reader of the 0.4 spec

SPACE_UNITS = {"angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer",
               "foot", "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter",
               "micrometer", "mile", "millimeter", "nanometer", "parsec", "petameter",
               "picometer", "terameter", "yard", "yoctometer", "yottameter", "zeptometer",
               "zettameter"}
ALNUM = re.compile(r"^[A-Za-z0-9]+$")


def jload(path):
    with open(path) as f:
        return json.load(f)


class Spec:
    """Collects every departure from OME-NGFF 0.4 (and Zarr v2) found under a plate."""

    def __init__(self):
        self.errors = []

    def need(self, cond, where, msg):
        if not cond:
            self.errors.append(f"{where}: {msg}")
        return cond

    def group(self, path):
        ok = self.need(os.path.isfile(os.path.join(path, ".zgroup")), path, "no .zgroup")
        if ok:
            self.need(jload(os.path.join(path, ".zgroup")).get("zarr_format") == 2, path,
                      ".zgroup zarr_format is not 2")
        za = os.path.join(path, ".zattrs")
        return jload(za) if os.path.isfile(za) else {}

    def array(self, path):
        """The .zarray of a Zarr v2 array, its chunk files checked; returns (meta, ndarray)
        decoded here without zarr-python."""
        za = os.path.join(path, ".zarray")
        if not self.need(os.path.isfile(za), path, "no .zarray"):
            return None, None
        m = jload(za)
        for key in ("zarr_format", "shape", "chunks", "dtype", "compressor", "fill_value",
                    "order", "filters"):
            self.need(key in m, path, f".zarray lacks {key}")
        self.need(m.get("zarr_format") == 2 and m.get("order") == "C", path, "not Zarr 2, C")
        self.need(m.get("dimension_separator") == "/", path,
                  "chunk keys must be nested ('/'), as OME-NGFF 0.4 stores them")
        comp = m.get("compressor")
        self.need(comp is None or comp.get("id") == "zlib", path, f"compressor {comp}")
        dt = np.dtype(m["dtype"])
        shape, chunks = m["shape"], m["chunks"]
        self.need(len(shape) == len(chunks), path, "shape and chunks differ in rank")
        grid = [math.ceil(s / c) for s, c in zip(shape, chunks)]
        out = np.zeros([g * c for g, c in zip(grid, chunks)], dt)
        for idx in np.ndindex(*grid):
            f = os.path.join(path, *map(str, idx))
            if not self.need(os.path.isfile(f), path, f"chunk {'/'.join(map(str, idx))} "
                             "missing"):
                continue
            raw = open(f, "rb").read()
            if comp:
                raw = zlib.decompress(raw)
            if not self.need(len(raw) == int(np.prod(chunks)) * dt.itemsize, f,
                             "chunk of the wrong size (edge chunks are full chunks in v2)"):
                continue
            sl = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))
            out[sl] = np.frombuffer(raw, dt).reshape(chunks)
        return m, out[tuple(slice(0, s) for s in shape)]

    def multiscales(self, path, attrs, label=False):
        """Checks one image (or label image) group; returns its levels' arrays and axes."""
        ms = attrs.get("multiscales")
        if not self.need(isinstance(ms, list) and ms, path, "no multiscales list"):
            return [], []
        m = ms[0]
        self.need(m.get("version") == "0.4", path, "multiscales version is not 0.4")
        axes = m.get("axes", [])
        if not self.need(2 <= len(axes) <= 5, path, f"{len(axes)} axes (2 to 5)"):
            return [], []
        names = [a.get("name") for a in axes]
        types = [a.get("type") for a in axes]
        self.need(len(set(names)) == len(names), path, "axis names repeat")
        self.need(2 <= types.count("space") <= 3, path, "needs 2 or 3 space axes")
        self.need(types.count("time") <= 1 and types.count("channel") <= 1, path,
                  "more than one time or channel axis")
        order = [{"time": 0, "channel": 1, "space": 2}.get(t, 1) for t in types]
        self.need(order == sorted(order), path, "axes not ordered time, channel, space")
        for a in axes:
            if a.get("type") == "space" and "unit" in a:
                self.need(a["unit"] in SPACE_UNITS, path, f"unit {a['unit']}")
        ds = m.get("datasets", [])
        self.need(len(ds) >= 1, path, "no datasets")
        levels, prev = [], None
        for d in ds:
            p = os.path.join(path, d.get("path", "?"))
            meta, arr = self.array(p)
            if meta is None:
                continue
            self.need(len(meta["shape"]) == len(axes), p, "rank differs from the axes")
            ct = d.get("coordinateTransformations", [])
            kinds = [t.get("type") for t in ct]
            self.need(kinds.count("scale") == 1 and kinds[0] == "scale", p,
                      "needs exactly one scale, first")
            self.need(set(kinds) <= {"scale", "translation"} and kinds.count("translation")
                      <= 1, p, "only scale and one translation allowed")
            for t in ct:
                v = t.get(t.get("type"), [])
                self.need(len(v) == len(axes), p, f"{t.get('type')} of length {len(v)}")
            if prev is not None:
                self.need(all(a <= b for a, b in zip(meta["shape"], prev)), p,
                          "levels not ordered from the largest")
            prev = meta["shape"]
            levels.append((meta, arr, ct[0]["scale"] if ct else None))
        if not label:
            om = attrs.get("omero")
            if om is not None and "c" in names and levels:
                nc = levels[0][0]["shape"][names.index("c")]
                self.need(len(om.get("channels", [])) == nc, path,
                          "omero channels differ from the c axis")
                for ch in om.get("channels", []):
                    w = ch.get("window", {})
                    self.need({"min", "max", "start", "end"} <= set(w) and
                              re.match(r"^[0-9A-Fa-f]{6}$", ch.get("color", "")), path,
                              "an omero channel lacks window or colour")
        return levels, names

    def labels(self, image, image_levels, image_axes):
        lp = os.path.join(image, "labels")
        if not os.path.isdir(lp):
            return {}
        la = self.group(lp)
        found = {}
        for name in la.get("labels", []):
            p = os.path.join(lp, name)
            a = self.group(p)
            il = a.get("image-label")
            if not self.need(isinstance(il, dict), p, "no image-label"):
                continue
            self.need(il.get("version") == "0.4", p, "image-label version")
            vals = [c.get("label-value") for c in il.get("colors", [])]
            self.need(len(vals) == len(set(vals)), p, "label-values repeat in colors")
            for c in il.get("colors", []):
                rgba = c.get("rgba", [0, 0, 0, 0])
                self.need(len(rgba) == 4 and all(isinstance(x, int) and 0 <= x <= 255
                                                 for x in rgba), p, f"rgba {rgba}")
            for q in il.get("properties", []):
                self.need(isinstance(q.get("label-value"), int), p, "property label-value")
            src = il.get("source", {}).get("image", "../../")
            self.need(os.path.realpath(os.path.join(p, src)) == os.path.realpath(image), p,
                      "source.image is not the parent image")
            levels, axes = self.multiscales(p, a, label=True)
            self.need(len(levels) == len(image_levels), p,
                      "not as many levels as the image (the spec's MUST)")
            self.need(set(axes) <= set(image_axes), p, "axes that the image lacks")
            for (lm, larr, _), (im, _, _) in zip(levels, image_levels):
                self.need(np.dtype(lm["dtype"]).kind in "ui", p, "labels must be integers")
                ys = [im["shape"][image_axes.index(n)] for n in axes]
                self.need(lm["shape"] == ys, p, f"shape {lm['shape']}, image {ys}")
            found[name] = (a, levels)
        return found

    def plate(self, root):
        """Checks a whole plate; returns {well path: [(field path, attrs, levels, labels)]}."""
        pa = self.group(root).get("plate")
        if not self.need(isinstance(pa, dict), root, "no plate metadata"):
            return {}
        self.need(pa.get("version") == "0.4", root, "plate version")
        rows = [r.get("name") for r in pa.get("rows", [])]
        cols = [c.get("name") for c in pa.get("columns", [])]
        for kind, names in (("row", rows), ("column", cols)):
            self.need(names and all(isinstance(n, str) and ALNUM.match(n) for n in names),
                      root, f"{kind} names must be alphanumeric")
            self.need(len(set(names)) == len(names), root, f"{kind} names repeat")
        wells, out, most = pa.get("wells", []), {}, 0
        self.need(wells, root, "no wells")
        for w in wells:
            path, ri, ci = w.get("path", ""), w.get("rowIndex"), w.get("columnIndex")
            parts = path.split("/")
            if not self.need(len(parts) == 2 and isinstance(ri, int) and isinstance(ci, int)
                             and 0 <= ri < len(rows) and 0 <= ci < len(cols), root,
                             f"well {w}"):
                continue
            self.need(parts == [rows[ri], cols[ci]], root,
                      f"well path {path} is not row {ri} / column {ci}")
            wp = os.path.join(root, path)
            wa = self.group(wp).get("well", {})
            self.need(wa.get("version") == "0.4", wp, "well version")
            imgs = wa.get("images", [])
            self.need(imgs, wp, "no images")
            most = max(most, len(imgs))
            out[path] = []
            for im in imgs:
                self.need(ALNUM.match(im.get("path", "")), wp, f"field path {im}")
                fp = os.path.join(wp, im.get("path", "?"))
                fa = self.group(fp)
                levels, axes = self.multiscales(fp, fa)
                out[path].append((fp, fa, levels, self.labels(fp, levels, axes)))
        self.need(pa.get("field_count") == most, root,
                  f"field_count {pa.get('field_count')}, most fields in a well {most}")
        used = {w.get("path", "/").split("/")[0] for w in wells}
        present = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
        self.need(present == used, root, "row groups without wells (the spec's SHOULD NOT)")
        return out


# ------------------------------------------------------------ the checks

def check_export(ex, outputs, what, levels_expected):
    """outputs: {shard file name: (shard path, score values)}."""
    table = list(csv.DictReader(open(os.path.join(ex, "images.csv"), newline="")))
    man = json.load(open(os.path.join(ex, "export.json")))
    spec, fields = Spec(), {}
    for plate in man["plates"]:
        for well, fl in spec.plate(os.path.join(ex, plate)).items():
            for fp, fa, lv, lab in fl:
                fields[os.path.relpath(fp, ex)] = (fa, lv, lab)
    check(not spec.errors, f"{what}: every plate follows OME-NGFF 0.4 and Zarr v2 (own reader)",
          "\n    ".join(spec.errors[:12]))
    check(sorted(fields) == sorted(r["zarr_path"] for r in table),
          f"{what}: one field per image, the one its images.csv row names")
    bad = []
    for r in table:
        shard, v = outputs[r["shard"]]
        i = v["ids"].index(r["image_id"])
        fa, lv, lab = fields[r["zarr_path"]]
        z = zarr.open_group(os.path.join(ex, r["zarr_path"]), mode="r")
        with h5py.File(shard, "r") as f:
            img = f["images"][i].astype(np.uint16)
            true = f["masks"][i] if "masks" in f else None
            chans = [s.decode() for s in f.attrs["channel_names"]]
            psize = f.attrs.get("pixel_size_um")
        C, H, W = img.shape
        K = len(v["classes"])
        a0 = z["0"][:]
        if fa["milscreen"]["image_id"] != r["image_id"]:
            bad.append((r["zarr_path"], "image_id"))
        if a0.shape != (C + K, H, W) or a0.dtype != np.uint16:
            bad.append((r["zarr_path"], "shape", a0.shape, a0.dtype))
            continue
        if not np.array_equal(a0[:C], img):
            bad.append((r["zarr_path"], "pixels"))
        for k in range(K):
            want = fx.upsampled(v["maps"][i, k], H, W)
            if not np.array_equal(a0[C + k], want):
                bad.append((r["zarr_path"], f"map {k}", np.abs(a0[C + k] - want).max()))
        labels = [c["label"] for c in fa["omero"]["channels"]]
        if labels != chans + ["map:" + c for c in v["classes"]]:
            bad.append((r["zarr_path"], "channel labels", labels))
        ms = fa["multiscales"][0]["datasets"]
        if len(ms) != levels_expected:
            bad.append((r["zarr_path"], "levels", len(ms)))
        for l, d in enumerate(ms):
            lvl = z[d["path"]][:]
            if not np.array_equal(lvl, a0[:, ::2 ** l, ::2 ** l]):
                bad.append((r["zarr_path"], f"level {l}"))
            sy, sx = (psize if psize is not None else (1.0, 1.0))
            if d["coordinateTransformations"][0]["scale"] != [1.0, sy * 2 ** l, sx * 2 ** l]:
                bad.append((r["zarr_path"], f"scale {l}", d["coordinateTransformations"]))
        units = [a.get("unit") for a in fa["multiscales"][0]["axes"]]
        if units != [None] + (["micrometer"] * 2 if psize is not None else [None, None]):
            bad.append((r["zarr_path"], "units", units))
        want_labels = {"mask": v["masks"][i]} if "masks" in v else {}
        if true is not None:
            want_labels["true_cells"] = true
        for k in range(K if "class_masks" in v else 0):
            want_labels[f"class_mask_{k}"] = v["class_masks"][i, k]
        if sorted(lab) != sorted(want_labels):
            bad.append((r["zarr_path"], "labels", sorted(lab)))
        for name, want in want_labels.items():
            if name not in lab:
                continue
            la = zarr.open_group(os.path.join(ex, r["zarr_path"], "labels", name), mode="r")
            for l in range(levels_expected):
                got = la[str(l)][:]
                if not np.array_equal(got, want[::2 ** l, ::2 ** l]):
                    bad.append((r["zarr_path"], name, l))
    check(not bad, f"{what}: pixels, class maps, levels, scales and labels as in the shard and "
          "score output (zarr-python)", str(bad[:6]))
    return table


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    rng = np.random.default_rng(5)
    fx.synth(MS, "data")
    fx.spice_shard("data/test.h5")
    fx.spice_shard("data/train.h5", pixel_size=None)
    with h5py.File("data/test.h5", "r") as f:
        classes = [s.decode() for s in f.attrs["class_names"]][::-1]
    va = fx.score_output("test.scores.h5", "data/test.h5", classes, rng)
    vb = fx.score_output("train.scores.h5", "data/train.h5", classes, rng, class_masks=False)

    r = export("--out", "ex", "test.scores.h5", "train.scores.h5")
    check(r.returncode == 0, "export of two score outputs", r.stderr)
    table = check_export("ex", {"test.h5": ("data/test.h5", va), "train.h5": ("data/train.h5", vb)},
                         "synth tiny (3 plates, 2 shards)", 1)
    plate = json.load(open("ex/SYN-M-P1.ome.zarr/.zattrs"))["plate"]
    check(len(plate["rows"]) == 6 and len(plate["columns"]) == 8 and plate["field_count"] == 2,
          "the plate lists every row and column of the smallest standard plate holding its "
          "wells (48: 6 x 8)", str(plate)[:300])
    check(sorted(w["path"] for w in plate["wells"]) == sorted(
        {r["zarr_path"].split("/", 1)[1].rsplit("/", 1)[0] for r in table
         if r["plate"] == "SYN-M-P1"}), "wells of both shards on one plate")
    field = json.load(open("ex/" + table[0]["zarr_path"] + "/.zattrs"))
    check(field["milscreen"]["map_channels"]["stride"] == fx.STRIDE and
          field["milscreen"]["map_channels"]["offset"] == fx.OFFSET,
          "the field records where the network's instances sit (stride 16, offset 34)",
          str(field["milscreen"]))
    lab = json.load(open("ex/" + table[0]["zarr_path"] + "/labels/true_cells/.zattrs"))
    with h5py.File("data/test.h5", "r") as f:
        cm = f["cells/mask_id"][:][f["cells/image_index"][:] == 0]
        cl = f["cells/label"][:][f["cells/image_index"][:] == 0]
        names = [s.decode() for s in f.attrs["class_names"]]
    props = {p["label-value"]: p["class"] for p in lab["image-label"]["properties"]}
    check(props == {int(m): names[c] if c >= 0 else "none" for m, c in zip(cm, cl)},
          "true cells carry each cell's true class as a label property")

    # multi-label, uint8, non-square, odd well names (c7 and C7 are one well), raw chunks
    fx.multilabel_shard("yeast.h5")
    vy = fx.score_output("yeast.scores.h5", "yeast.h5", ["nucleus", "ER", "mito", "vacuole"],
                         rng, class_masks=False)
    r = export("--out", "ey", "--levels", "2", "--zlib", "0", "yeast.scores.h5")
    check(r.returncode == 0, "export --levels 2 --zlib 0 of a multi-label uint8 shard", r.stderr)
    check_export("ey", {"yeast.h5": ("yeast.h5", vy)}, "yeast (2 levels, raw chunks)", 2)
    za = json.load(open("ey/YEAST-1.ome.zarr/C/7/0/0/.zarray"))
    check(za["compressor"] is None, "--zlib 0 stores chunks raw")
    well = json.load(open("ey/YEAST-1.ome.zarr/C/7/.zattrs"))
    check([im["path"] for im in well["well"]["images"]] == ["0", "1"], "C7 and c7: one well")
    ty = list(csv.DictReader(open("ey/images.csv", newline="")))
    check([t["zarr_path"] for t in ty][:2] == ["YEAST-1.ome.zarr/C/7/1", "YEAST-1.ome.zarr/C/7/0"],
          "fields ordered by site within a well (site 1 before site 2)",
          str([t["zarr_path"] for t in ty]))

    # a field wider than a chunk (1024): edge chunks padded, automatic levels
    n, h, w = 2, 200, 1100
    with h5py.File("wide.h5", "w") as f:
        f.attrs["format"] = np.bytes_(b"milscreen-shard")
        f.attrs["format_version"] = 1
        f.attrs["channel_names"] = fx.strings(["DAPI"])
        f.attrs["class_names"] = fx.strings(["a", "b"])
        f.attrs["multi_label"] = 0
        f.create_dataset("images", data=rng.integers(0, 65536, (n, 1, h, w), dtype=np.uint16),
                         chunks=(1, 1, h, w))
        f["meta/image_id"] = fx.strings(["w0", "w1"])
        f["meta/plate"] = fx.strings(["W", "W"])
        f["meta/well"] = fx.strings(["P24", "AF48"])  # the far corners of a 1536-well plate
        f["meta/site"] = np.zeros(n, np.int32)
        f["meta/treatment"] = fx.strings(["x", "y"])
        f["meta/replicate"] = np.zeros(n, np.int32)
        f["meta/label"] = np.array([0, -1], np.int32)
    vw = fx.score_output("wide.scores.h5", "wide.h5", ["a", "b"], rng)
    r = export("--out", "ew", "wide.scores.h5")
    check(r.returncode == 0, "export of a 200x1100 field", r.stderr)
    check_export("ew", {"wide.h5": ("wide.h5", vw)}, "wide (4 automatic levels)", 4)
    za = json.load(open("ew/W.ome.zarr/P/24/0/0/.zarray"))
    check(za["chunks"] == [1, 200, 1024] and os.path.isfile("ew/W.ome.zarr/P/24/0/0/0/0/1"),
          "1024-pixel chunks, two across the field", str(za))
    plate = json.load(open("ew/W.ome.zarr/.zattrs"))["plate"]
    check(len(plate["rows"]) == 32 and plate["rows"][-1]["name"] == "AF" and
          len(plate["columns"]) == 48, "wells up to AF48: a 1536-well plate, rows A..AF")

    # the spec reader finds what is wrong in a broken store
    shutil.copytree("ex/SYN-M-P1.ome.zarr", "broken.zarr")
    first = json.load(open("broken.zarr/.zattrs"))["plate"]["wells"][0]["path"]
    os.remove(f"broken.zarr/{first}/0/0/0/0/0")                       # a chunk
    za = json.load(open(f"broken.zarr/{first}/0/0/.zarray"))
    za["dimension_separator"] = "."
    json.dump(za, open(f"broken.zarr/{first}/0/0/.zarray", "w"))
    pa = json.load(open("broken.zarr/.zattrs"))
    pa["plate"]["wells"][0]["columnIndex"] += 1                         # a wrong index
    pa["plate"]["field_count"] = 7
    json.dump(pa, open("broken.zarr/.zattrs", "w"))
    lp = f"broken.zarr/{first}/0/labels/mask/.zattrs"
    la = json.load(open(lp))
    la["multiscales"][0]["datasets"].append(dict(la["multiscales"][0]["datasets"][0],
                                                 path="1"))
    json.dump(la, open(lp, "w"))
    s = Spec()
    s.plate("broken.zarr")
    found = "\n".join(s.errors)
    check(all(k in found for k in ("chunk 0/0/0 missing", "nested", "is not row",
                                   "field_count 7", "no .zarray")),
          "the spec reader reports a missing chunk, flat chunk keys, a wrong well index, a wrong "
          "field_count, a missing level", found)

print(f"{len(FAILS)} failed" if FAILS else "all passed")
sys.exit(1 if FAILS else 0)
