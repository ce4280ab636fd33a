#!/usr/bin/python3
"""`milscreen train` when things go wrong (issue 11 items 8 and 1, issue 12 item 3).

8. Exit status tells the truth: SIGTERM, SIGUSR1, SIGINT and SIGHUP each make train write a
   checkpoint and stop with exit status 75 (stopped, resumable), saying so; temporary files
   left by killed writers are removed by the next run when their process is gone from this
   host, and reported when they belong to another host (or an older milscreen) and are old.
5. --resume falls back to the previous checkpoint when the newest is damaged (truncated, a
   flipped byte), saying so, and the run then ends exactly where an uninterrupted one does; it
   fails clearly when none can be read, and refuses a checkpoint whose classes are not the
   shards'.
1. Identity by name: validation shards with other classes (a 3-class model on a 4-class
   shard), training shards with classes in another order or other channel names are refused,
   naming both lists.
12.3 --dry-run checks everything (config, shards, run folder, the checkpoint to resume from),
   says what would run, and writes nothing.
usage: fault_train.py MILSCREEN ROOT"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

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


def ckpts(run):
    return sorted(f for f in os.listdir(run) if re.fullmatch(r"ckpt-\d+\.h5", f)) \
        if os.path.isdir(run) else []


def weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f["weights"].visititems(lambda n, d: out.__setitem__(n, d[()])
                                if isinstance(d, h5py.Dataset) else None)
    return out


def host_tag():
    h = socket.gethostname().split(".")[0] or "unknown"
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else "_" for c in h)


def data_offset(ds):
    """File offset of a dataset's first stored byte (chunked or contiguous)."""
    return ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()

def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    ms, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    tmp = tempfile.mkdtemp(prefix="ms-fault-train-")
    try:
        os.chdir(tmp)
        run_checks(ms, root)
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)
    print("fault_train: " + ("FAILED: " + "; ".join(failures) if failures else "all checks passed"))
    return 1 if failures else 0


