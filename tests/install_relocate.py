#!/usr/bin/python3
"""cmake --install into a temporary prefix, move the prefix, and run what needs the installed
data from the new place: the install is relocatable and the binary finds its configs, tools
and scripts from its own path, never from the source or build tree.

Checks:
  1. the agreed layout (bin/milscreen, share/milscreen/{configs,slurm,tools,docs}), scripts
     executable;
  2. after the move: --version names the moved data folder and the project version;
  3. no path of the source tree, the build tree or the first prefix in the binary (nor in
     its run paths) or in any installed file;
  4. bench --cpu with its default config (share/milscreen/configs/paper.ini) and --vs-pytorch
     (share/milscreen/tools/bench-pytorch), on a tiny input;
  5. the installed PyTorch twin imports from share/milscreen/tools and builds the installed
     paper.ini (484,476 parameters, DESIGN §1);
  6. the installed train.sbatch, run outside Slurm with no MILSCREEN and no milscreen on PATH
     from a folder with no build tree, runs the installed binary and writes a checkpoint;
     pipeline.sh --dry-run names the installed binary and config;
  7. packaging/apptainer/milscreen.def's %test passes on this install;
  8. the build tree has the same shape: build/pipeline/milscreen's data folder is
     build/share/milscreen.
Installs from the already-built tree (cmake --install builds nothing).

usage: install_relocate.py BUILD_DIR SOURCE_DIR
"""
import os
import re
import subprocess
import sys
import tempfile

BUILD, SRC = (os.path.realpath(p) for p in sys.argv[1:3])
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def project_version():
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        m = re.search(r"^CMAKE_PROJECT_VERSION:\w+=(\S+)$", f.read(), re.M)
    return m.group(1) if m else None


