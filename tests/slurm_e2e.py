#!/usr/bin/python3
"""The sbatch scripts of slurm/ on a real Slurm: a private single-node cluster on loopback.

Starts its own munged (fresh key), slurmctld -D and slurmd -D from a generated slurm.conf in
a temporary folder (free ports, its own state, spool and logs), waits for the node to be
idle, then checks, on tiny synthetic plates and a shrunken network:
  1. slurm/pipeline.sh --synth: data -> train -> score jobs chained with afterok all
     complete in order; the run has a checkpoint; the score output opens and names it;
  2. train.sbatch: SIGUSR1 to the batch shell (what --signal=B:USR1@N sends before the time
     limit) -> milscreen checkpoints, the job requeues itself, the requeued run resumes
     (--resume, the step count continues) and finishes;
  3. train.sbatch with GRID as a 2-task array: two run folders whose checkpoints hold different configs;
  4. score.sbatch with NIGHTLY: the job resubmits itself; the second run skips the shard
     the first scored and scores the one added in between;
  5. the real time limit: #SBATCH --signal reaches the batch shell, checkpoint, requeue;
  6. an installed tree (cmake --install of the build MILSCREEN is in): the installed
     train.sbatch, submitted with no MILSCREEN and no milscreen on PATH, runs the installed
     binary.
Everything is torn down at the end, also on failure: jobs cancelled, daemons stopped, and
any process left that carries this cluster's SLURM_CONF killed by its pid.

Needs root (slurmd runs jobs as their users). Not root: exits 77 ("skipped"), unless
MILSCREEN_SLURM_TEST=existing, which runs the checks on the Slurm that SLURM_CONF (or the
default config) names, with 1-CPU jobs in its default partition.

usage: slurm_e2e.py MILSCREEN ROOT [--keep]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
# milscreen train's words when a signal stopped it ("stopped by signal 10 at step 14; ...")
STOPPED = r"milscreen train: stopped by signal(?: \d+)? at step (\d+)"
T0 = time.time()
failures = []


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def check(name, ok, detail=""):
    log(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)
    return ok


class Cluster:
    def __init__(self, tmp, env):
        self.tmp, self.env, self.procs = tmp, env, []
        self.conf = None

    # -- bring-up -------------------------------------------------------------------------
    def start(self):
        t = self.tmp
        for d in ("state", "spool", "log", "munge"):
            os.makedirs(os.path.join(t, d), exist_ok=True)
        os.chmod(os.path.join(t, "munge"), 0o700)
        key = os.path.join(t, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        sock = os.path.join(t, "munge", "munge.sock")
        self.procs.append(("munged", subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={t}/munge/munged.pid", f"--log-file={t}/log/munged.log",
             f"--seed-file={t}/munge/seed"],
            stdout=subprocess.DEVNULL, stderr=open(f"{t}/log/munged.err", "w"))))
        if not wait_for(lambda: os.path.exists(sock), 15):
            raise RuntimeError("munged did not create its socket:\n" + tail(f"{t}/log/munged.err")
                               + tail(f"{t}/log/munged.log"))

        hw = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
        node = dict(re.findall(r"(\w+)=(\S+)", hw.splitlines()[0])) if hw else {}
        cpus = node.get("CPUs", str(os.cpu_count()))
        topo = " ".join(f"{k}={node[k]}" for k in ("Boards", "SocketsPerBoard", "CoresPerSocket",
                                                    "ThreadsPerCore") if k in node)
        mem = int(int(node.get("RealMemory", "2048")) * 0.9)
        p1, p2 = free_port(), free_port()
        while p2 == p1:
            p2 = free_port()
        self.conf = os.path.join(t, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write(f"""# private test cluster of tests/slurm_e2e.py
