#!/usr/bin/python3
"""The CUDA backend is a plugin loaded at run time (issue 12 item 4): the milscreen binary links
no CUDA, cuDNN or NCCL library (readelf -d, ldd), the plugin does; on a node without a GPU
`--backend cuda` fails with "cuda backend absent: <reason>" and `--backend auto` trains on the
CPU saying why; the plugin is found beside the binary (build tree), in ../lib/milscreen/ (the
install layout) or in $MILSCREEN_PLUGIN_DIR, and a missing plugin, a plugin that is no shared
object and a plugin whose CUDA library is missing on the node are each reported as such.

usage: cuda_plugin.py MILSCREEN PLUGIN NCCL(ON|OFF)"""
import os
import shutil
import subprocess
import sys
import tempfile

MS, PLUGIN, NCCL = sys.argv[1], sys.argv[2], sys.argv[3] == "ON"
CUDA_LIBS = ("libcudart", "libcudnn", "libnccl", "libcublas", "libcuda.so")
GPU = os.path.exists("/dev/nvidiactl")  # a GPU node: --backend cuda must then work
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what} {detail if not ok else ''}")
    if not ok:
        failures.append(what)


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True)
    return [l.split("[")[1].rstrip("]") for l in out.stdout.splitlines() if "(NEEDED)" in l]


def train(ms, run, backend, env=None):
    e = dict(os.environ)
    e.pop("MILSCREEN_PLUGIN_DIR", None)
    e.update(env or {})
    return subprocess.run([ms, "train", "--config", "tiny.ini", "--run", run, "--backend", backend,
                           "--threads", "1", "--progress", "lines"],
                          capture_output=True, text=True, env=e, timeout=300)


# the binary and the plugin, as linked
n_ms, n_plugin = needed(MS), needed(PLUGIN)
check("the milscreen binary needs no CUDA library (readelf -d)",
      not [n for n in n_ms if n.startswith(CUDA_LIBS)], str(n_ms))
ldd = subprocess.run(["ldd", MS], capture_output=True, text=True).stdout
check("nor does anything it loads at start (ldd)", not any(l in ldd for l in CUDA_LIBS), ldd)
check("the plugin needs the CUDA runtime and cuDNN (the test has power)",
      any(n.startswith("libcudart") for n in n_plugin) and
      any(n.startswith("libcudnn") for n in n_plugin), str(n_plugin))
check(f"the plugin needs NCCL exactly when it was built with it ({NCCL})",
      any(n.startswith("libnccl") for n in n_plugin) == NCCL, str(n_plugin))