with tempfile.TemporaryDirectory(prefix="ms-install-") as tmp:
    first = os.path.join(tmp, "first-prefix")
    r = run(["cmake", "--install", BUILD, "--prefix", first])
    if not check("cmake --install", r.returncode == 0, r.stdout[-500:] + r.stderr[-1500:]):
        sys.exit(1)

    # 1. layout
    share = os.path.join(first, "share", "milscreen")
    want = {"bin/milscreen": True,
            "share/milscreen/configs/paper.ini": False,
            "share/milscreen/slurm/train.sbatch": True,
            "share/milscreen/slurm/score.sbatch": True,
            "share/milscreen/slurm/pipeline.sh": True,
            "share/milscreen/tools/bench-pytorch": True,
            "share/milscreen/tools/make-cluttered-mnist": True,
            "share/milscreen/tools/cluttered_mnist.py": False,
            "share/milscreen/tools/milscreen_torch.py": True,
            "share/milscreen/docs/README.md": False,
            "share/milscreen/docs/FORMATS.md": False,
            "share/milscreen/docs/LICENSE": False,
            "share/milscreen/docs/CITATION.cff": False,
            "share/milscreen/docs/CHANGELOG.md": False}
    for rel, exe in want.items():
        p = os.path.join(first, rel)
        check(f"installed {rel}" + (" (executable)" if exe else ""),
              os.path.isfile(p) and (not exe or os.access(p, os.X_OK)))
    top = sorted(os.listdir(first))
    check("nothing else at the top of the prefix", set(top) <= {"bin", "lib", "share"}, str(top))

    # 2. move the whole prefix somewhere else, with a space in its name
    moved = os.path.join(tmp, "moved here", "milscreen-prefix")
    os.makedirs(os.path.dirname(moved))
    os.rename(first, moved)
    ms = os.path.join(moved, "bin", "milscreen")
    data = os.path.join(moved, "share", "milscreen")
    r = run([ms, "--version"], cwd=tmp)
    ver = project_version()
    check("--version runs from the moved prefix", r.returncode == 0, r.stderr)
    check(f"--version says milscreen {ver}", r.stdout.startswith(f"milscreen {ver} (git "),
          r.stdout[:200])
    check("--version names the moved data folder", f"data: {data}\n" in r.stdout, r.stdout)
    for line in ("backends:", "  ref ", "  cpu ", "  cuda ", "MPI:", "TIFF:", "HDF5:"):
        check(f"--version has '{line.strip()}'", line in r.stdout, r.stdout)

    # 3. no path of this machine's trees in what was installed
    paths = [SRC, BUILD, first]
    with open(ms, "rb") as f:
        blob = f.read()
    for p in paths:
        check(f"the binary does not contain {p}", p.encode() not in blob)
    dyn = run(["readelf", "-d", ms]).stdout
    rpath = [d for l in dyn.splitlines() if "RPATH" in l or "RUNPATH" in l
             for d in re.findall(r"\[(.*)\]", l)[0].split(":")]
    # run paths: $ORIGIN-relative, or the folders of libraries linked from outside the
    # system (CMAKE_INSTALL_RPATH_USE_LINK_PATH), never a folder of this build or install
    check("the binary's RPATH/RUNPATH names no build, source or install folder",
          not [d for d in rpath for p in paths if d == p or d.startswith(p + "/")], str(rpath))
    for root, _, files in os.walk(moved):
        for name in files:
            fp = os.path.join(root, name)
            if fp == ms:
                continue
            text = open(fp, "rb").read()
            bad = [p for p in paths if p.encode() in text]
            check(f"{os.path.relpath(fp, moved)} names no build-machine path", not bad, str(bad))

    # 4. bench with its default config and the PyTorch yardstick, both from the install
    r = run([ms, "bench", "--cpu", "--only", "infer", "--infer", "96x96", "--steps", "1",
             "--warmup", "0", "--no-layers", "--threads", "1", "--vs-pytorch"], cwd=tmp)
    out = r.stdout + r.stderr
    check("bench --cpu --vs-pytorch runs from the moved prefix", r.returncode == 0, out[-1500:])
    check("bench ran the installed tools/bench-pytorch",
          f"'{data}/tools/bench-pytorch' --cpu" in out and "pytorch-cpu mode=fp32 what=infer" in out,
          out[-1500:])
    check("bench compared against PyTorch",
          re.search(r"milscreen-vs-pytorch-cpu prec=fp32 torch=fp32 what=infer .*ratio=", out))

    # 5. the installed twin and the installed paper config
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import milscreen_torch as mt; "
            "m = mt.build_model(sys.argv[2]); print(sum(p.numel() for p in m.parameters()))")
    r = run(["/usr/bin/python3", "-c", code, os.path.join(data, "tools"),
             os.path.join(data, "configs", "paper.ini")], cwd=tmp)
    check("the installed twin builds the installed paper.ini: 484,476 parameters",
          r.returncode == 0 and r.stdout.strip() == "484476", r.stdout + r.stderr[-800:])

    # 6. the installed sbatch script finds the installed binary (run outside Slurm)
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "MILSCREEN"}
    env["PATH"] = ":".join(p for p in env.get("PATH", "/usr/bin:/bin").split(":")
                           if not os.path.exists(os.path.join(p, "milscreen")))
    r = run([ms, "synth", "--preset", "tiny", "--out", "d", "--size", "96x96", "--sites", "1",
             "--treatments", "2", "--replicates", "1", "--threads", "1"], cwd=work)
    check("synth from the moved prefix", r.returncode == 0, r.stderr[-500:])
    tiny = [f"--set={s}" for s in ("conv1.filters=4", "conv2.filters=4", "conv3.filters=4",
                                   "conv4.filters=8", "conv5.filters=8", "conv6.filters=8",
                                   "net.classes=3", "train.crop=0", "train.batch=2",
                                   "train.epochs=1", "data.train=d/train.h5")]
    r = run(["bash", os.path.join(data, "slurm", "train.sbatch"),
             os.path.join(data, "configs", "paper.ini"), "run", *tiny], cwd=work, env=env)
    out = r.stdout + r.stderr
    check("the installed train.sbatch runs", r.returncode == 0, out[-1500:])
    check("... the installed binary", f" {os.path.realpath(ms)} train " in out, out[-800:])
    ck = [f for f in os.listdir(os.path.join(work, "run"))] if os.path.isdir(
        os.path.join(work, "run")) else []
    check("... and it wrote a checkpoint", any(re.fullmatch(r"ckpt-\d+\.h5", f) for f in ck),
          str(ck))
    r = run(["bash", os.path.join(data, "slurm", "pipeline.sh"), "--work", "pw", "--synth",
             "--dry-run"], cwd=work, env=env)
    out = r.stdout + r.stderr
    check("the installed pipeline.sh --dry-run runs", r.returncode == 0, out[-800:])
    plain = out.replace("\\ ", " ")  # the commands are printed shell-quoted (printf %q)
    check("... naming the installed binary, scripts and paper.ini",
          f"{os.path.realpath(ms)} synth" in plain and
          os.path.join(data, "slurm", "train.sbatch") in plain and
          os.path.join(data, "configs", "paper.ini") in plain, out[-1500:])

    # 7. the Apptainer definition's %test (with its %environment) on this install: the
    # commands the container build ends with, run here with /opt/milscreen -> the prefix
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import packaging_check as pc  # noqa: E402
    _, sec = pc.parse_def(open(os.path.join(SRC, "packaging", "apptainer", "milscreen.def")).read())
    script = pc.substitute(sec["environment"] + "\n" + sec["test"], pc.build_args(sec))
    script = script.replace("/opt/milscreen", moved)
    r = run(["sh", "-c", script], cwd=tmp, env=env)
    check("the Apptainer %test passes on the moved install", r.returncode == 0,
          (r.stdout + r.stderr)[-1500:])

    # 8. the build tree in the same shape
    r = run([os.path.join(BUILD, "pipeline", "milscreen"), "--version"])
    check("the build tree's binary finds build/share/milscreen",
          f"data: {os.path.join(BUILD, 'share', 'milscreen')}\n" in r.stdout, r.stdout)
    check("build/share/milscreen/configs is the source's",
          os.path.samefile(os.path.join(BUILD, "share", "milscreen", "configs", "paper.ini"),
                           os.path.join(SRC, "configs", "paper.ini")))

print("all passed" if not failures else "FAILED: " + ", ".join(failures))
sys.exit(1 if failures else 0)
