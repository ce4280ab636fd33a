#!/usr/bin/python3
"""Ranks under Open MPI's mpirun on this machine (DESIGN §4): two ranks with batches of 2 train
like one rank with batch 4 (dropout on; the gradients through the all-reduce interface, which
the start-up table names), also when resumed on another number of ranks; a
signal to one rank stops both after the same step with a checkpoint, and --resume continues;
score deals three shards to two ranks, writes what one rank writes, and a bad shard fails
alone; Slurm tasks started without MPI are refused."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

MS = sys.argv[1]
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl="self,vader", OMPI_MCA_plm_rsh_agent="false")
for k in [k for k in ENV if k.startswith("SLURM_") or k.startswith("PMIX_")]:
    del ENV[k]  # this test's ranks come from mpirun, even inside a Slurm job
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what} {detail}")
    if not ok:
        failures.append(what)


def run(args, ranks=0, ok=True, env=None):
    cmd = (MPIRUN + ["-np", str(ranks)] if ranks else []) + [MS] + args
    r = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=600)
    if ok and r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"{' '.join(cmd)} failed")
    return r


def weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f["weights"].visititems(
            lambda n, d: out.__setitem__(n, d[()]) if isinstance(d, h5py.Dataset) else None)
    return out


def newest(run_dir):
    c = sorted(p for p in os.listdir(run_dir) if p.startswith("ckpt-"))
    return os.path.join(run_dir, c[-1])


def rel(a, b):
    """Largest relative difference over all parameter tensors."""
    return max(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30) for k in b)


with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    run(["synth", "--preset", "tiny", "--out", "data", "--seed", "3"])
    cfg = ("[net]\nchannels = 3\nclasses = 3\n[train]\nbatch = 4\nepochs = 2\ncrop = 48\n"
           "checkpoint_every = 2\nkeep = 2\nseed = 5\nloader_threads = 1\n"
           "[data]\ntrain = data/train.h5\nval = data/test.h5\n"
           "[c1]\ntype = conv\nfilters = 16\nsize = 3\n"
           "[p1]\ntype = maxpool\nsize = 3\nstride = 2\n"
           "[d1]\ntype = dropout\nrate = 0.5\n"
           "[c2]\ntype = conv\nfilters = 24\nsize = 3\n"
           "[c3]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
           "[mil]\ntype = mil\npool = noisy_and\na = 10\n"
           "[fc]\ntype = fc\nhead = softmax\n")
    open("tiny.ini", "w").write(cfg)
    tr = ["train", "--config", "tiny.ini", "--threads", "1", "--progress", "lines"]

    # one rank with batch 4 against two ranks with batches of 2, the gradients averaged by the
    # all-reduce interface (pipeline/dist/allreduce.h), which says which one it uses
    r1 = run(tr + ["--run", "one"])
    r = run(tr + ["--run", "two"], ranks=2)
    check("rank 0 alone prints the header", r.stdout.count("milscreen train:") == 2 and
          "ranks    2" in r.stdout, r.stdout[:400])
    check("the start-up table names the all-reduce: none for one rank, MPI_Allreduce for two "
          "CPU ranks", "  allreduce none (one rank)" in r1.stdout and
          "  allreduce MPI_Allreduce over 2 ranks in host memory" in r.stdout,
          r1.stdout[:500] + r.stdout[:500])
    w1, w2 = weights(newest("one")), weights(newest("two"))
    check("same checkpoints", sorted(os.listdir("one")) == sorted(os.listdir("two")),
          f"{sorted(os.listdir('one'))} {sorted(os.listdir('two'))}")
    e = rel(w2, w1)
    check("2 ranks x batch 2 = 1 rank x batch 4 (up to summation order)", e < 1e-4, f"{e:.2e}")
    run(tr + ["--run", "other", "--set", "train.seed=6"])
    e_other = rel(weights(newest("other")), w1)
    check("another seed is far apart (the comparison has power)", e_other > 1e-2,
          f"{e_other:.2e}")
    # validation is split across ranks and summed: the same accuracies as one rank
    val = lambda path: [l for l in open(path) if '"validation"' in l]
    v1 = [l.split('"accuracy_mil"')[1][:12] for l in val("one/log.jsonl")]
    v2 = [l.split('"accuracy_mil"')[1][:12] for l in val("two/log.jsonl")]
    check("validation counted over both ranks", len(v1) == 2 and v1 == v2, f"{v1} {v2}")

    # a job requeued on another number of nodes: one epoch on 2 ranks, the rest on 1
    run(tr + ["--run", "mixed", "--set", "train.epochs=1"], ranks=2)
    run(tr + ["--run", "mixed", "--resume"])
    e = rel(weights(newest("mixed")), w1)
    check("resuming on another number of ranks follows the same run", e < 1e-4, f"{e:.2e}")

    r = run(tr + ["--run", "odd"], ranks=3, ok=False)
    check("a batch that does not divide among the ranks is refused",
          r.returncode != 0 and "does not divide among 3 ranks" in r.stderr, r.stderr[-300:])

    # SIGUSR1 to rank 1 only: both ranks stop after the same step, rank 0 checkpoints
    p = subprocess.Popen(MPIRUN + ["-np", "2", MS] + tr + ["--run", "sig", "--set",
                         "train.epochs=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV)
    t0 = time.time()
    pids = []
    while time.time() - t0 < 120 and not (os.path.isdir("sig") and any(
            n.startswith("ckpt-") for n in os.listdir("sig"))):
        time.sleep(0.2)
    ps = subprocess.run(["pgrep", "-f", "--", "--run sig"], capture_output=True, text=True)
    pids = sorted(int(x) for x in ps.stdout.split()
                  if open(f"/proc/{x}/cmdline", "rb").read().startswith(MS.encode()))
    check("two rank processes", len(pids) == 2, str(pids))
    if pids:
        os.kill(pids[-1], signal.SIGUSR1)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    check("a signal to one rank stops the job cleanly, exit 75 (stopped, resumable)",
          p.returncode == 75 and "stopped by signal" in err, out[-300:] + err[-300:])
    stop_step = int(os.path.basename(newest("sig"))[5:13])
    check("stopped mid-run with a checkpoint", 2 <= stop_step < 200 * 4, str(stop_step))
    epochs = stop_step // 4 + 2  # 4 steps per epoch
    r = run(tr + ["--run", "sig", "--resume", "--set", f"train.epochs={epochs}"], ranks=2)
    check("--resume under 2 ranks finishes", "(resumed)" in r.stdout and
          os.path.basename(newest("sig")) == f"ckpt-{epochs * 4:08d}.h5",
          os.path.basename(newest("sig")))

    # score: three shards dealt to two ranks, the same outputs as one rank
    shards = []
    for s in (4, 5, 6):
        run(["synth", "--preset", "tiny", "--out", f"p{s}", "--seed", str(s)])
        os.rename(f"p{s}/test.h5", f"p{s}/plate{s}.h5")
        shards.append(f"p{s}/plate{s}.h5")
    ck = newest("one")
    sc = ["score", "--checkpoint", ck, "--threads", "1"]
    run(sc + ["--out", "s1"] + shards)
    r = run(sc + ["--out", "s2"] + shards, ranks=2)
    check("each shard scored by one rank",
          r.stdout.count("(rank 0)") == 2 and r.stdout.count("(rank 1)") == 1, r.stdout)
    same = True
    for s in (4, 5, 6):
        with h5py.File(f"s1/plate{s}.scores.h5") as a, h5py.File(f"s2/plate{s}.scores.h5") as b:
            for k in ("mil_prob", "fc_prob", "pred", "maps", "masks"):
                same &= np.array_equal(a[k][()], b[k][()])
    check("2 ranks write what 1 rank writes", same)

    # a bad shard fails alone: the other shards are still scored, exit status 1
    open("p5/bad.h5", "wb").write(b"not an HDF5 file")
    r = run(sc + ["--out", "s3", shards[0], "p5/bad.h5", shards[2]], ranks=2, ok=False)
    check("a bad shard is reported and the others are scored",
          r.returncode == 1 and "p5/bad.h5" in r.stderr and "1 of 3 shards" in r.stderr and
          os.path.exists("s3/plate4.scores.h5") and os.path.exists("s3/plate6.scores.h5"),
          r.stderr[-400:])

    # Slurm tasks without an MPI launch would each train alone
    env = dict(ENV, SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="0")
    r = run(tr + ["--run", "nompi"], env=env, ok=False)
    check("srun without --mpi is refused", r.returncode != 0 and "--mpi=pmix" in r.stderr,
          r.stderr[-300:])

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
