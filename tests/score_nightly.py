#!/usr/bin/python3
"""Nightly re-scoring is O(files) (issue 14 item 3): score caches each shard's digest beside
its output, keyed by the shard's size, modification and change times, inode and device, and a
later run skips an unchanged shard without reading it; any change to pixels, labels or
metadata is still found, a rewrite in place that keeps the size and the modification time
included, and so is a file renamed over the shard; a freshly written shard is not cached until
its times can tell a later change apart; a damaged cache costs a read, never a wrong skip;
--verify reads every shard.

usage: score_nightly.py MILSCREEN"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

MS = sys.argv[1]
RACY = 2.1  # score.c caches a key only once the shard's times are 2 s old
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


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def status(out, name):
    """What the run said about plates/NAME: 'cached' (skipped unread), 'hashed' (skipped after
    reading it), 'scored', or the line."""
    for line in out.splitlines():
        if f"{name}.scores.h5: up to date" in line:
            return "cached" if "unchanged since it was hashed" in line else "hashed"
        if f"plates/{name}.h5 ->" in line:
            return "scored"
    return "?"


def keep_times(path, st):
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


CFG = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "score_checks.py")).read()
CFG = CFG[CFG.index('CFG = """') + 9:]
CFG = CFG[:CFG.index('"""')]

with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    run("synth", "--preset", "tiny", "--out", "data", "--seed", "3")
    open("tiny.ini", "w").write(CFG)
    run("train", "--config", "tiny.ini", "--run", "run", "--threads", "1", "--progress", "lines")
    os.makedirs("plates")
    names = ["label", "pixels", "meta", "renamed", "same"]
    for n in names:
        shutil.copy("data/test.h5", f"plates/{n}.h5")
    fresh = "plates/fresh.h5"
    sc = ["score", "--threads", "1", "--checkpoint", "run", "--out", "s",
          "--set", "score.cells=false"]
    shards = [f"plates/{n}.h5" for n in names]
    time.sleep(RACY)
    shutil.copy("data/train.h5", fresh)
    run(*sc, fresh)  # at once: its times are well under 2 s old when score reads them
    run(*sc, *shards)
    check("the digest cache is written beside each output",
          all(os.path.exists(f"s/.{n}.scores.h5.digest") for n in names))
    check("... but not for a shard changed less than 2 s before",
          not os.path.exists("s/.fresh.scores.h5.digest"))
    with h5py.File("s/label.scores.h5", "r") as f:
        check("the output records the shard's SHA-256",
              f.attrs["source_digest"].decode() == sha("plates/label.h5"))
    mtimes = {n: os.stat(f"s/{n}.scores.h5").st_mtime_ns for n in names}
    r = run(*sc, *shards, fresh)
    check("a second run skips every unchanged shard without reading it",
          all(status(r.stdout, n) == "cached" for n in names), r.stdout)
    check("... the fresh one after reading it", status(r.stdout, "fresh") == "hashed", r.stdout)
    check("... and leaves the outputs alone",
          all(os.stat(f"s/{n}.scores.h5").st_mtime_ns == mtimes[n] for n in names))

    # changes that keep the size and the modification time: only the change time moves
    p = "plates/label.h5"
    st = os.stat(p)
    with h5py.File(p, "r+") as f:
        lab = f["meta/label"][()]
        f["meta/label"][0] = (lab[0] + 1) % 3
    keep_times(p, st)
    check("a label rewritten in place keeps the shard's size and modification time",
          os.stat(p).st_size == st.st_size and os.stat(p).st_mtime_ns == st.st_mtime_ns)
    p = "plates/pixels.h5"
    st = os.stat(p)
    with h5py.File(p, "r+") as f:
        img = f["images"][3]
        img[0, 10, 10] ^= 1
        f["images"][3] = img
    keep_times(p, st)
    p = "plates/meta.h5"
    st = os.stat(p)
    with h5py.File(p, "r+") as f:
        f.attrs["channel_names"] = f.attrs["channel_names"]  # rewritten, same bytes
        w = f["meta/well"][()]
        w[0] = b"Z99"
        f["meta/well"][...] = w
    keep_times(p, st)
    # a new file of the same size and times renamed over the shard: a new inode
    p = "plates/renamed.h5"
    st = os.stat(p)
    shutil.copy(p, "tmp.h5")
    with h5py.File("tmp.h5", "r+") as f:
        t = f["meta/treatment"][()]
        t[0] = b"other@1"
        f["meta/treatment"][...] = t
    keep_times("tmp.h5", st)
    os.rename("tmp.h5", p)
    # the same bytes again under a new inode: read, found unchanged, skipped
    shutil.copy("data/test.h5", "tmp.h5")
    os.rename("tmp.h5", "plates/same.h5")
    r = run(*sc, *shards, fresh)
    got = {n: status(r.stdout, n) for n in names}
    check("labels, pixels, metadata and a replaced file are each found changed and rescored",
          all(got[n] == "scored" for n in ("label", "pixels", "meta", "renamed")), str(got))
    check("a copy of the same bytes is read and skipped", got["same"] == "hashed", str(got))
    ok = True
    for n in names:
        with h5py.File(f"s/{n}.scores.h5", "r") as f:
            ok &= f.attrs["source_digest"].decode() == sha(f"plates/{n}.h5")
    check("every output records its shard's digest as it is now", ok)
    with h5py.File("s/pixels.scores.h5", "r") as f, h5py.File("s/same.scores.h5", "r") as g:
        check("the changed pixels changed the scores (the test has power)",
              not np.array_equal(f["maps"][3], g["maps"][3]))

    # a damaged cache (a wrong digest under the right key) costs a read, not a wrong result
    c = "s/.same.scores.h5.digest"
    time.sleep(RACY)
    run(*sc, *shards)  # caches the shards changed above
    lines = open(c).read().split("\n")
    bad = "0" * 64
    open(c, "w").write("\n".join(lines[:2] + [bad, ""]))
    r = run(*sc, "plates/same.h5")
    check("a cache whose digest is not the output's makes score read the shard",
          status(r.stdout, "same") == "hashed" and bad not in open(c).read(), r.stdout)
    r = run(*sc, "--verify", *shards)
    check("--verify reads every shard", all(status(r.stdout, n) == "hashed" for n in names),
          r.stdout)
    open(c, "w").write("garbage\n")
    r = run(*sc, "plates/same.h5")
    check("an unreadable cache is read past", status(r.stdout, "same") == "hashed", r.stdout)

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