ClusterName=mstest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={p1}
SlurmdPort={p2}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={sock},cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={t}/state
SlurmdSpoolDir={t}/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/slurmd.pid
SlurmctldLogFile={t}/log/slurmctld.log
SlurmdLogFile={t}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
MinJobAge=600
NodeName=msnode NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={cpus} {topo} RealMemory={mem} State=UNKNOWN
PartitionName=test Nodes=msnode Default=YES MaxTime=INFINITE State=UP
""")
        self.env["SLURM_CONF"] = self.conf
        for name, cmd in (("slurmctld", ["slurmctld", "-D", "-i"]),
                          ("slurmd", ["slurmd", "-D", "-N", "msnode"])):
            self.procs.append((name, subprocess.Popen(
                cmd, env=self.env, stdout=subprocess.DEVNULL,
                stderr=open(f"{t}/log/{name}.err", "w"))))
        ok = wait_for(lambda: self.sh(["sinfo", "-h", "-N", "-o", "%T"]).strip() == "idle", 60)
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}):\n" +
                                   tail(f"{t}/log/{name}.err") + tail(f"{t}/log/{name}.log"))
        if not ok:
            raise RuntimeError("the node did not become idle in 60 s:\n" +
                               self.sh(["sinfo", "-N", "-l"]) + tail(f"{t}/log/slurmd.log"))

    def sh(self, cmd, check_rc=False, **kw):
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, **kw)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout

    # -- teardown -------------------------------------------------------------------------
    def stop(self):
        if self.conf:
            ids = self.sh(["squeue", "-h", "-o", "%A"]).split()
            if ids:
                self.sh(["scancel"] + ids)
                wait_for(lambda: not self.sh(["squeue", "-h", "-o", "%A"]).split(), 15)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # slurmstepd and job processes detach from slurmd: kill, by pid, whatever still carries
        # this cluster's SLURM_CONF (only processes this test started have it)
        if self.conf:
            mark = f"SLURM_CONF={self.conf}".encode()
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if mark in f.read().split(b"\0"):
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


def wait_for(cond, timeout, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return True
        except Exception:
            pass
        time.sleep(every)
    return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return f"--- {path}\n" + "".join(f.readlines()[-n:])
    except OSError:
        return ""


# -- jobs ---------------------------------------------------------------------------------
class Jobs:
    def __init__(self, cl, work):
        self.cl, self.work = cl, work

    def submit(self, args, cwd=None):
        out = self.cl.sh(["sbatch", "--parsable"] + args, check_rc=True, cwd=cwd or self.work)
        return out.strip().split(";")[0]

    def info(self, jid):
        """scontrol's fields for a job (for an array: a list, one per task)"""
        out = self.cl.sh(["scontrol", "show", "job", "-o", str(jid)])
        recs = [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in out.splitlines() if line]
        return recs

    def state(self, jid):
        recs = self.info(jid)
        return [r.get("JobState", "?") for r in recs] or ["GONE"]

    def wait(self, jids, timeout, what):
        done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED")
        end = time.time() + timeout
        states = {}
        while time.time() < end:
            states = {j: self.state(j) for j in jids}
            if all(all(s in done for s in st) for st in states.values()):
                break
            time.sleep(0.3)
        ok = all(all(s == "COMPLETED" for s in st) for st in states.values())
        if not check(f"{what}: jobs {' '.join(map(str, jids))} completed", ok, str(states)):
            self.dump()
        return ok

    def dump(self):
        log(self.cl.sh(["squeue", "-a", "-o", "%.8i %.20j %.10T %.20r %S"]))
        for root, _, files in os.walk(self.work):
            for f in files:
                if f.endswith(".out"):
                    print(tail(os.path.join(root, f), 40))
        print(tail(os.path.join(self.cl.tmp, "log", "slurmctld.log"), 20))


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def checkpoints(run):
    return sorted(f for f in os.listdir(run) if re.fullmatch(r"ckpt-\d+\.h5", f)) \
        if os.path.isdir(run) else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("milscreen")
    ap.add_argument("root")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    ms = os.path.abspath(a.milscreen)
    root = os.path.abspath(a.root)
    slurm = os.path.join(root, "slurm")

    existing = os.environ.get("MILSCREEN_SLURM_TEST") == "existing"
    need = ["sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun"]
    if not existing:
        need += ["slurmctld", "slurmd", "munged"]
    missing = [b for b in need if not shutil.which(b, path=os.environ.get("PATH", "") +
                                                     ":/usr/sbin:/sbin")]
    if missing:
        print(f"skipped: {' '.join(missing)} not installed (tools/setup-deps --test installs Slurm)")
        return SKIP
    if not existing and os.geteuid() != 0:
        print("skipped: needs root to start a private Slurm "
              "(or MILSCREEN_SLURM_TEST=existing to use the Slurm SLURM_CONF names)")
        return SKIP
    try:
        import h5py
        import numpy as np
    except ImportError as e:
        print(f"skipped: {e} (python3-h5py)")
        return SKIP

    tmp = tempfile.mkdtemp(prefix="ms-slurm-")
    os.chmod(tmp, 0o755)
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    env["MILSCREEN"] = ms
    env.pop("SLURM_JOB_ID", None)
    cl = Cluster(tmp, env)
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    try:
        if existing:
            cl.conf = None
            log("using the existing Slurm: " + cl.sh(["sinfo", "-h", "-o", "%P %a %D %T"]).strip())
        else:
            cl.start()
            log(f"private Slurm up: {cl.conf} (" + cl.sh(["sinfo", "-h", "-o", "%P %D %T %c cpus"]).strip() + ")")
        run_checks(cl, Jobs(cl, work), ms, root, slurm, work, h5py, np, existing)
    except Exception as e:  # a broken bring-up or helper: report, tear down, fail
        check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        cl.stop()
        if a.keep or failures:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{'FAILED: ' + ', '.join(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


# a network small enough to train in a blink on one core: every conv 4 to 8 filters
TINY = ["--set", "conv1.filters=4", "--set", "conv2.filters=4", "--set", "conv3.filters=4",
        "--set", "conv4.filters=8", "--set", "conv5.filters=8", "--set", "conv6.filters=8",
        "--set", "net.classes=3", "--set", "train.crop=0", "--set", "train.batch=2"]
SB = ["--cpus-per-task=1", "--time=10"]
# train.sbatch's own #SBATCH --signal=B:USR1@600 fires at once under a 10-minute limit (and a
# signal that reaches milscreen before it has started ends it): train jobs get 30 minutes
TRAIN_SB = SB + ["--time=30"]


def run_checks(cl, jobs, ms, root, slurm, work, h5py, np, existing):
    paper = os.path.join(root, "configs", "paper.ini")
    scale = 5 if existing else 1

    # data for checks 2-4, made here (check 1 makes its own with a job)
    def synth(out, *extra):
        subprocess.run([ms, "synth", "--preset", "tiny", "--out", out, "--threads", "1",
                        "--treatments", "2", "--replicates", "2", *extra],
                       check=True, capture_output=True, cwd=work)
    synth("d128", "--sites", "2")                  # 12 images of 128x128: 6 steps per epoch
    synth("d96", "--sites", "1", "--size", "96x96")  # 6 images of 96x96
    data = ["--set", f"data.train={work}/d96/train.h5", "--set", f"data.val={work}/d96/test.h5"]

    # -- 1. the chained pipeline ------------------------------------------------------------
    r = subprocess.run([os.path.join(slurm, "pipeline.sh"), "--work", f"{work}/pipe", "--synth",
                        "--synth-args", "--size 96x96 --treatments 2 --replicates 2 --sites 1 --threads 1",
                        *TINY, "--set", "train.epochs=2", "--sbatch", " ".join(TRAIN_SB)],
                       env=cl.env, capture_output=True, text=True, cwd=work)
    m = re.search(r"^jobs: (\d+) (\d+) (\d+)$", r.stdout, re.M)
    check("pipeline.sh submits three jobs and prints their ids", r.returncode == 0 and m,
          r.stdout + r.stderr)
    pipe_ids = list(m.groups()) if m else []

    # -- 5. the real time limit: train.sbatch's own #SBATCH --signal=B:USR1@N ----------------
    # Slurm checks time limits every 30 s or so and may signal up to a minute early: with a
    # 2 minute limit and @45, SIGUSR1 comes 45 to 75 s after the start. Training is endless.
    tl = jobs.submit(SB[:1] + ["--time=2", "--signal=B:USR1@45", "--job-name=timelimit",
                               f"--output={work}/tl-%j.out", os.path.join(slurm, "train.sbatch"),
                               paper, f"{work}/tlrun", *TINY, *data,
                               "--set", "train.epochs=1000000"])
    tl_out = f"{work}/tl-{tl}.out"

    # -- 2. signal, checkpoint, requeue, resume ---------------------------------------------
    epochs = 100  # 600 steps: seconds on one core, long enough to be signalled mid-run
    tr = jobs.submit(TRAIN_SB + ["--job-name=sig", f"--output={work}/sig-%j.out",
                           os.path.join(slurm, "train.sbatch"), paper, f"{work}/sigrun", *TINY,
                           "--set", f"train.epochs={epochs}", "--set", f"data.train={work}/d128/train.h5",
                           "--set", f"data.val={work}/d128/test.h5"])
    sig_out = f"{work}/sig-{tr}.out"

    # -- 3. grid as a job array --------------------------------------------------------------
    with open(f"{work}/grid.txt", "w") as f:
        f.write("# lr and conv6 width\n\ntrain.lr=0.001 conv6.filters=8\n"
                "--set train.lr=0.0005 --set conv6.filters=12\n")
    gr = jobs.submit(TRAIN_SB + ["--array=1-2", f"--output={work}/grid-%A_%a.out",
                           "--export=ALL,GRID=grid.txt",
                           os.path.join(slurm, "train.sbatch"), paper, "grid",
                           *TINY, *data, "--set", "train.epochs=1"])

    # -- 4. nightly score: a checkpoint made directly, then two runs of score.sbatch --------
    subprocess.run([ms, "train", "--config", paper, "--run", "ckrun", "--threads", "1",
                    *TINY, *data, "--set", "train.epochs=1"], check=True, capture_output=True,
                   cwd=work)
    os.makedirs(f"{work}/plates")
    shutil.copy(f"{work}/d96/test.h5", f"{work}/plates/a.h5")
    os.makedirs(f"{work}/slogs")
    senv = dict(cl.env, NIGHTLY="02:00")
    sc1 = subprocess.run(["sbatch", "--parsable", *SB, "--job-name=nightly",
                          f"--output={work}/slogs/%x-%j.out", os.path.join(slurm, "score.sbatch"),
                          "ckrun", "scores", "plates/"], env=senv, capture_output=True, text=True,
                         cwd=work)
    check("score.sbatch submitted", sc1.returncode == 0, sc1.stderr)
    sc1 = sc1.stdout.strip().split(";")[0]

    # -- 2, continued: signal the batch shell once the first checkpoint is there -------------
    sig_run = f"{work}/sigrun"
    got = wait_for(lambda: checkpoints(sig_run), 90 * scale, 0.05)
    if check("train job wrote a first checkpoint", got, str(jobs.state(tr))):
        cl.sh(["scancel", "--batch", "--signal=USR1", tr])
        log(f"sent SIGUSR1 to the batch shell of job {tr}")
        stopped = wait_for(lambda: "requeueing job" in read(sig_out), 60 * scale)
        out = read(sig_out) if os.path.exists(sig_out) else ""
        m = re.search(STOPPED, out)
        check("SIGUSR1 -> milscreen checkpointed and stopped, the job requeued itself",
              stopped and m, out[-1500:])
        stop_step = int(m.group(1)) if m else -1
        check("stopped mid-run with a checkpoint of that step",
              0 < stop_step < epochs * 6 and f"ckpt-{stop_step:08d}.h5" in checkpoints(sig_run),
              f"step {stop_step}, {checkpoints(sig_run)}")
        requeued = wait_for(lambda: any(r.get("Restarts") == "1" for r in jobs.info(tr)), 30)
        check("job shows Restarts=1", requeued, str(jobs.info(tr)))
    else:
        stop_step = None
    # -- 1, continued ------------------------------------------------------------------------
    if pipe_ids and jobs.wait(pipe_ids, 180 * scale, "pipeline data -> train -> score"):
        recs = [jobs.info(j)[0] for j in pipe_ids]
        order = all(recs[i + 1]["StartTime"] >= recs[i]["EndTime"] for i in range(2))
        check("pipeline jobs ran one after the other", order,
              str([(r["JobName"], r["StartTime"], r["EndTime"]) for r in recs]))
        cks = checkpoints(f"{work}/pipe/run")
        check("pipeline: the run folder has a checkpoint", bool(cks), str(cks))
        sf = f"{work}/pipe/scores/test.scores.h5"
        ok = os.path.exists(sf)
        if check("pipeline: score output exists", ok, str(os.listdir(f"{work}/pipe"))) and cks:
            with h5py.File(sf, "r") as f, h5py.File(f"{work}/pipe/run/{cks[-1]}", "r") as c:
                p = f["mil_prob"][()]
                check("pipeline: score output opens, mil_prob [6, 3] in [0, 1]",
                      p.shape == (6, 3) and np.all((p >= 0) & (p <= 1)), str(p.shape))
                check("pipeline: scored with the final checkpoint",
                      f.attrs["checkpoint_digest"] == c.attrs["digest"],
                      f"{f.attrs['checkpoint_digest']!r} vs {cks[-1]}: {c.attrs['digest']!r}")

    # -- 3, continued ------------------------------------------------------------------------
    if jobs.wait([gr], 120 * scale, "grid array"):
        cfgs, widths = [], []
        for i in (1, 2):
            run = f"{work}/grid/run-{i}"
            cks = checkpoints(run)
            if not check(f"grid task {i}: {run} has a checkpoint", bool(cks), str(cks)):
                continue
            with h5py.File(f"{run}/{cks[-1]}", "r") as f:
                cfg = f.attrs["config"]
                cfgs.append(cfg.decode() if isinstance(cfg, bytes) else str(cfg))
                widths.append(f["weights/conv6/weight"].shape[0])
        if len(cfgs) == 2:
            lrs = [re.search(r"\[train\][^\[]*?\nlr = (\S+)", c) for c in cfgs]
            check("grid: the two checkpoints carry their own entry's config",
                  all(lrs) and [float(m.group(1)) for m in lrs] == [0.001, 0.0005]
                  and widths == [8, 12], f"lr {[m and m.group(1) for m in lrs]}, conv6 {widths}")
            check("grid: each run folder records its entry",
                  "train.lr=0.0005" in read(f"{work}/grid/run-2/grid-entry.txt"))

    # -- 4, continued: run 1, a new plate, then "tomorrow 02:00" brought forward to now ------
    if jobs.wait([sc1], 120 * scale, "score run 1"):
        first = f"{work}/scores/a.scores.h5"
        check("score run 1 wrote a.scores.h5", os.path.exists(first))
        mtime = os.stat(first).st_mtime_ns if os.path.exists(first) else 0
        out1 = read(f"{work}/slogs/nightly-{sc1}.out")
        m = re.search(r"nightly: next run is job (\d+)", out1)
        if check("score run 1 queued the next night's run", m, out1[-800:]):
            sc2 = m.group(1)
            rec = jobs.info(sc2)[0]
            tomorrow = time.strftime("%Y-%m-%dT02:00:00", time.localtime(time.time() + 86400))
            check("the next run is pending until tomorrow 02:00, same job name and options",
                  rec.get("JobName") == "nightly" and rec.get("JobState") == "PENDING"
                  and rec.get("StartTime") == tomorrow and rec.get("TimeLimit") == "00:10:00"
                  and rec.get("StdOut") == f"{work}/slogs/nightly-{sc2}.out",
                  str(rec)[:900])
            shutil.copy(f"{work}/d128/test.h5", f"{work}/plates/b.tmp")
            os.rename(f"{work}/plates/b.tmp", f"{work}/plates/b.h5")  # a new plate, in one step
            cl.sh(["scontrol", "update", f"JobId={sc2}", "StartTime=now"], check_rc=True)
            log(f"added plates/b.h5; job {sc2}: StartTime=now")
            if jobs.wait([sc2], 120 * scale, "score run 2 (nightly resubmission)"):
                out2 = read(f"{work}/slogs/nightly-{sc2}.out")
                check("run 2 skipped the shard run 1 scored",
                      re.search(r"a\.scores\.h5: up to date .*skipped", out2) is not None
                      and os.stat(first).st_mtime_ns == mtime, out2[-800:])
                check("run 2 scored the new plate",
                      re.search(r"b\.h5 -> .*b\.scores\.h5", out2) is not None
                      and os.path.exists(f"{work}/scores/b.scores.h5"), out2[-800:])
                m3 = re.search(r"nightly: next run is job (\d+)", out2)
                check("run 2 queued run 3 (the chain goes on)", m3, out2[-800:])
                if m3:
                    cl.sh(["scancel", m3.group(1)])

    # -- 2, continued: the requeued job (eligible again after AuthInfo cred_expire) --------
    if stop_step is not None:
        jobs.wait([tr], 240 * scale, "requeued training")
        out = read(sig_out)
        check("the requeued run resumed (train.sbatch and milscreen say so)",
              re.search(rf"resuming .*sigrun from step {stop_step} \(restart 1", out) is not None
              and "(resumed)" in out, out[-2000:])
        final = epochs * 6
        check("the resumed run finished all steps",
              f"done, {final} steps" in out and f"ckpt-{final:08d}.h5" in checkpoints(sig_run),
              str(checkpoints(sig_run)))
        steps = [e["step"] for e in map(json.loads, read(f"{sig_run}/log.jsonl").splitlines())
                 if e.get("event") == "step"]
        after = [s for s in steps if s > stop_step]
        check("the step count continues after the resume (log.jsonl never goes back)",
              steps == sorted(steps) and after and after[0] <= stop_step + 6, str(steps[:8]) + "..." + str(steps[-3:]))
        with h5py.File(f"{sig_run}/ckpt-{final:08d}.h5", "r") as f:
            check("final checkpoint's step attribute", int(f.attrs["step"]) == final)

    # -- 5, continued: time-limit signal -> checkpoint -> requeue -> resume; then scancel --
    got = wait_for(lambda: "requeueing job" in read(tl_out), 130 * scale, 0.5)
    out = read(tl_out) if os.path.exists(tl_out) else ""
    m = re.search(STOPPED, out)
    if check("time limit: #SBATCH --signal=B:USR1@N reached the batch shell before the limit, "
             "milscreen checkpointed, the job requeued itself",
             got and "got SIGUSR1" in out and m, out[-1500:]):
        s1 = int(m.group(1))
        rx = re.compile(rf"resuming .*tlrun from step {s1} \(restart 1")
        resumed = wait_for(lambda: rx.search(read(tl_out)) and any(
            int(c[5:13]) > s1 for c in checkpoints(f"{work}/tlrun")), 60 * scale, 0.3)
        check("time limit: the requeued run resumed and checkpoints on", resumed,
              read(tl_out)[-1500:])
        cl.sh(["scancel", tl])
        ended = wait_for(lambda: jobs.state(tl) == ["CANCELLED"], 30 * scale)
        out = read(tl_out)
        m2 = re.search(r"stopped by SIGTERM at step (\d+)", out)
        check("scancel (SIGTERM): the job checkpointed, stopped and was not requeued",
              ended and m2 and f"ckpt-{int(m2.group(1)):08d}.h5" in checkpoints(f"{work}/tlrun")
              and out.count("requeueing job") == 1, f"{jobs.state(tl)}\n{out[-1500:]}")
    else:
        cl.sh(["scancel", tl])

    # -- 6. an installed tree: PREFIX/share/milscreen/slurm/train.sbatch submitted by that
    # path, with no MILSCREEN and no milscreen on PATH, runs PREFIX/bin/milscreen (the job
    # runs a spool copy: the script finds its own path in Slurm's Command=) ----------------
    build = os.path.dirname(os.path.dirname(ms))
    if not os.path.exists(os.path.join(build, "CMakeCache.txt")):
        log(f"not checked: an installed train.sbatch ({ms} is not in a build tree to install)")
        return
    prefix = os.path.join(work, "installed prefix")
    r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], capture_output=True,
                       text=True)
    if not check("cmake --install into a prefix", r.returncode == 0, r.stderr[-800:]):
        return
    ienv = {k: v for k, v in cl.env.items() if k != "MILSCREEN"}
    ienv["PATH"] = ":".join(d for d in ienv["PATH"].split(":")
                            if not os.path.exists(os.path.join(d, "milscreen")))
    share = os.path.join(prefix, "share", "milscreen")
    r = subprocess.run(["sbatch", "--parsable", *SB, "--job-name=installed",
                        f"--output={work}/installed-%j.out",
                        os.path.join(share, "slurm", "train.sbatch"),
                        os.path.join(share, "configs", "paper.ini"), f"{work}/instrun", *TINY,
                        *data, "--set", "train.epochs=1"],
                       env=ienv, capture_output=True, text=True, cwd=work)
    if check("the installed train.sbatch submitted", r.returncode == 0, r.stderr):
        ij = r.stdout.strip().split(";")[0]
        if jobs.wait([ij], 120 * scale, "installed train.sbatch"):
            out = read(f"{work}/installed-{ij}.out")
            check("the installed train.sbatch ran the installed binary",
                  f" {os.path.join(prefix, 'bin', 'milscreen')} train " in out, out[-1500:])
            check("... which wrote a checkpoint", bool(checkpoints(f"{work}/instrun")))


if __name__ == "__main__":
    sys.exit(main())
