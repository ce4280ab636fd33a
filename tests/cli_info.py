#!/usr/bin/python3
"""Asking the files and the commands: `milscreen info` on a shard, a score output, a
checkpoint, a foreign HDF5 file, a non-HDF5 file and a damaged shard, every figure of its
--json checked against h5py and hashlib; `--print-config` on model, train, score and bench
(every key read, defaults marked, the output itself a config that reads back the same, no
files written); `-h` on every command of `milscreen --help`.
Usage: cli_info.py MILSCREEN SOURCE_DIR"""
import configparser
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

MS = os.path.abspath(sys.argv[1])
SRC = os.path.abspath(sys.argv[2])
FAILS = []


def check(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        FAILS.append(what)


def run(*args, rc=0):
    r = subprocess.run([MS, *args], capture_output=True, text=True)
    if r.returncode != rc:
        print(r.stdout, r.stderr)
        raise SystemExit(f"milscreen {' '.join(args)}: exit {r.returncode}, expected {rc}")
    return r


def info(path, *extra, rc=0):
    return json.loads(run("info", "--json", path, *extra, rc=rc).stdout)


def strs(a):
    return [s.decode() if isinstance(s, bytes) else s for s in a]


def ini(text):
    """The config as {section: {key: value}} with inih's rules (';' comments after a space)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None,
                                   comment_prefixes=(";", "#"), strict=True)
    cp.optionxform = str
    cp.read_string(text)
    return {s: dict(cp[s]) for s in cp.sections()}


NET = """[net]
channels = 3
classes = 3
[train]
batch = 6
epochs = 1
crop = 64
[data]
train = data/train.h5
val = data/test.h5
[conv1]
type = conv
filters = 8
size = 5
stride = 2
[pool1]
type = maxpool
size = 3
stride = 2
[conv7]
type = conv
filters = classes
size = 1
activation = linear
[mil]
type = mil
pool = noisy_and
[fc]
type = fc
head = softmax
"""


def main():
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        run("synth", "--preset", "tiny", "--out", "data", "--seed", "2")
        shard = "data/train.h5"
        with h5py.File(shard, "a") as f:
            f.attrs["pixel_size_um"] = np.array([0.65, 0.5])

        # --- a shard
        r = run("info", shard)
        check("the shard is named and its pixel size shown",
              "milscreen plate shard (format milscreen-shard, version 1)" in r.stdout and
              "pixel size  0.65 x 0.5 um (y x)" in r.stdout, r.stdout.splitlines()[0])
        j = info(shard)
        with h5py.File(shard, "r") as f:
            img = f["images"]
            lab = f["meta/label"][()]
            cls = strs(f.attrs["class_names"])
            want = dict(kind="shard", milscreen=True, format="milscreen-shard", format_version=1,
                        images=img.shape[0], channels=img.shape[1], height=img.shape[2],
                        width=img.shape[3], dtype=str(img.dtype),
                        channel_names=strs(f.attrs["channel_names"]), class_names=cls,
                        multi_label=bool(f.attrs["multi_label"]),
                        label_counts={c: int((lab == k).sum()) for k, c in enumerate(cls)},
                        unlabelled=int((lab < 0).sum()),
                        plates=len(set(f["meta/plate"][()])),
                        wells=len(set(zip(f["meta/plate"][()], f["meta/well"][()]))),
                        treatments=len(set(f["meta/treatment"][()])),
                        replicates=len(set(f["meta/replicate"][()])),
                        sites=[int(f["meta/site"][()].min()), int(f["meta/site"][()].max())],
                        cells=f["cells/x"].shape[0], masks="masks" in f,
                        pixel_size_um=[0.65, 0.5], bytes=os.path.getsize(shard))
            chunks = list(img.chunks)
        want["digest"] = hashlib.sha256(open(shard, "rb").read()).hexdigest()
        bad = {k: (j.get(k), v) for k, v in want.items() if j.get(k) != v}
        check("shard --json: every figure equals h5py's and hashlib's", not bad, str(bad))
        ds = {o["path"]: o for o in j["datasets"]}
        check("shard datasets with type, shape and chunks",
              ds["/images"]["shape"] == [want["images"], 3, 128, 128] and
              ds["/images"]["chunks"] == chunks and ds["/images"]["type"] == "uint16" and
              "deflate" in ds["/images"]["filters"] and "/meta/label" in ds, str(ds["/images"]))
        check("shard attributes, pixel size included",
              j["attributes"]["pixel_size_um"] == [0.65, 0.5] and
              j["attributes"]["class_names"] == cls)
        check("--no-digest reads no digest", info(shard, "--no-digest")["digest"] is None)

        # --- a checkpoint and a score output
        open("net.ini", "w").write(NET)
        run("train", "--config", "net.ini", "--run", "run")
        ck = "run/ckpt-00000003.h5"
        j = info(ck)
        with h5py.File(ck, "r") as f:
            params = []
            f["weights"].visititems(lambda n, o: params.append(o.size)
                                    if isinstance(o, h5py.Dataset) else None)
            a = f.attrs
            want = dict(kind="checkpoint", format="milscreen-checkpoint", step=int(a["step"]),
                        epoch=int(a["epoch"]), batch=int(a["batch"]), seed=int(a["seed"]),
                        digest=a["digest"].decode() if isinstance(a["digest"], bytes)
                        else a["digest"], class_names=cls,
                        channel_names=["DAPI", "Tubulin", "Actin"], parameters=sum(params),
                        config=a["config"].decode() if isinstance(a["config"], bytes)
                        else a["config"])
            mean, std = f["norm/mean"][()], f["norm/std"][()]
        bad = {k: (j.get(k), v) for k, v in want.items() if j.get(k) != v}
        check("checkpoint --json: position, digest, names, parameters, config", not bad,
              str(bad))
        check("checkpoint normalisation", np.allclose(j["norm_mean"], mean, rtol=1e-6) and
              np.allclose(j["norm_std"], std, rtol=1e-6))
        r = run("info", ck)
        check("checkpoint text: step and epoch, config shown",
              "step 3, epoch 1" in r.stdout and "    [mil]" in r.stdout, r.stdout.splitlines()[1])
        run("score", "--checkpoint", ck, "--out", "scores", "data/test.h5")
        out = "scores/test.scores.h5"
        j = info(out)
        with h5py.File(out, "r") as f:
            a = f.attrs
            txt = lambda v: v.decode() if isinstance(v, bytes) else v
            pred = f["pred"][()]
            want = dict(kind="scores", format="milscreen-scores", images=len(pred), classes=3,
                        class_names=cls,
                        predicted_counts={c: int((pred == k).sum()) for k, c in enumerate(cls)},
                        map_size=list(f["maps"].shape[2:]), mask_mode=txt(a["mask_mode"]),
                        cells=f["cells/prob"].shape[0], source=txt(a["source"]),
                        source_digest=txt(a["source_digest"]),
                        checkpoint_digest=txt(a["checkpoint_digest"]), config=txt(a["config"]))
        bad = {k: (j.get(k), v) for k, v in want.items() if j.get(k) != v}
        check("score output --json: images, classes, predictions, maps, digests", not bad, str(bad))
        check("the score output names the checkpoint info describes",
              j["checkpoint_digest"] == info(ck)["digest"])

        # --- not milscreen files
        with h5py.File("foreign.h5", "w") as f:
            f["table"] = np.zeros((4, 2), np.float32)
            f.create_group("grp")["x"] = np.arange(3)
            f.attrs["format"] = "someone-else"
        r = run("info", "foreign.h5", rc=1)
        check("a foreign HDF5 file: 'not a milscreen file' and its top-level objects",
              "not a milscreen file" in r.stdout and "/table" in r.stdout and
              "[4, 2]" in r.stdout and "/grp" in r.stdout and "/grp/x" not in r.stdout,
              r.stdout.strip().replace("\n", " | "))
        j = info("foreign.h5", rc=1)
        check("foreign --json", j["milscreen"] is False and j["kind"] is None and
              j["format"] == "someone-else" and
              [(o["path"], o.get("shape")) for o in j["objects"]] == [("/grp", None),
                                                                      ("/table", [4, 2])])
        open("notes.txt", "w").write("hello\n")
        r = run("info", "notes.txt", rc=1)
        check("a text file: not HDF5", "not HDF5" in r.stderr, r.stderr.strip())
        with h5py.File("broken.h5", "w") as f:
            f.attrs["format"] = np.bytes_(b"milscreen-shard")
            f.attrs["format_version"] = 1
        j = info("broken.h5", rc=1)
        check("a damaged shard: its reader's error, exit 1", j["kind"] == "shard" and
              "error" in j and "broken.h5" in j["error"], j.get("error", ""))
        j = json.loads(run("info", "--json", "--no-digest", shard, out, "notes.txt", rc=1).stdout)
        check("several files: one JSON array, exit 1 when one is not milscreen's",
              [x.get("kind") for x in j] == ["shard", "scores", None])

        # --- --print-config
        cfg = os.path.join(SRC, "configs", "demo-mnist.ini")
        r = run("model", "--config", cfg, "--print-config", "--set", "train.lr=0.002")
        c = ini(r.stdout)
        lines = r.stdout.splitlines()
        check("model --print-config: defaults filled in and marked",
              c["train"]["keep"] == "3" and c["train"]["eps"] == "1e-08" and
              c["score"]["cell_size"] == "64" and c["localise"]["mode"] == "jacobian" and
              c["conv1"]["stride"] == "1" and
              any(l.startswith("keep = 3") and l.endswith("; default") for l in lines))
        check("given keys as given, --set marked",
              c["train"]["batch"] == "16" and c["fc"]["identity"] == "5" and
              any(l.startswith("lr = 0.002") and l.endswith("; --set") for l in lines) and
              not any(l.startswith("batch = 16") and ";" in l for l in lines))
        open("printed.ini", "w").write(r.stdout)
        r2 = run("model", "--config", "printed.ini", "--print-config")
        check("the printed config reads back to the same config, every key now given",
              ini(r2.stdout) == c and not any(l.endswith("; default") for l in
                                              r2.stdout.splitlines()))
        check("and describes the same network",
              run("model", "--config", "printed.ini").stdout.splitlines()[2:] ==
              run("model", "--config", cfg, "--set", "train.lr=0.002").stdout.splitlines()[2:])
        r = run("train", "--config", "net.ini", "--run", "never", "--print-config")
        c = ini(r.stdout)
        check("train --print-config: the run's config, nothing written",
              c["data"]["train"] == "data/train.h5" and c["train"]["checkpoint_every"] == "0" and
              c["mil"]["a"] == "10" and c["train"]["lr"] == "0.001" and
              not os.path.exists("never"))
        r = run("score", "--checkpoint", ck, "--print-config", "--set", "localise.mode=otsu")
        c = ini(r.stdout)
        check("score --print-config: the checkpoint's config with --set, no --out needed",
              c["localise"]["mode"] == "otsu" and c["score"]["masks"] == "true" and
              c["net"]["classes"] == "3" and "localise.mode" not in os.listdir("."))
        r = run("bench", "--cpu", "--print-config", "--set", "conv1.filters=16")
        c = ini(r.stdout)
        check("bench --print-config: the network it would time",
              c["net"]["classes"] == "12" and c["conv1"]["filters"] == "16" and
              c["conv2"]["stride"] == "1")
        r = run("model", "--config", "net.ini", "--print-config", "--set", "train.bacth=3", rc=2)
        check("a typo is still an error with --print-config", "bacth" in r.stderr)

        # --- -h and --help on every command
        cmds = []
        listing = run("--help").stdout.splitlines()
        for l in listing[listing.index("commands:") + 1:]:
            if not l.startswith("  "):
                break
            cmds.append(l.split()[0])
        check("the command table lists info and plot", "info" in cmds and "plot" in cmds,
              str(cmds))
        for c in cmds:
            for flag in ("-h", "--help"):
                r = subprocess.run([MS, c, flag], capture_output=True, text=True)
                check(f"{c} {flag}", r.returncode == 0 and
                      r.stdout.startswith(f"usage: milscreen {c}"),
                      f"(exit {r.returncode}) {r.stdout[:40]!r} {r.stderr[:80]!r}")
        for sec in ("--cpu", "--io"):
            r = subprocess.run([MS, "bench", sec, "-h"], capture_output=True, text=True)
            check(f"bench {sec} -h", r.returncode == 0 and
                  r.stdout.startswith(f"usage: milscreen bench {sec}"), repr(r.stdout[:40]))
    if FAILS:
        print(f"{len(FAILS)} failed")
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
