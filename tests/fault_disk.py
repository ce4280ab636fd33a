#!/usr/bin/python3
"""Failure paths are as safe as success paths (issue 11, item 2): every writer of milscreen on a
full disk and in a read-only folder.

Each writer -- a shard (`synth`, `ingest`), a score output (`score`), a checkpoint and the run
log (`train`) -- writes into a small tmpfs mounted in a private mount namespace. First with no
limit, to learn how much it writes; then with every size from 4 KiB to that in 4 KiB steps, so
that the disk runs out at every point of the write: creating the file, the images, the
metadata, the final flush. Each run must end with exit status 1 and a message that says "no
space left" and names the file; it must not crash (HDF5 used to segfault at exit when a flush
failed) and must leave no temporary file, and whatever file it left under a final name must be
complete. Then on a read-only mount: exit 1, "read-only" and the file named.

Needs root for the mounts (CI runs as root); exits 77 ("skipped") otherwise.
usage: fault_disk.py MILSCREEN ROOT"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
failures = []


def check(name, ok, detail=""):
    if not ok:
        failures.append(name)
        print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
    return ok


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def mount(mnt, opts):
    r = sh(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt])
    if r.returncode:
        raise RuntimeError(f"mount -o {opts}: {r.stderr.strip()}")


def umount(mnt):
    sh(["umount", mnt])


def used_kb(mnt):
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize // 1024


def tree(mnt):
    out = []
    for root, _, files in os.walk(mnt):
        out += [os.path.relpath(os.path.join(root, f), mnt) for f in files]
    return sorted(out)


def complete(path, h5py):
    """A file under a final name must be whole: it opens and carries its format."""
    if path.endswith(".jsonl"):
        return True
    if path.endswith(".digest"):  # score's digest cache: text, three whole lines
        with open(path) as f:
            lines = f.read().split("\n")
        return len(lines) == 4 and lines[0] == "milscreen-digest-cache 1" and len(lines[2]) == 64
    try:
        with h5py.File(path, "r", locking=False) as f:
            return "format" in f.attrs
    except Exception:
        return False


# where in a write the disk ran out, from the message
PHASES = [("create", r"cannot create"), ("pixels", r"cannot write (image|mask) \d+|mask of image"),
          ("metadata", r"\.h5:/\S+|attribute"), ("final flush", r"cannot write \S+\.h5: ")]


def phase(err):
    for name, rx in PHASES:
        if re.search(rx, err):
            return name
    return "other"


def sweep(name, mnt, cmd, outputs, h5py, step=4, want=()):
    """Runs cmd (writing under mnt) on an unlimited tmpfs, then on every size below what it
    needed. outputs: the final names the message may name."""
    mount(mnt, "size=64m")
    r = sh(cmd)
    full = used_kb(mnt)
    made = tree(mnt)
    umount(mnt)
    if not check(f"{name}: runs with room", r.returncode == 0, r.stderr[-500:]):
        return
    seen = {}
    for kb in range(step, full + step, step):
        mount(mnt, f"size={kb}k")
        r = sh(cmd)
        left = tree(mnt)
        bad_tmp = [f for f in left if ".tmp." in f]
        partial = [f for f in left if not complete(os.path.join(mnt, f), h5py)]
        umount(mnt)
        what = f"{name} on {kb} KiB"
        check(f"{what}: no temporary file left", not bad_tmp, str(bad_tmp))
        check(f"{what}: no partial file under a final name", not partial, str(partial))
        if r.returncode == 0:
            # score's digest cache is written only for a shard older than 2 s, so it may be
            # absent from the first run with room and present later: outputs are the rest
            outs = [f for f in left if not f.endswith(".digest")]
            check(f"{what}: success writes everything",
                  outs == [f for f in made if not f.endswith(".digest")], f"{left} vs {made}")
            continue
        err = r.stderr
        named = any(o in err for o in outputs)
        check(f"{what}: exit 1 (not a crash)", r.returncode == 1, f"exit {r.returncode}\n{err[-400:]}")
        check(f"{what}: says 'no space left' and names the file",
              "no space left" in err and named, err[-400:])
        p = phase(err)
        seen[p] = seen.get(p, 0) + 1
    print(f"{name}: {full} KiB with room; the disk ran out during: "
          + ", ".join(f"{k} ({v} sizes)" for k, v in seen.items()), flush=True)
    for p in want:
        check(f"{name}: the sweep ran out of space during {p}", p in seen, str(seen))


def read_only(name, mnt, cmd, outputs):
    mount(mnt, "ro,size=1m")
    r = sh(cmd)
    left = tree(mnt)
    umount(mnt)
    err = r.stderr
    check(f"{name} in a read-only folder: exit 1, says 'read-only', names the file",
          r.returncode == 1 and "read-only" in err.lower() and any(o in err for o in outputs),
          f"exit {r.returncode}: {err[-400:]}")
    check(f"{name} in a read-only folder: nothing written", not left, str(left))


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    ms, root = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if os.geteuid() != 0:
        print("skipped: needs root to mount a small tmpfs")
        return SKIP
    if os.environ.get("MS_FAULT_DISK_NS") != "1":
        # a private mount namespace: the mounts vanish with this process, whatever happens
        env = dict(os.environ, MS_FAULT_DISK_NS="1")
        try:
            r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                                sys.executable, os.path.abspath(__file__), ms, root], env=env)
        except FileNotFoundError:
            print("skipped: unshare (util-linux) is not installed")
            return SKIP
        return r.returncode
    try:
        import h5py
        import numpy as np
        import tifffile
    except ImportError as e:
        print(f"skipped: {e}")
        return SKIP

    tmp = tempfile.mkdtemp(prefix="ms-fault-disk-")
    try:
        mnt = os.path.join(tmp, "mnt")
        os.makedirs(mnt)
        try:
            mount(mnt, "size=1m")
            umount(mnt)
        except RuntimeError as e:
            print(f"skipped: cannot mount a tmpfs here ({e})")
            return SKIP
        data = os.path.join(tmp, "data")
        r = sh([ms, "synth", "--preset", "tiny", "--size", "64x64", "--sites", "1",
                "--treatments", "2", "--replicates", "2", "--out", data, "--threads", "1"])
        if not check("input data", r.returncode == 0, r.stderr):
            return 1
        big = os.path.join(tmp, "big")  # to score: outputs large enough to fill in many places
        r = sh([ms, "synth", "--preset", "tiny", "--size", "128x128", "--sites", "4",
                "--treatments", "2", "--replicates", "2", "--out", big, "--threads", "1"])
        if not check("input data to score", r.returncode == 0, r.stderr):
            return 1
        tiny = ["--config", os.path.join(root, "configs", "paper.ini"),
                "--set", "conv1.filters=4", "--set", "conv2.filters=4", "--set", "conv3.filters=4",
                "--set", "conv4.filters=8", "--set", "conv5.filters=8", "--set", "conv6.filters=8",
                "--set", "net.classes=3", "--set", "train.crop=0", "--set", "train.batch=2",
                "--set", f"data.train={data}/train.h5", "--set", f"data.val={data}/test.h5",
                "--set", "train.epochs=1", "--threads", "1", "--progress", "lines"]
        ck = os.path.join(tmp, "run")
        r = sh([ms, "train", *tiny, "--run", ck])
        if not check("input checkpoint", r.returncode == 0, r.stderr):
            return 1
        ckpt = os.path.join(ck, sorted(f for f in os.listdir(ck) if f.startswith("ckpt-"))[-1])
        # TIFFs and a manifest for ingest
        tifs = os.path.join(tmp, "tifs")
        os.makedirs(tifs)
        rng = np.random.default_rng(7)
        rows = []
        for i in range(8):
            names = []
            for c in ("dna", "actin"):
                p = os.path.join(tifs, f"f{i}_{c}.tif")
                tifffile.imwrite(p, rng.integers(0, 4096, size=(48, 40), dtype=np.uint16))
                names.append(p)
            rows.append(f"img{i},P1,A{i + 1:02d},1,t{i % 2},1,{['ctrl', 'hit'][i % 2]},"
                        + ",".join(names))
        man = os.path.join(tmp, "manifest.csv")
        with open(man, "w") as f:
            f.write("image_id,plate,well,site,treatment,replicate,label,file_dna,file_actin\n"
                    + "\n".join(rows) + "\n")

        out = os.path.join(mnt, "d")
        sweep("synth", mnt, [ms, "synth", "--preset", "tiny", "--size", "48x48", "--sites", "1",
                             "--treatments", "2", "--replicates", "2", "--out", out,
                             "--threads", "1"],
              [f"{out}/train.h5", f"{out}/test.h5"], h5py, want=("pixels", "final flush"))
        sweep("ingest", mnt, [ms, "ingest", "--manifest", man, "--out", f"{mnt}/p1.h5",
                              "--threads", "1"], [f"{mnt}/p1.h5"], h5py,
              want=("pixels", "final flush"))
        sweep("score", mnt, [ms, "score", "--checkpoint", ckpt, "--out", mnt, "--threads", "1",
                             f"{big}/test.h5"], [f"{mnt}/test.scores.h5"], h5py,
              want=("pixels", "metadata"))
        sweep("train (checkpoints, run log)", mnt, [ms, "train", *tiny, "--run", f"{mnt}/run"],
              [f"{mnt}/run/ckpt-", f"{mnt}/run/log.jsonl"], h5py)

        read_only("synth", mnt, [ms, "synth", "--preset", "tiny", "--size", "48x48", "--out",
                                 mnt], [f"{mnt}/train.h5"])
        read_only("ingest", mnt, [ms, "ingest", "--manifest", man, "--out", f"{mnt}/p1.h5"],
                  [f"{mnt}/p1.h5"])
        read_only("score", mnt, [ms, "score", "--checkpoint", ckpt, "--out", mnt,
                                 f"{data}/test.h5"], [f"{mnt}/test.scores.h5"])
        read_only("train", mnt, [ms, "train", *tiny, "--run", mnt], [mnt])
        read_only("train, new run folder", mnt, [ms, "train", *tiny, "--run", f"{mnt}/new"],
                  [f"{mnt}/new"])
    finally:
        for _ in range(3):
            if sh(["umount", os.path.join(tmp, "mnt")]).returncode:
                break
        shutil.rmtree(tmp, ignore_errors=True)
    print("fault_disk: " + ("FAILED: " + "; ".join(failures[:20]) if failures else "all checks passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