def run_checks(ms, root):
    r = sh([ms, "synth", "--preset", "tiny", "--size", "64x64", "--sites", "2", "--treatments",
            "2", "--replicates", "2", "--out", "data", "--threads", "1"])
    if not check("synth", r.returncode == 0, r.stderr):
        return
    base = ["--config", os.path.join(root, "configs", "paper.ini"),
            "--set", "conv1.filters=4", "--set", "conv2.filters=4", "--set", "conv3.filters=4",
            "--set", "conv4.filters=8", "--set", "conv5.filters=8", "--set", "conv6.filters=8",
            "--set", "net.classes=3", "--set", "train.crop=0", "--set", "train.batch=2",
            "--set", "train.checkpoint_every=2", "--set", "train.keep=10",
            "--threads", "1", "--progress", "lines"]
    data = ["--set", "data.train=data/train.h5", "--set", "data.val=data/test.h5"]
    tiny = base + data

    # -- 8. signals: checkpoint, stop, exit 75 ---------------------------------------------
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP):
        run = f"sig-{sig.name}"
        p = subprocess.Popen([ms, "train", *tiny, "--set", "train.epochs=100000", "--run", run],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while time.time() - t0 < 60 and not ckpts(run) and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        m = re.search(r"stopped by signal (\d+) at step (\d+) \((\w+)\)", err)
        check(f"{sig.name}: checkpoint, stop, exit 75, said so",
              p.returncode == 75 and m and int(m.group(1)) == sig and m.group(3) == sig.name
              and f"ckpt-{int(m.group(2)):08d}.h5" in ckpts(run),
              f"exit {p.returncode}: {err[-400:]}")
    r = sh([ms, "train", "--help"])
    check("train --help documents exit status 75", "75" in r.stdout and "--dry-run" in r.stdout)

    # -- 8. temporary files of killed writers -----------------------------------------------
    run = "sig-SIGTERM"
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = host_tag()
    left = {"dead": f".ckpt-00000099.h5.tmp.{me}.{dead.pid}",
            "alive": f".ckpt-00000098.h5.tmp.{me}.{os.getpid()}",
            "other": ".ckpt-00000097.h5.tmp.othernode.12345",
            "old": f".ckpt-00000096.h5.tmp.{dead.pid}",
            "fresh": ".ckpt-00000095.h5.tmp.othernode.12346"}
    for k, name in left.items():
        with open(os.path.join(run, name), "wb") as f:
            f.write(b"half a checkpoint")
        if k in ("other", "old"):
            os.utime(os.path.join(run, name), (time.time() - 7200, time.time() - 7200))
    n = int(ckpts(run)[-1][5:13])
    r = sh([ms, "train", *tiny, "--set", f"train.epochs={n // 6 + 2}", "--run", run, "--resume"])
    there = set(os.listdir(run))
    check("the next run resumes", r.returncode == 0, r.stderr[-300:])
    check("a temporary file of a process of this host that is gone: removed, and said",
          left["dead"] not in there and f"removed {run}/{left['dead']}" in r.stderr, r.stderr)
    check("one of a running process: kept, not reported",
          left["alive"] in there and left["alive"] not in r.stderr)
    check("an old one of another host, and one of an older milscreen: kept and reported",
          left["other"] in there and left["old"] in there and
          re.search(re.escape(left["other"]) + r" looks stale .* on othernode", r.stderr) and
          left["old"] + " looks stale" in r.stderr, r.stderr)
    check("a recent one of another host: kept, not reported (it may be being written)",
          left["fresh"] in there and left["fresh"] not in r.stderr)

    # -- 1. identity by name ---------------------------------------------------------------
    def variant(name, classes=None, channels=None):
        shutil.copy("data/test.h5", name)
        with h5py.File(name, "r+") as f:
            if classes:
                f.attrs["class_names"] = classes
            if channels:
                f.attrs["channel_names"] = channels
        return name
    with h5py.File("data/train.h5", "r") as f:
        classes = [s.decode() for s in f.attrs["class_names"]]
        channels = [s.decode() for s in f.attrs["channel_names"]]
    four = variant("four.h5", classes + ["extra"])
    rev = variant("reversed.h5", classes[::-1])
    chan = variant("channels.h5", channels=channels[::-1])
    for what, sets, bad in (
            ("a 3-class model validating on a 4-class shard", ["--set", f"data.val={four}"],
             four),
            ("validation classes in another order", ["--set", f"data.val={rev}"], rev),
            ("training shards with classes in another order",
             ["--set", f"data.train=data/train.h5 {rev}"], rev),
            ("training shards with other channel names",
             ["--set", f"data.train=data/train.h5 {chan}"], chan)):
        r = sh([ms, "train", *tiny, *sets, "--set", "train.epochs=1", "--run", "names"])
        check(f"{what}: refused naming both files and lists",
              r.returncode == 1 and "differ" in r.stderr and bad in r.stderr and
              "data/train.h5" in r.stderr and r.stderr.count("[") >= 2, r.stderr[-400:])
    check("...and nothing was trained", not ckpts("names"), str(ckpts("names")))

    # -- 5. --resume falls back past a damaged newest checkpoint ---------------------------
    r = sh([ms, "train", *tiny, "--set", "train.epochs=3", "--run", "straight"])
    check("an uninterrupted run", r.returncode == 0, r.stderr[-300:])
    r = sh([ms, "train", *tiny, "--set", "train.epochs=2", "--run", "fb"])
    cks = ckpts("fb")
    check("a run with several checkpoints", r.returncode == 0 and len(cks) >= 3, str(cks))
    newest = os.path.join("fb", cks[-1])
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 3)
    r = sh([ms, "train", *tiny, "--set", "train.epochs=3", "--run", "fb", "--dry-run",
            "--resume"])
    check("--dry-run --resume: says the newest is damaged and which it would resume from",
          r.returncode == 0 and f"{newest} is damaged" in r.stderr and
          f"resuming from fb/{cks[-2]} instead" in r.stdout and "every input checked" in r.stdout,
          r.stdout[-400:] + r.stderr[-400:])
    r = sh([ms, "train", *tiny, "--set", "train.epochs=3", "--run", "fb", "--resume"])
    check("--resume past a truncated newest checkpoint: said, and finishes",
          r.returncode == 0 and f"{newest} is damaged" in r.stderr and
          f"resuming from fb/{cks[-2]} instead" in r.stdout, r.stdout[-300:] + r.stderr[-300:])
    try:
        a = weights(os.path.join("fb", ckpts("fb")[-1]))
        b = weights(os.path.join("straight", ckpts("straight")[-1]))
        same = ckpts("fb")[-1] == ckpts("straight")[-1] and all(np.array_equal(a[k], b[k])
                                                                  for k in b)
    except OSError as e:
        same = False
        print(e)
    check("...ending exactly where the uninterrupted run ends", same)
    # a flipped byte in the newest
    newest = os.path.join("fb", ckpts("fb")[-1])
    with h5py.File(newest, "r") as f:
        off = data_offset(f["weights/conv3/weight"])
    with open(newest, "r+b") as f:
        f.seek(off + 3)
        x = f.read(1)
        f.seek(off + 3)
        f.write(bytes([x[0] ^ 1]))
    r = sh([ms, "train", *tiny, "--set", "train.epochs=4", "--run", "fb", "--resume"])
    check("--resume past a newest checkpoint with a flipped byte: said, naming the dataset",
          r.returncode == 0 and "is damaged" in r.stderr and "weights/conv3/weight" in r.stderr
          and "instead" in r.stdout, r.stderr[-400:])
    # every one damaged
    os.makedirs("alldamaged")
    for c in ckpts("fb")[:2]:
        shutil.copy(os.path.join("fb", c), "alldamaged")
        with open(os.path.join("alldamaged", c), "r+b") as f:
            f.truncate(1000)
    r = sh([ms, "train", *tiny, "--set", "train.epochs=5", "--run", "alldamaged", "--resume"])
    check("--resume with every checkpoint damaged: exit 1, said",
          r.returncode == 1 and "none of the 2 checkpoints" in r.stderr, r.stderr[-300:])
    # a checkpoint of other classes
    os.makedirs("otherclasses")
    c = ckpts("straight")[-1]
    shutil.copy(os.path.join("straight", c), "otherclasses")
    with h5py.File(os.path.join("otherclasses", c), "r+") as f:
        f.attrs["class_names"] = "\n".join(classes[::-1])
    r = sh([ms, "train", *tiny, "--set", "train.epochs=5", "--run", "otherclasses", "--resume"])
    check("--resume from a checkpoint whose classes are not the shards': refused, both lists",
          r.returncode == 1 and "classes differ" in r.stderr and "training shards" in r.stderr,
          r.stderr[-300:])

    # -- 12.3 --dry-run ------------------------------------------------------------------------
    r = sh([ms, "train", *tiny, "--set", "train.epochs=3", "--run", "dry/new", "--dry-run"])
    check("--dry-run: says what would run, exit 0",
          r.returncode == 0 and "every input checked" in r.stdout and
          re.search(r"data +1 training shard\(s\), 12 labelled images: 6 batches of 2", r.stdout)
          and re.search(r"steps +18 \(3 epochs\), 18 still to run", r.stdout)
          and "dry/new (to be made; writable)" in r.stdout,
          r.stdout + r.stderr[-300:])
    check("--dry-run writes nothing (not even the run folder)", not os.path.exists("dry"))
    r = sh([ms, "train", *tiny, "--set", f"data.val={four}", "--run", "dry2", "--dry-run"])
    check("--dry-run refuses a validation shard of other classes", r.returncode == 1 and
          "differ" in r.stderr, r.stderr[-300:])
    r = sh([ms, "train", *tiny, "--set", "data.train=data/train.h5 data/missing.h5", "--run",
            "dry3", "--dry-run"])
    check("--dry-run refuses a missing shard, naming it", r.returncode == 1 and
          "data/missing.h5" in r.stderr, r.stderr[-300:])
    open("afile", "w").close()
    r = sh([ms, "train", *tiny, "--run", "afile/run", "--dry-run"])
    check("--dry-run refuses a run folder that cannot be made", r.returncode == 1 and
          "afile" in r.stderr and "not a folder" in r.stderr, r.stderr[-300:])
    r = sh([ms, "train", *tiny, "--run", "nothing-here", "--dry-run", "--resume"])
    check("--dry-run --resume with no checkpoint: refused", r.returncode != 0 and
          "no checkpoint" in r.stderr, r.stderr[-300:])


if __name__ == "__main__":
    sys.exit(main())
