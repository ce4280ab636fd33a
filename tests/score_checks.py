#!/usr/bin/python3
"""score and eval guards (docs/RELIABILITY.md sections 1, 3 and 8): identity by name (channels
and classes against the checkpoint's, --remap-classes for a permutation or subset, eval
comparing labels by name and refusing to pool score files of different class lists, outputs
named by the checkpoint's classes with dimension labels); nothing overwritten (two shards of
one file name, an output that is an input, an output of another shard from an earlier run);
signals (SIGTERM, SIGINT, SIGHUP, SIGUSR1 stop after the current image, remove the temporary
file, exit 75, and the next run finishes the job); --checkpoint RUN_DIR and --dry-run.

usage: score_checks.py MILSCREEN"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

MS = sys.argv[1]
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what}" + (f"  [{detail}]" if not ok and detail else ""))
    if not ok:
        failures.append(what)
    return ok


def run(*args, ok=True):
    r = subprocess.run([MS, *args], capture_output=True, text=True, timeout=300)
    if ok and r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"milscreen {' '.join(args)} failed ({r.returncode})")
    return r


def strs(a):
    return [x.decode() if isinstance(x, bytes) else str(x) for x in a]


def temporaries(d):
    return [n for n in os.listdir(d) if n.startswith(".") and ".tmp." in n] if os.path.isdir(d) else []


def set_names(path, attr, names):
    with h5py.File(path, "r+") as f:
        f.attrs[attr] = np.array([n.encode() for n in names])


def relabel(path, classes, labels):
    """The shard's class list and every image's label (names; None = unknown); cell labels
    follow their names into the new list (unknown when it lacks them)."""
    with h5py.File(path, "r+") as f:
        old = strs(f.attrs["class_names"])
        f.attrs["class_names"] = np.array([n.encode() for n in classes])
        f["meta/label"][...] = np.array([classes.index(n) if n is not None else -1
                                         for n in labels], dtype=np.int32)
        if "cells/label" in f:
            f["cells/label"][...] = np.array(
                [classes.index(old[l]) if l >= 0 and old[l] in classes else -1
                 for l in f["cells/label"][()]], dtype=np.int32)


def ev(*files):
    r = run("eval", *files, "--json", "ev.json", ok=False)
    return r, (json.load(open("ev.json")) if r.returncode == 0 else None)


CFG = """[net]
channels = 3
classes = 3
[train]
batch = 4
epochs = 1
crop = 48
seed = 5
loader_threads = 1
[data]
train = data/train.h5
[c1]
type = conv
filters = 8
size = 3
[p1]
type = maxpool
size = 3
stride = 2
[c3]
type = conv
filters = classes
size = 1
activation = linear
[mil]
type = mil
pool = noisy_and
a = 10
[fc]
type = fc
head = softmax
"""

with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    run("synth", "--preset", "tiny", "--out", "data", "--seed", "3")
    open("tiny.ini", "w").write(CFG)
    os.makedirs("run")
    r = run("score", "--checkpoint", "run", "--out", "s0", "data/test.h5", ok=False)
    check("--checkpoint RUN_DIR without a checkpoint is an error naming it",
          r.returncode == 1 and "run folder run holds no checkpoint" in r.stderr, r.stderr)
    run("train", "--config", "tiny.ini", "--run", "run", "--threads", "1", "--progress", "lines")
    run("train", "--config", "tiny.ini", "--run", "run", "--threads", "1", "--progress", "lines",
        "--resume", "--set", "train.epochs=2")
    cks = sorted(n for n in os.listdir("run") if n.startswith("ckpt-"))
    ck = "run/" + cks[-1]
    with h5py.File(ck, "r") as f:
        classes = f.attrs["class_names"]
        classes = (classes.decode() if isinstance(classes, bytes) else classes).split("\n")
        channels = f.attrs["channel_names"]
        channels = (channels.decode() if isinstance(channels, bytes) else channels).split("\n")
        ck_digest = f.attrs["digest"]
    sc = ["score", "--threads", "1", "--checkpoint"]

    # -- --checkpoint RUN_DIR: the newest checkpoint ------------------------------------------
    r = run(*sc, "run", "--out", "s", "data/test.h5")
    with h5py.File("s/test.scores.h5", "r") as f:
        check("--checkpoint RUN_DIR scores with the newest checkpoint",
              len(cks) == 2 and f"newest checkpoint {ck}" in r.stdout and
              f.attrs["checkpoint_digest"] == ck_digest, r.stdout)
        # -- 1: the outputs name the checkpoint's classes, with dimension labels ---------------
        check("output class_names are the checkpoint's", strs(f.attrs["class_names"]) == classes,
              str(f.attrs["class_names"]))
        named = all(strs(f[n].attrs["class_names"]) == classes
                    for n in ("mil_prob", "fc_prob", "maps", "cells/prob"))
        check("mil_prob, fc_prob, maps and cells/prob carry class_names", named)
        labels = {n: [f[n].dims[i].label for i in range(f[n].ndim)]
                  for n in ("mil_prob", "fc_prob", "pred", "maps", "masks", "image_id",
                            "cells/prob")}
        check("dimension labels", labels == {
            "mil_prob": ["image", "class"], "fc_prob": ["image", "class"], "pred": ["image"],
            "maps": ["image", "class", "y", "x"], "masks": ["image", "y", "x"],
            "image_id": ["image"], "cells/prob": ["cell", "class"]}, str(labels))
        check("source is the shard's absolute path",
              strs([f.attrs["source"]])[0] == os.path.realpath("data/test.h5"))
        base_mil, base_fc = f["mil_prob"][()], f["fc_prob"][()]
        pred = [classes[k] for k in f["pred"][()]]

    # -- 1: class names ------------------------------------------------------------------------
    # a shard of the same number of classes under other names: main scored it (exit 0)
    shutil.copy("data/test.h5", "renamed.h5")
    other = ["Apoptosis", "Autophagy", "Senescence"]
    set_names("renamed.h5", "class_names", other)
    r = run(*sc, ck, "--out", "s1", "renamed.h5", ok=False)
    check("a shard of other class names is refused naming both lists",
          r.returncode == 1 and "renamed.h5" in r.stderr and all(
              f"'{n}'" in r.stderr for n in other + classes) and "--remap-classes" in r.stderr,
          r.stderr)
    check("... and nothing is written", not os.listdir("s1") if os.path.isdir("s1") else True)
    r = run(*sc, ck, "--out", "s1", "--remap-classes", "renamed.h5", ok=False)
    check("--remap-classes refuses names the checkpoint does not have",
          r.returncode == 1 and "'Apoptosis'" in r.stderr and "is not one of" in r.stderr,
          r.stderr)

    # a permutation, labelled with the network's predictions: by name every label is right,
    # by index (a 3-cycle) every label is wrong
    perm = [classes[2], classes[0], classes[1]]
    shutil.copy("data/test.h5", "perm.h5")
    relabel("perm.h5", perm, pred)
    r = run(*sc, ck, "--out", "s", "perm.h5", ok=False)
    check("a permuted class list is refused without --remap-classes",
          r.returncode == 1 and "perm.h5" in r.stderr and "in that order" in r.stderr, r.stderr)
    run(*sc, ck, "--out", "s", "--remap-classes", "perm.h5")
    with h5py.File("s/perm.scores.h5", "r") as f:
        check("--remap-classes: the output keeps the checkpoint's classes and columns",
              strs(f.attrs["class_names"]) == classes and
              np.array_equal(f["mil_prob"][()], base_mil) and
              np.array_equal(f["fc_prob"][()], base_fc))
    r, j = ev("s/perm.scores.h5")
    check("eval compares labels by name (a remapped shard labelled with the predictions: "
          "fc accuracy 100%)", j is not None and j["fc"]["accuracy"] == 1.0 and
          j["class_names"] == classes, r.stderr + str(j and j["fc"]))

    # a subset, in another order: images of the third class unlabelled
    sub = [perm[0], perm[1]] if pred.count(perm[0]) + pred.count(perm[1]) else perm[1:]
    shutil.copy("data/test.h5", "sub.h5")
    relabel("sub.h5", sub, [p if p in sub else None for p in pred])
    run(*sc, ck, "--out", "s", "--remap-classes", "sub.h5")
    r, j = ev("s/sub.scores.h5")
    n_sub = sum(p in sub for p in pred)
    check("--remap-classes with a subset; eval maps it by name",
          j is not None and j["labelled"] == n_sub and j["fc"]["accuracy"] == 1.0,
          r.stderr + str(j and (j["labelled"], j["fc"])))

    # eval pools only one class list
    shutil.copy("s/perm.scores.h5", "s/other.scores.h5")
    set_names("s/other.scores.h5", "class_names", perm)
    r, _ = ev("s/test.scores.h5", "s/other.scores.h5")
    check("eval refuses to pool score files of different class lists, naming both",
          r.returncode == 1 and "s/other.scores.h5" in r.stderr and "s/test.scores.h5" in
          r.stderr and "one class list" in r.stderr, r.stderr)
    r, j = ev("s/test.scores.h5", "s/perm.scores.h5")
    check("eval pools a shard and its remapped twin", r.returncode == 0 and j["images"] == 36,
          r.stderr)

    shutil.copy("s/test.scores.h5", "s/unnamed.scores.h5")
    with h5py.File("s/unnamed.scores.h5", "r+") as f:
        del f.attrs["class_names"]  # as another tool might write it
    r, j = ev("s/unnamed.scores.h5")
    r2, j2 = ev("s/test.scores.h5")
    check("eval of a score file without class names takes its shard's order and says so",
          j is not None and "names no classes" in r.stderr and j["fc"] == j2["fc"], r.stderr)
    # an output of an older run that carries other class names is not up to date
    run(*sc, ck, "--out", "s5", "data/test.h5")
    set_names("s5/test.scores.h5", "class_names", other)
    r = run(*sc, ck, "--out", "s5", "data/test.h5")
    with h5py.File("s5/test.scores.h5", "r") as f:
        check("an output naming other classes than the checkpoint's is scored again",
              "data/test.h5 ->" in r.stdout and strs(f.attrs["class_names"]) == classes,
              r.stdout)

    # channels
    shutil.copy("data/test.h5", "chan.h5")
    set_names("chan.h5", "channel_names", ["DAPI", "Actin", "Tubulin"])
    r = run(*sc, ck, "--out", "s2", "chan.h5", ok=False)
    check("a shard of other channel names (or order) is refused naming both lists",
          r.returncode == 1 and "'Actin', 'Tubulin'" in r.stderr and
          ", ".join(f"'{c}'" for c in channels) in r.stderr, r.stderr)
    shutil.copy(ck, "old.h5")
    with h5py.File("old.h5", "r+") as f:
        del f.attrs["channel_names"]  # as written before checkpoints named channels
    r = run(*sc, "old.h5", "--out", "s2", "data/test.h5", ok=False)
    check("a checkpoint without channel names is refused, saying how to go on",
          r.returncode == 1 and "predates channel names" in r.stderr and
          "--assume-channel-order" in r.stderr, r.stderr)
    r = run(*sc, "old.h5", "--out", "s2", "--assume-channel-order", "data/test.h5")
    with h5py.File("s2/test.scores.h5", "r") as f:
        check("... and scored with --assume-channel-order, saying so",
              "predates channel names" in r.stderr and
              np.array_equal(f["mil_prob"][()], base_mil), r.stderr)

    # -- 3: nothing overwritten ----------------------------------------------------------------
    os.makedirs("a"), os.makedirs("b")
    shutil.copy("data/test.h5", "a/plate.h5")
    shutil.copy("data/train.h5", "b/plate.h5")
    r = run(*sc, ck, "--out", "s3", "a/plate.h5", "b/plate.h5", ok=False)
    check("a/plate.h5 and b/plate.h5 into one folder: refused naming both, exit 2",
          r.returncode == 2 and "a/plate.h5 and b/plate.h5" in r.stderr and
          "s3/plate.scores.h5" in r.stderr, r.stderr)
    check("... before anything is written", not os.path.exists("s3/plate.scores.h5"))
    r = run(*sc, ck, "--out", "s3", "a/plate.h5", "./a/plate.h5", ok=False)
    check("a shard given twice is refused", r.returncode == 2 and "given twice" in r.stderr,
          r.stderr)
    shutil.copy("data/test.h5", "a/plate.scores.h5")
    r = run(*sc, ck, "--out", "a", "a/plate.h5", "a/plate.scores.h5", ok=False)
    check("an output that is one of the inputs is refused",
          r.returncode == 2 and "is one of the inputs" in r.stderr, r.stderr)
    run(*sc, ck, "--out", "s3", "a/plate.h5")
    before = open("s3/plate.scores.h5", "rb").read()
    r = run(*sc, ck, "--out", "s3", "b/plate.h5", ok=False)
    check("an earlier run's output of another shard of the same name is not replaced",
          r.returncode == 1 and "holds the scores of" in r.stderr and
          open("s3/plate.scores.h5", "rb").read() == before, r.stderr)
    run(*sc, ck, "--out", "s3", "--force", "b/plate.h5")
    with h5py.File("s3/plate.scores.h5", "r") as f:
        check("... unless --force", f["mil_prob"].shape[0] == 18 and
              strs([f.attrs["source"]])[0] == os.path.realpath("b/plate.h5"))
    os.makedirs("s4")
    open("s4/test.scores.h5", "wb").write(open(ck, "rb").read())  # HDF5, not a score file
    r = run(*sc, ck, "--out", "s4", "data/test.h5", ok=False)
    check("a file under an output's name that is not a score file is not replaced",
          r.returncode == 1 and "not a milscreen score file" in r.stderr, r.stderr)

    # -- --dry-run -----------------------------------------------------------------------------
    r = run(*sc, "run", "--out", "dry/new", "--dry-run", "data/test.h5", "data/train.h5",
            "renamed.h5", ok=False)
    check("--dry-run names the shard that cannot be scored, exit 1, and writes nothing",
          r.returncode == 1 and "renamed.h5" in r.stderr and "would not be scored" in r.stderr
          and "2 of 3 shards would be scored" in r.stdout and not os.path.exists("dry"),
          r.stdout + r.stderr)
    r = run(*sc, "run", "--out", "s", "--dry-run", "data/test.h5", "data/train.h5")
    check("--dry-run says which shards would be skipped as up to date",
          "s/test.scores.h5: up to date" in r.stdout and "would be skipped" in r.stdout and
          "data/train.h5 would be scored" in r.stdout and
          not os.path.exists("s/train.scores.h5"), r.stdout)
    r = run(*sc, "run", "--out", "tiny.ini/x", "--dry-run", "data/test.h5", ok=False)
    check("--dry-run checks the output folder", r.returncode == 1 and "not a folder" in r.stderr,
          r.stderr)
    r = run(*sc, "run", "--out", "s3", "--dry-run", "a/plate.h5", "b/plate.h5", ok=False)
    check("--dry-run checks output collisions", r.returncode == 2 and "a/plate.h5 and "
          "b/plate.h5" in r.stderr, r.stderr)

    # -- 8: signals ----------------------------------------------------------------------------
    run("synth", "--preset", "tiny", "--out", "big", "--seed", "4", "--size", "320x320",
        "--sites", "3")  # 54 images: seconds to score
    os.rename("big/test.h5", "big/big2.h5")
    def interrupt(sig, shards, out, after=None):
        p = subprocess.Popen([MS, *sc, ck, "--out", out, "--set", "score.cells=false", *shards],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while time.time() - t0 < 120 and p.poll() is None and not (
                temporaries(out) and (not after or os.path.exists(after))):
            time.sleep(0.02)
        seen = temporaries(out)
        time.sleep(0.3)  # a few images into the shard
        p.send_signal(sig)
        o, e = p.communicate(timeout=120)
        return p.returncode, o, e, seen

    rc, o, e, seen = interrupt(signal.SIGTERM, ["data/test.h5", "big/train.h5", "big/big2.h5"],
                               "sig", after="sig/test.scores.h5")
    check("SIGTERM: exit 75, after the current image, the temporary file removed and said so",
          rc == 75 and seen and "stopped by SIGTERM after image" in o and
          f"temporary file sig/{seen[0]} was removed" in o and not temporaries("sig") and
          "run the same command again" in o, f"{rc} {seen} {o[-600:]} {e[-600:]}")
    with h5py.File("sig/test.scores.h5", "r") as f:
        check("... the shard scored before it is complete",
              f["mil_prob"].shape == (18, 3) and "masks" in f)
    check("... and nothing of the interrupted shard", not os.path.exists("sig/train.scores.h5"))
    r = run(*sc, ck, "--out", "sig", "--set", "score.cells=false", "data/test.h5",
            "big/train.h5", "big/big2.h5")
    check("the same command again skips what is done and scores the rest",
          "test.scores.h5: up to date" in r.stdout and "big/train.h5 ->" in r.stdout and
          "big/big2.h5 ->" in r.stdout, r.stdout)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        rc, o, e, seen = interrupt(sig, ["big/train.h5"], f"sig-{sig.name}")
        check(f"{sig.name}: exit 75, temporary file removed",
              rc == 75 and seen and f"stopped by {sig.name}" in o and
              not temporaries(f"sig-{sig.name}") and
              not os.path.exists(f"sig-{sig.name}/train.scores.h5"), f"{rc} {o[-400:]} {e[-400:]}")

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
