#!/usr/bin/python3
"""Load with a fault (issue 11 item 10, docs/RELIABILITY.md section 10): 1,000 small images in
20 shards scored by 2 MPI ranks (mpirun, as tests/mpi_e2e.py starts them), one shard corrupt
in the middle of its pixels and one whose class list differs from the checkpoint's: every
other output is complete and identical to a single-rank run, the two bad shards are named, no
temporary file is left, the exit status is 1. Then SIGTERM to one rank while both score:
both stop after their current image (exit 75), and the same command again finishes the job.

usage: score_mpi_load.py MILSCREEN"""
import os
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

MS = sys.argv[1]
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl="self,vader", OMPI_MCA_plm_rsh_agent="false")
for k in [k for k in ENV if k.startswith("SLURM_") or k.startswith("PMIX_")]:
    del ENV[k]  # this test's ranks come from mpirun, even inside a Slurm job
SHARDS, PER = 20, 50
CORRUPT, RENAMED = 7, 13
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what}" + (f"  [{detail}]" if not ok and detail else ""))
    if not ok:
        failures.append(what)
    return ok


def run(args, mpi=False, ok=True):
    r = subprocess.run((MPIRUN if mpi else []) + [MS] + args, capture_output=True, text=True,
                       env=ENV, timeout=300)
    if ok and r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"milscreen {' '.join(args)} failed ({r.returncode})")
    return r


def pool(paths):
    """The images, masks, metadata and cells of several shards, one after the other."""
    P = {"attrs": None, "cells": {}}
    for path in paths:
        with h5py.File(path, "r") as f:
            P["attrs"] = P["attrs"] or dict(f.attrs)
            n0 = P["images"].shape[0] if "images" in P else 0
            for name in ["images", "masks"] + [f"meta/{m}" for m in f["meta"]]:
                P[name] = np.concatenate([P[name], f[name][()]]) if name in P else f[name][()]
            for name in f["cells"]:
                v = f[f"cells/{name}"][()] + (n0 if name == "image_index" else 0)
                P["cells"][name] = np.concatenate([P["cells"][name], v]) \
                    if name in P["cells"] else v
    return P


def split(P, k):
    """Images k*PER .. (k+1)*PER-1 of the pool as a shard of their own (their cells, masks and
    metadata with them), laid out as milscreen writes shards."""
    lo, hi = k * PER, (k + 1) * PER
    path = f"plates/p{k:02d}.h5"
    with h5py.File(path, "w") as g:
        for a, v in P["attrs"].items():
            g.attrs[a] = v
        for name in ("images", "masks"):
            x = P[name][lo:hi]
            g.create_dataset(name, data=x, chunks=(1,) + x.shape[1:], compression="gzip",
                             compression_opts=1, shuffle=True)
        for name in [n for n in P if n.startswith("meta/")]:
            g[name] = P[name][lo:hi]
        im = P["cells"]["image_index"]
        keep = (im >= lo) & (im < hi)
        for name, v in P["cells"].items():
            g[f"cells/{name}"] = v[keep] - lo if name == "image_index" else v[keep]
    return path


def outputs(d):
    """Every dataset of every output in d, by file and dataset name."""
    res = {}
    for n in sorted(os.listdir(d)):
        if n.endswith(".scores.h5"):
            with h5py.File(f"{d}/{n}", "r") as f:
                f.visititems(lambda k, o: res.__setitem__((n, k), o[()])
                             if isinstance(o, h5py.Dataset) else None)
    return res


