#!/usr/bin/python3
"""milscreen export's tables and its refusals: images.csv and cells.csv read back with Python's
csv module and compared, column by column and by class NAME, with the score outputs and shards
made here (tests/export_fixture.py); then the inputs export must refuse (missing shard,
other image ids, a changed shard, maps of the wrong size, a well that is no plate position, an
existing output), each with a clear message, a non-zero exit and nothing left behind.
Usage: export_tables.py MILSCREEN"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_fixture as fx  # noqa: E402

MS = os.path.abspath(sys.argv[1])
FAILS = []


def check(ok, what, detail=""):
    print(("ok   " if ok else "FAIL ") + what + ("" if ok else f"  {detail}"))
    if not ok:
        FAILS.append(what)


def export(*args):
    return subprocess.run([MS, "export", *args], capture_output=True, text=True)


def rows(path):
    # newline="" as the csv module asks: quoted fields keep their line breaks
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def f32(text):
    return np.float32(float(text))


def shard_meta(path):
    with h5py.File(path, "r") as f:
        m = {k: f["meta/" + k][:] for k in ("image_id", "plate", "well", "site", "treatment",
                                             "replicate")}
        m = {k: [x.decode() if isinstance(x, bytes) else int(x) for x in v] for k, v in m.items()}
        m["classes"] = [s.decode() for s in f.attrs["class_names"]]
        m["multi"] = bool(f.attrs["multi_label"])
        m["label"] = f["meta/label"][:] if "meta/label" in f else None
        m["labels"] = f["meta/labels"][:] if "meta/labels" in f else None
        if "cells/image_index" in f:
            m["cells"] = {k: f["cells/" + k][:] for k in ("image_index", "x", "y", "label")}
    return m


def true_name(m, i):
    if not m["multi"]:
        return m["classes"][m["label"][i]] if m["label"][i] >= 0 else ""
    row = m["labels"][i]
    return "" if (row == 255).all() else ";".join(c for c, b in zip(m["classes"], row) if b)


def check_images(table, outputs, what):
    """outputs: list of (shard path, score values) in the order given to export."""
    want = [(s, v, i) for s, v in outputs for i in range(len(v["ids"]))]
    check(len(table) == len(want), f"{what}: one row per image", f"{len(table)} vs {len(want)}")
    bad = []
    for r, (shard, v, i) in zip(table, want):
        m = shard_meta(shard)
        names = v["classes"]
        exp = {"shard": os.path.basename(shard), "image_id": v["ids"][i],
               "plate": m["plate"][i], "well": m["well"][i], "site": str(m["site"][i]),
               "treatment": m["treatment"][i], "replicate": str(m["replicate"][i]),
               "true_label": true_name(m, i), "predicted": names[v["pred"][i]],
               "predicted_mil": names[int(np.argmax(v["mil"][i]))]}
        for key, val in exp.items():
            if r[key] != val:
                bad.append((i, key, r[key], val))
        for k, name in enumerate(names):
            if f32(r["fc_prob:" + name]) != v["fc"][i, k]:
                bad.append((i, "fc_prob:" + name, r["fc_prob:" + name], v["fc"][i, k]))
            if f32(r["mil_prob:" + name]) != v["mil"][i, k]:
                bad.append((i, "mil_prob:" + name, r["mil_prob:" + name], v["mil"][i, k]))
    check(not bad, f"{what}: every value equals the HDF5 one (by class name, exact float32)",
          str(bad[:5]))


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    rng = np.random.default_rng(11)
    fx.synth(MS, "data")
    fx.spice_shard("data/test.h5")
    fx.spice_shard("data/train.h5", pixel_size=None)
    shard_classes = shard_meta("data/test.h5")["classes"]
    # the checkpoint's order need not be the shard's: true labels go by the shard's names
    classes = shard_classes[::-1]
    va = fx.score_output("test.scores.h5", "data/test.h5", classes, rng)
    vb = fx.score_output("train.scores.h5", "data/train.h5", classes, rng, cells=False,
                         class_masks=False)

    # ---- two outputs into one export
    r = export("--out", "ex", "test.scores.h5", "train.scores.h5")
    check(r.returncode == 0, "export of two score outputs", r.stderr)
    table = rows("ex/images.csv")
    with open("ex/images.csv", "rb") as f:
        raw = f.read()
    check(raw.count(b"\r\n") == len(table) + 1,  # the header too; quoted "\n" are kept
          "RFC 4180: CRLF line ends (a line break inside a field kept as written)")
    check(raw.count(b'"taxol, 0.3 ""\xc2\xb5M""\nbatch 2"') == 2,  # image 0 of both shards
          "RFC 4180: a field with a comma, quotes and a line break is quoted, quotes doubled")
    head = next(csv.reader(open("ex/images.csv", newline="", encoding="utf-8")))
    check(head[:10] == ["shard", "image_id", "plate", "well", "site", "treatment", "replicate",
                        "true_label", "predicted", "predicted_mil"] and
          head[10:13] == ["fc_prob:" + c for c in classes] and
          head[13:16] == ["mil_prob:" + c for c in classes] and head[16:] == ["zarr_path"],
          "images.csv header: metadata, then fc_prob:<class> and mil_prob:<class> in the "
          "checkpoint's order", str(head))
    check_images(table, [("data/test.h5", va), ("data/train.h5", vb)], "images.csv")
    check(all(os.path.isfile(os.path.join("ex", r["zarr_path"], ".zattrs")) for r in table),
          "every zarr_path names a field group of the export")

    cells = rows("ex/cells.csv")
    m = shard_meta("data/test.h5")
    c = m["cells"]
    check(len(cells) == len(c["x"]), "cells.csv: one row per scored cell (the test shard's)",
          f"{len(cells)} vs {len(c['x'])}")
    bad = []
    for j, r in enumerate(cells):
        i = c["image_index"][j]
        lab = c["label"][j]
        exp = {"shard": "test.h5", "cell": str(j), "image_id": va["ids"][i],
               "plate": m["plate"][i], "well": m["well"][i], "site": str(m["site"][i]),
               "true_label": shard_classes[lab] if lab >= 0 else "",
               "predicted": classes[int(np.argmax(va["cell_prob"][j]))]}
        bad += [(j, k, r[k], v) for k, v in exp.items() if r[k] != v]
        if f32(r["x"]) != c["x"][j] or f32(r["y"]) != c["y"][j]:
            bad.append((j, "x,y", r["x"], r["y"]))
        bad += [(j, k) for k, name in enumerate(classes)
                if f32(r["mil_prob:" + name]) != va["cell_prob"][j, k]]
    check(not bad, "cells.csv: position, labels, prediction and every probability by name",
          str(bad[:5]))
    man = json.load(open("ex/export.json"))
    check(man["format"] == "milscreen-export" and man["tables"] == ["images.csv", "cells.csv"]
          and man["class_names"] == classes and len(man["plates"]) == 3 and
          [i["images"] for i in man["inputs"]] == [18, 18],
          "export.json lists the tables, plates, classes and inputs", str(man))
    check(not [p for p in os.listdir(".") if ".tmp." in p or ".old." in p],
          "no temporary folder left")

    # ---- a multi-label shard, tables only
    ml = fx.multilabel_shard("yeast.h5")
    vy = fx.score_output("yeast.scores.h5", "yeast.h5", ["nucleus", "ER", "mito", "vacuole"],
                         rng, class_masks=False)
    r = export("--out", "ey", "--no-zarr", "yeast.scores.h5")
    check(r.returncode == 0, "export --no-zarr of a multi-label output", r.stderr)
    t = rows("ey/images.csv")
    check_images(t, [("yeast.h5", vy)], "multi-label images.csv")
    check(t[3]["true_label"] == "" and t[0]["true_label"] == ";".join(
        n for n, b in zip(["nucleus", "ER", "mito", "vacuole"], ml[0]) if b) and
          "zarr_path" not in t[0] and not os.path.exists("ey/cells.csv") and
          not [p for p in os.listdir("ey") if p.endswith(".ome.zarr")],
          "multi-label: classes joined by ';', unknown empty; no Zarr, no cells.csv")

    # ---- refusals: a clear message, exit status not 0, nothing written
    def refused(what, args, words, rc=None):
        before = sorted(os.listdir("."))
        r = export(*args)
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        ok = r.returncode != 0 and (rc is None or r.returncode == rc) and \
            all(w in r.stderr for w in words) and "error" in r.stderr
        check(ok, f"refused: {what} (exit {r.returncode}): {msg}", r.stdout + r.stderr)
        check(sorted(os.listdir(".")) == before, f"  ...and nothing written ({what})",
              str(set(os.listdir(".")) ^ set(before)))

    shutil.move("data/train.h5", "train-moved.h5")
    refused("missing source shard", ["--out", "e1", "train.scores.h5"],
            ["train.scores.h5", "data/train.h5", "does not exist", "--shard-dir"], rc=1)
    os.makedirs("elsewhere")
    shutil.move("train-moved.h5", "elsewhere/train.h5")
    r = export("--out", "e2", "--shard-dir", "elsewhere", "train.scores.h5")
    check(r.returncode == 0 and len(rows("e2/images.csv")) == 18,
          "--shard-dir finds a moved shard by its file name", r.stderr)
    shutil.rmtree("e2")
    shutil.move("elsewhere/train.h5", "data/train.h5")

    shutil.copy("test.scores.h5", "ids.scores.h5")
    with h5py.File("ids.scores.h5", "r+") as f:
        ids = [s.decode() for s in f["image_id"][:]]
        ids[5] = "SYN-M-P9_Z99_s1"
        del f["image_id"]
        f["image_id"] = fx.strings(ids)
    refused("image ids other than the shard's",
            ["--out", "e1", "ids.scores.h5"], ["ids.scores.h5", "image 5", "SYN-M-P9_Z99_s1",
                                               "not the shard it scored"], rc=1)
    shutil.copy("test.scores.h5", "few.scores.h5")
    with h5py.File("few.scores.h5", "r+") as f:
        for k in ("image_id", "mil_prob", "fc_prob", "pred", "maps", "masks", "class_masks"):
            data = f[k][:-1]
            del f[k]
            f[k] = data
        del f["cells"]
    refused("fewer images than the shard", ["--out", "e1", "few.scores.h5"],
            ["17 images", "has 18"], rc=1)

    shutil.copy("data/test.h5", "changed.h5")
    shutil.copy("test.scores.h5", "changed.scores.h5")
    with h5py.File("changed.h5", "r+") as f:
        f["images"][0, 0, 0, 0] ^= 1  # same ids, other pixels
    with h5py.File("changed.scores.h5", "r+") as f:
        f.attrs["source"] = os.path.abspath("changed.h5")
    refused("a shard changed since it was scored", ["--out", "e1", "changed.scores.h5"],
            ["SHA-256", "changed.h5", "changed since it was scored"], rc=1)

    shutil.copy("test.scores.h5", "maps.scores.h5")
    with h5py.File("maps.scores.h5", "r+") as f:
        data = f["maps"][:, :, :-1, :]
        del f["maps"]
        f["maps"] = data
    refused("instance maps of the wrong size for the network",
            ["--out", "e1", "maps.scores.h5"], ["/maps", "its network gives"], rc=1)

    shutil.copy("test.scores.h5", "nan.scores.h5")
    with h5py.File("nan.scores.h5", "r+") as f:
        data = f["maps"][:]
        data[-1, 1, 2, 2] = np.nan  # the last image: met after other fields are written
        del f["maps"]
        f["maps"] = data
    refused("a map that is not a probability, found half-way through writing",
            ["--out", "e1", "nan.scores.h5"], ["/maps[17, 1]", "not a probability"], rc=1)

    fx.multilabel_shard("nowell.h5")
    with h5py.File("nowell.h5", "r+") as f:
        w = [s.decode() for s in f["meta/well"][:]]
        w[2] = "r02c03"
        del f["meta/well"]
        f["meta/well"] = fx.strings(w)
    fx.score_output("nowell.scores.h5", "nowell.h5", ["a", "b", "c", "d"], rng)
    refused("a well that is no plate position (Zarr)", ["--out", "e1", "nowell.scores.h5"],
            ["y2", "r02c03", "--no-zarr"], rc=1)
    r = export("--out", "e3", "--no-zarr", "nowell.scores.h5")
    check(r.returncode == 0, "...and --no-zarr exports its tables", r.stderr)
    refused("score outputs with different classes",
            ["--out", "e1", "test.scores.h5", "yeast.scores.h5"], ["different classes"], rc=1)
    refused("a missing score output", ["--out", "e1", "nothere.scores.h5"],
            ["nothere.scores.h5"], rc=1)

    # existing outputs: refused without --force; with it only an earlier export is replaced
    stamp = os.path.getmtime("ex/export.json"), open("ex/images.csv", "rb").read()
    refused("an existing export without --force", ["--out", "ex", "train.scores.h5"],
            ["ex exists", "--force"], rc=2)
    check(open("ex/images.csv", "rb").read() == stamp[1], "  ...which is left as it was")
    r = export("--out", "ex/", "--force", "train.scores.h5")
    check(r.returncode == 0 and len(rows("ex/images.csv")) == 18 and
          not os.path.exists("ex/cells.csv"),
          "--force replaces an earlier export whole (no file of the old one left)",
          r.stderr + str(os.listdir("ex")))
    os.makedirs("mydata")
    open("mydata/notes.txt", "w").write("keep me")
    refused("--force on a folder that is not an export", ["--out", "mydata", "--force",
                                                          "train.scores.h5"],
            ["not a milscreen export", "not replacing"], rc=2)
    check(open("mydata/notes.txt").read() == "keep me", "  ...which is left as it was")
    r = export("--out", "x", "--levels", "0", "train.scores.h5")
    check(r.returncode == 2 and "--levels" in r.stderr, "a bad option value is a usage error",
          r.stderr)

print(f"{len(FAILS)} failed" if FAILS else "all passed")
sys.exit(1 if FAILS else 0)