with tempfile.TemporaryDirectory() as d:
    os.chdir(d)
    subprocess.run([MS, "synth", "--preset", "tiny", "--out", "data", "--seed", "3"], check=True,
                   capture_output=True)
    open("tiny.ini", "w").write(
        "[net]\nchannels = 3\nclasses = 3\n[train]\nbatch = 4\nepochs = 1\ncrop = 48\nseed = 5\n"
        "loader_threads = 1\n[data]\ntrain = data/train.h5\nval = data/test.h5\n"
        "[c1]\ntype = conv\nfilters = 8\nsize = 3\n[p1]\ntype = maxpool\nsize = 3\nstride = 2\n"
        "[c2]\ntype = conv\nfilters = classes\nsize = 1\nactivation = linear\n"
        "[mil]\ntype = mil\npool = noisy_and\na = 10\n[fc]\ntype = fc\nhead = softmax\n")

    # the plugin beside the binary (the build tree)
    r = train(MS, "cuda", "cuda")
    if GPU:
        check("--backend cuda trains on this GPU node", r.returncode == 0, r.stderr[-500:])
    else:
        check("--backend cuda without a GPU: 'cuda backend absent: <reason>', exit 1",
              r.returncode == 1 and "error: cuda backend absent: " in r.stderr and
              len(r.stderr.split("cuda backend absent: ")[1].strip()) > 10, r.stderr[-500:])
        print("   ", r.stderr.strip())
        r = train(MS, "auto", "auto")
        line = [l for l in r.stdout.splitlines() if l.startswith("  backend")]
        check("--backend auto falls back to the CPU and says why",
              r.returncode == 0 and line and "auto: cuda backend absent: " in line[0] and
              not line[0].startswith("  backend  cuda"), r.stdout[:600] + r.stderr[-300:])
        print("   ", line[0] if line else "")

    # MILSCREEN_PLUGIN_DIR overrides the search, and a folder without the plugin says so
    os.mkdir("empty")
    r = train(MS, "e", "cuda", {"MILSCREEN_PLUGIN_DIR": os.path.abspath("empty")})
    check("MILSCREEN_PLUGIN_DIR without the plugin: 'not found' naming the folder",
          r.returncode == 1 and "cuda backend absent: libmilscreen-cuda.so not found" in r.stderr
          and "empty" in r.stderr, r.stderr[-400:])
    r = train(MS, "e2", "auto", {"MILSCREEN_PLUGIN_DIR": os.path.abspath("empty")})
    check("... and auto then trains on the CPU", r.returncode == 0 and "not found" in r.stdout,
          r.stdout[:400] + r.stderr[-300:])

    # a file of that name that is not a shared object
    os.mkdir("junk")
    open("junk/libmilscreen-cuda.so", "w").write("not a shared object\n")
    r = train(MS, "j", "cuda", {"MILSCREEN_PLUGIN_DIR": os.path.abspath("junk")})
    check("a plugin that does not load: the loader's reason, naming the file",
          r.returncode == 1 and "cuda backend absent: " in r.stderr and
          "junk/libmilscreen-cuda.so" in r.stderr, r.stderr[-400:])

    # a CPU node without cuDNN: the same plugin with its cuDNN dependency renamed in the dynamic
    # string table (same length) cannot be loaded
    os.mkdir("nocudnn")
    blob = bytearray(open(PLUGIN, "rb").read())
    sec = [l.split() for l in subprocess.run(["readelf", "-S", "-W", PLUGIN], capture_output=True,
                                             text=True, check=True).stdout.splitlines()
           if " .dynstr " in l][0]
    off, size = int(sec[sec.index(".dynstr") + 3], 16), int(sec[sec.index(".dynstr") + 4], 16)
    dep = [n for n in n_plugin if n.startswith("libcudnn")][0].encode()
    gone = dep.replace(b"cudnn", b"nodnn")  # libnodnn.so.9: the same length
    at = bytes(blob[off:off + size]).find(dep + b"\0")
    check("the plugin's dynamic string table names its cuDNN dependency", at >= 0, dep.decode())
    if at >= 0:
        blob[off + at:off + at + len(gone)] = gone
        open("nocudnn/libmilscreen-cuda.so", "wb").write(blob)
        r = train(MS, "n", "cuda", {"MILSCREEN_PLUGIN_DIR": os.path.abspath("nocudnn")})
        check("a node without cuDNN: 'cuda backend absent' naming the missing library",
              r.returncode == 1 and "cuda backend absent: " in r.stderr and
              gone.decode() in r.stderr and "cannot open shared object file" in r.stderr,
              r.stderr[-400:])
        print("   ", r.stderr.strip())
        r = train(MS, "n2", "auto", {"MILSCREEN_PLUGIN_DIR": os.path.abspath("nocudnn")})
        check("... and auto trains on the CPU there", r.returncode == 0 and
              "auto: cuda backend absent: " in r.stdout, r.stdout[:400] + r.stderr[-300:])

    # the install layout: bin/milscreen finds lib/milscreen/libmilscreen-cuda.so; a binary with
    # no plugin in either place says where it looked
    for sub in ("prefix/bin", "prefix/lib/milscreen", "alone/bin"):
        os.makedirs(sub)
    shutil.copy2(MS, "prefix/bin/milscreen")
    shutil.copy2(PLUGIN, "prefix/lib/milscreen/libmilscreen-cuda.so")
    shutil.copy2(MS, "alone/bin/milscreen")
    r = train(os.path.abspath("prefix/bin/milscreen"), "p", "cuda")
    check("installed: the plugin is found in ../lib/milscreen/ (it loads, then looks for a GPU)",
          (r.returncode == 0) if GPU else
          (r.returncode == 1 and "cuda backend absent: no CUDA device" in r.stderr),
          r.stderr[-400:])
    r = train(os.path.abspath("alone/bin/milscreen"), "a", "cuda")
    check("a binary without its plugin says where it looked",
          r.returncode == 1 and "not found beside" in r.stderr and "lib/milscreen" in r.stderr,
          r.stderr[-400:])
    os.chdir("/")

print(f"{'all passed' if not failures else 'FAILED: ' + ', '.join(failures)}")
sys.exit(1 if failures else 0)