def temporaries(d):
    return [n for n in os.listdir(d) if ".tmp." in n] if os.path.isdir(d) else []


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
train = plates/p00.h5
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
    t0 = time.time()
    # 3 classes x 4 treatments x 6 replicates x 14 sites = 1,008 fields of 64x64 (in two files)
    run(["synth", "--preset", "tiny", "--out", "data", "--seed", "9", "--size", "64x64",
         "--treatments", "4", "--replicates", "6", "--sites", "14", "--threads", "2"])
    os.makedirs("plates")
    P = pool(["data/train.h5", "data/test.h5"])
    shards = [split(P, k) for k in range(SHARDS)]
    with h5py.File(shards[CORRUPT], "r+") as f:  # a damaged chunk in the middle of the shard
        info = f["images"].id.get_chunk_info_by_coord((30, 0, 0, 0))
    with open(shards[CORRUPT], "r+b") as f:
        f.seek(info.byte_offset + info.size // 3)
        f.write(b"\xa5" * 64)
    with h5py.File(shards[RENAMED], "r+") as f:
        f.attrs["class_names"] = np.array([b"Apoptosis", b"Autophagy", b"Senescence"])
    open("tiny.ini", "w").write(CFG)
    run(["train", "--config", "tiny.ini", "--run", "run", "--threads", "1", "--progress",
         "lines"])
    print(f"(setup {time.time() - t0:.1f} s)")
    sc = ["score", "--checkpoint", "run", "--threads", "1"]

    t0 = time.time()
    one = run(sc + ["--out", "one"] + shards, ok=False)
    t1 = time.time()
    two = run(sc + ["--out", "two"] + shards, mpi=True, ok=False)
    print(f"(1 rank {t1 - t0:.1f} s, 2 ranks {time.time() - t1:.1f} s)")
    bad = {shards[CORRUPT], shards[RENAMED]}
    good = [s for s in shards if s not in bad]
    for name, r, out in (("1 rank", one, "one"), ("2 ranks", two, "two")):
        check(f"{name}: exit status 1, the two bad shards named, the count said",
              r.returncode == 1 and all(s in r.stderr for s in bad) and
              "2 of 20 shards could not be scored" in r.stderr, f"{r.returncode} {r.stderr[-800:]}")
        check(f"{name}: the corrupt shard is refused for its damaged image",
              any(shards[CORRUPT] in l and "image 30" in l and "no output written" in l
                  for l in r.stderr.splitlines()), r.stderr[-800:])
        check(f"{name}: the renamed shard is refused naming both class lists",
              "'Apoptosis'" in r.stderr and "'DNA damage'" in r.stderr, r.stderr[-800:])
        made = sorted(n for n in os.listdir(out) if n.endswith(".scores.h5"))
        check(f"{name}: an output for every good shard and none for the bad ones",
              made == sorted(os.path.basename(s)[:-3] + ".scores.h5" for s in good), str(made))
        check(f"{name}: no temporary file left", not temporaries(out), str(temporaries(out)))
    if two.returncode == 1:
        check("2 ranks: each rank scored shards", "(rank 0)" in two.stdout and
              "(rank 1)" in two.stdout, two.stdout[-500:])
    a, b = outputs("one"), outputs("two")
    complete = all(a.get((os.path.basename(s)[:-3] + ".scores.h5", "mil_prob"),
                         np.zeros(0)).shape == (PER, 3) for s in good)
    with h5py.File(shards[0], "r") as f:
        cells0 = f["cells/image_index"].shape[0]
    complete &= a.get(("p00.scores.h5", "cells/prob"), np.zeros(0)).shape == (cells0, 3)
    complete &= a.get(("p00.scores.h5", "masks"), np.zeros(0)).shape == (PER, 64, 64)
    check("every good output is complete (50 images, masks, every cell)", complete)
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    check("2 ranks write exactly what 1 rank writes", same and len(a) >= 18 * 8,
          f"{len(a)} datasets; differ: {[k for k in a if k in b and not np.array_equal(a[k], b[k])][:5]}")

    # SIGTERM to one rank while both score: both stop after their current image
    p = subprocess.Popen(MPIRUN + [MS] + sc + ["--out", "sig"] + good, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=ENV)
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None and not (
            len([n for n in os.listdir("sig") if n.endswith(".scores.h5")]) >= 2
            if os.path.isdir("sig") else False):
        time.sleep(0.05)
    ps = subprocess.run(["pgrep", "-f", "--", "--out sig"], capture_output=True, text=True)
    pids = sorted(int(x) for x in ps.stdout.split()
                  if open(f"/proc/{x}/cmdline", "rb").read().startswith(MS.encode()))
    check("two rank processes", len(pids) == 2, str(pids))
    if pids:
        os.kill(pids[-1], signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    done = sorted(n for n in os.listdir("sig") if n.endswith(".scores.h5"))
    check("SIGTERM to one rank: both stop (exit 75), each saying so, nothing half-written",
          p.returncode == 75 and out.count("stopped by SIGTERM") >= 2 and
          "at rank" in out and not temporaries("sig") and 2 <= len(done) < len(good),
          f"{p.returncode} {len(done)} {out[-1200:]} {err[-600:]}")
    r = run(sc + ["--out", "sig"] + good, mpi=True)
    check("the same command again skips what is done and scores the rest",
          r.stdout.count("up to date") == len(done) and
          r.stdout.count(" -> ") == len(good) - len(done), r.stdout[-1500:])
    c = outputs("sig")
    check("... the same scores as the uninterrupted run",
          c.keys() == a.keys() and all(np.array_equal(c[k], a[k]) for k in a), str(len(c)))

    # SIGTERM to a rank that is done with its shards and waits for the other: it still stops
    # the other one (rank 0's shards are up to date here, rank 1's are not)
    os.makedirs("idle")
    for i, s in enumerate(good):
        if i % 2 == 0:
            n = os.path.basename(s)[:-3] + ".scores.h5"
            os.link(f"two/{n}", f"idle/{n}")
    p = subprocess.Popen(MPIRUN + [MS] + sc + ["--out", "idle"] + good, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    t0, rank0 = time.time(), None
    while time.time() - t0 < 120 and p.poll() is None and rank0 is None:
        ps = subprocess.run(["pgrep", "-f", "--", "--out idle"], capture_output=True, text=True)
        for x in ps.stdout.split():
            try:
                if (open(f"/proc/{x}/cmdline", "rb").read().startswith(MS.encode()) and
                        b"OMPI_COMM_WORLD_RANK=0" in open(f"/proc/{x}/environ", "rb").read()):
                    rank0 = int(x)
            except OSError:
                pass
        time.sleep(0.05)
    while time.time() - t0 < 120 and p.poll() is None and not (
            len([n for n in os.listdir("idle") if n.endswith(".scores.h5")]) >= len(good) // 2 + 2):
        time.sleep(0.05)  # rank 0 skipped its shards, rank 1 has written two
    if rank0:
        os.kill(rank0, signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    made = len([n for n in os.listdir("idle") if n.endswith(".scores.h5")])
    check("SIGTERM to a rank that has finished stops the other one too (exit 75)",
          rank0 and p.returncode == 75 and "stopped by SIGTERM at rank 0" in out and
          made < len(good) and not temporaries("idle"),
          f"{p.returncode} {made} {out[-800:]} {err[-400:]}")

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
