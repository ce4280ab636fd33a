#!/usr/bin/python3
"""The packaging files, checked where their tools are absent (Debian 12 has neither Apptainer
nor Spack), and the version named alike everywhere.

  1. packaging/apptainer/milscreen.def: header and sections as Apptainer reads them (known
     section names, Bootstrap docker From debian:12), every %files source exists and together
     they hold everything CMakeLists.txt reads (its subdirectories, configure_file inputs,
     cmake -P scripts, install() sources) and the tools %post runs; %post runs setup-deps,
     configures only with options CMakeLists.txt has, builds and installs into the prefix
     %environment puts on PATH; the shell of %post, %test, %runscript and %environment parses
     (sh -n) with the {{ build arguments }} replaced by their %arguments defaults.
     (install_relocate.py runs %test itself against a real install.)
  2. packaging/spack: the recipe imports against a minimal stub of the Spack package API;
     its variants are exactly cuda, nccl, mpi, dnnl, tiff, each mapping through cmake_args() to an
     MS_WITH_* option that exists in CMakeLists.txt (and every MS_WITH_* option has one), on
     and off; each optional part's dependencies are conditional on its variant; versions are
     main plus vX.Y.Z tags, including CMake's project version and every vX.Y.Z git tag.
  3. one version: CMake's project version is CITATION.cff's, the CHANGELOG's first entry,
     the Apptainer label; CITATION.cff has CFF 1.2.0's required keys and cites the paper.

usage: packaging_check.py SOURCE_DIR
"""
import os
import re
import subprocess
import sys
import tempfile
import types

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else \
    os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEF = os.path.join(ROOT, "packaging", "apptainer", "milscreen.def")
RECIPE = os.path.join(ROOT, "packaging", "spack", "packages", "milscreen", "package.py")
failures = []

# Apptainer's section names (user guide, "Definition Files"); %app* sections take an app name
SECTIONS = {"setup", "files", "environment", "post", "runscript", "startscript", "test",
            "labels", "help", "arguments"}
APP_SECTIONS = {"appfiles", "appinstall", "appenv", "apprun", "applabels", "apphelp", "apptest"}
SHELL_SECTIONS = ("setup", "post", "test", "runscript", "startscript", "environment")


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}: {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)
    return ok


def read(path):
    with open(path) as f:
        return f.read()


# ---- Apptainer ----------------------------------------------------------------------------
def parse_def(text):
    """(header dict, {section: body}) as Apptainer splits a definition file: 'Key: value'
    lines before the first %section, '#' comments; a section runs to the next %name at the
    start of a line."""
    header, sections, cur = {}, {}, None
    for line in text.splitlines():
        m = re.match(r"^%(\w+)(?:\s+(\S+))?\s*$", line)
        if m:
            cur = m.group(1) + (f" {m.group(2)}" if m.group(2) else "")
            if cur in sections:
                raise ValueError(f"section %{cur} twice")
            sections[cur] = []
            continue
        if cur is None:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            k, sep, v = s.partition(":")
            if not sep:
                raise ValueError(f"header line without 'Key:': {line!r}")
            header[k.strip()] = v.strip()
        else:
            sections[cur].append(line)
    return header, {k: "\n".join(v) for k, v in sections.items()}


def build_args(sections):
    """%arguments: name=default lines."""
    out = {}
    for line in sections.get("arguments", "").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            k, _, v = s.partition("=")
            out[k.strip()] = v.strip()
    return out


def substitute(body, args):
    """Apptainer >= 1.2 replaces {{ name }} by the build argument."""
    def rep(m):
        if m.group(1) not in args:
            raise KeyError(f"{{{{ {m.group(1)} }}}} has no %arguments default")
        return args[m.group(1)]
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", rep, body)


def cmake_inputs(root):
    """Paths (relative to root) that configuring and installing read, from CMakeLists.txt."""
    text = re.sub(r"#[^\n]*", "", read(os.path.join(root, "CMakeLists.txt")))
    paths = set(re.findall(r"add_subdirectory\((\S+?)\)", text))
    paths |= set(re.findall(r"configure_file\((\S+)", text))
    paths |= {p for p in re.findall(r"\$\{CMAKE_SOURCE_DIR\}/(\S+?\.cmake)", text)}
    for body in re.findall(r"install\((.*?)\)", text, re.S):
        words = body.split()
        if words and words[0] in ("FILES", "PROGRAMS", "DIRECTORY"):
            for w in words[1:]:
                if w == "DESTINATION":
                    break
                paths.add(w.rstrip("/"))
    return {p for p in paths if "$" not in p}


def check_apptainer():
    text = read(DEF)
    try:
        header, sec = parse_def(text)
    except ValueError as e:
        check("the definition file parses", False, str(e))
        return
    check("the definition file parses", True)
    check("Bootstrap: docker", header.get("Bootstrap") == "docker", str(header))
    check("From: debian:12 (Debian 12 base)", header.get("From") == "debian:12", str(header))
    unknown = [s for s in sec if s.split()[0] not in SECTIONS | APP_SECTIONS
               or (s.split()[0] in APP_SECTIONS) != (" " in s)]
    check("only Apptainer's section names", not unknown, str(unknown))
    for need in ("files", "post", "environment", "runscript", "test", "labels", "help"):
        check(f"has %{need}", need in sec)
    args = build_args(sec)
    check("%arguments gives revision a default", "revision" in args, str(args))

    # %files: sources exist (relative to the repository root, where the build is run) and
    # hold what the build reads
    dest, sources = set(), []
    for line in sec.get("files", "").splitlines():
        w = line.split()
        if not w or w[0].startswith("#"):
            continue
        src, dst = w[0], (w[1] if len(w) > 1 else w[0])
        sources.append(src.rstrip("/"))
        dest.add(dst.rstrip("/"))
        check(f"%files source {src} exists in the repository",
              os.path.exists(os.path.join(ROOT, src)))
    check("%files copies into one source folder", len(dest) == 1, str(dest))
    srcdir = next(iter(dest)) if len(dest) == 1 else ""
    needed = cmake_inputs(ROOT) | {"tools/setup-deps"}
    covered = lambda p: any(p == s or p.startswith(s + "/") for s in sources)  # noqa: E731
    missing = sorted(p for p in needed if not covered(p))
    check("%files holds everything CMakeLists.txt reads and tools/setup-deps",
          not missing and len(needed) > 5, f"missing {missing}")

    # %post: setup-deps, configure with existing options, build, install into the prefix
    post = substitute(sec.get("post", ""), args)
    check("%post runs in the copied tree and runs tools/setup-deps",
          f"cd {srcdir}" in post and re.search(r"^\s*tools/setup-deps\b", post, re.M))
    cm = read(os.path.join(ROOT, "CMakeLists.txt"))
    options = set(re.findall(r"^option\((\w+)", cm, re.M))
    cache = set(re.findall(r"^set\((\w+) .*CACHE", cm, re.M))
    used = set(re.findall(r"-D(MS_\w+)=", post))
    check("%post sets only MS_* options CMakeLists.txt has", used and used <= options | cache,
          f"{sorted(used - options - cache)} not in {sorted(options | cache)}")
    m = re.search(r"cmake --install \S+ --prefix (\S+)", post)
    prefix = m.group(1) if m else None
    check("%post builds and installs (cmake --build, cmake --install --prefix)",
          "cmake --build" in post and prefix is not None)
    check("%environment puts the prefix's bin on PATH",
          prefix is not None and re.search(rf'PATH="?{re.escape(prefix)}/bin:',
                                           sec.get("environment", "")))
    check("%runscript runs the installed milscreen",
          prefix is not None and f"{prefix}/bin/milscreen" in sec.get("runscript", ""))
    check("%test runs milscreen --version", "--version" in sec.get("test", ""))
    for s in SHELL_SECTIONS:
        if s in sec:
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
                f.write(substitute(sec[s], args))
                f.flush()
                r = subprocess.run(["sh", "-n", f.name], capture_output=True, text=True)
            check(f"%{s} is valid sh", r.returncode == 0, r.stderr.strip())
    labels = dict(l.strip().split(None, 1) for l in sec.get("labels", "").splitlines() if l.strip())
    return labels


# ---- Spack --------------------------------------------------------------------------------
class Spec:
    """The part of a Spack spec the recipe asks: satisfies('+variant'), spec['dep'].prefix."""

    def __init__(self, variants):
        self.variants = variants

    def satisfies(self, s):
        m = re.fullmatch(r"([+~])(\w+)", s)
        if not m:
            raise ValueError(f"stub spec: cannot evaluate satisfies({s!r})")
        return self.variants[m.group(2)] == (m.group(1) == "+")

    def __getitem__(self, name):
        prefix = types.SimpleNamespace(bin=f"/spack/{name}/bin", lib=f"/spack/{name}/lib")
        return types.SimpleNamespace(prefix=prefix)


def spack_stub():
    """A module `spack.package` with the directives and the CMakePackage helpers the recipe
    uses, recording each directive call."""
    rec = {"version": [], "variant": [], "depends_on": [], "conflicts": []}

    def directive(name):
        def f(*a, **k):
            rec[name].append((a, k))
        return f

    class CMakePackage:
        def __init__(self, spec):
            self.spec = spec

        @staticmethod
        def define(name, value):
            if isinstance(value, bool):
                value = "ON" if value else "OFF"
            return f"-D{name}={value}"

        def define_from_variant(self, name, variant):
            return self.define(name, self.spec.variants[variant])

    mod = types.ModuleType("spack.package")
    for d in rec:
        setattr(mod, d, directive(d))
    mod.CMakePackage = CMakePackage
    mod.join_path = os.path.join
    mod.__all__ = list(rec) + ["CMakePackage", "join_path"]
    pkg = types.ModuleType("spack")
    pkg.package = mod
    return pkg, mod, rec


def check_spack():
    pkg, mod, rec = spack_stub()
    saved = {k: sys.modules.get(k) for k in ("spack", "spack.package")}
    sys.modules["spack"], sys.modules["spack.package"] = pkg, mod
    ns = {"__name__": "milscreen_recipe"}
    try:
        exec(compile(read(RECIPE), RECIPE, "exec"), ns)
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        check("the Spack recipe imports against the stub API", False, f"{type(e).__name__}: {e}")
        return [], {}
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    check("the Spack recipe imports against the stub API", True)
    cls = ns.get("Milscreen")
    check("class Milscreen(CMakePackage)", cls is not None and issubclass(cls, mod.CMakePackage))
    check("the recipe names a git repository", bool(getattr(cls, "git", "")))

    variants = {a[0]: k.get("default") for a, k in rec["variant"]}
    check("variants are cuda, nccl, mpi, dnnl, tiff",
          set(variants) == {"cuda", "nccl", "mpi", "dnnl", "tiff"},
          str(sorted(variants)))
    cm = read(os.path.join(ROOT, "CMakeLists.txt"))
    options = set(re.findall(r"^option\((MS_WITH_\w+)", cm, re.M))
    base = {v: bool(d) for v, d in variants.items()}
    mapped = {}
    for v in variants:
        on, off = (set(cls(Spec(dict(base, **{v: x}))).cmake_args()) for x in (True, False))
        changed = sorted({a.split("=")[0][2:] for a in on ^ off} - {"CMAKE_CUDA_COMPILER"})
        check(f"variant {v} switches exactly one MS_WITH_* option", len(changed) == 1 and
              changed[0].startswith("MS_WITH_"), str(changed))
        mapped[v] = changed[0] if changed else None
        for value in (True, False):
            args = cls(Spec(dict(base, **{v: value}))).cmake_args()
            ms = {a.split("=")[0][2:]: a.split("=", 1)[1] for a in args
                  if a.startswith("-DMS_WITH_")}
            others = {k: x for k, x in ms.items() if k != f"MS_WITH_{v.upper()}"}
            ok = ms.get(f"MS_WITH_{v.upper()}") == ("ON" if value else "OFF") and \
                all(k[8:].lower() in base and x == ("ON" if base[k[8:].lower()] else "OFF")
                    for k, x in others.items())
            onoff = "ON" if value else "OFF"
            check(f"{'+' if value else '~'}{v} gives MS_WITH_{v.upper()}={onoff} and leaves "
                  "the others", ok, str(args))
    check("each variant's option exists in CMakeLists.txt", set(mapped.values()) <= options,
          f"{sorted(set(mapped.values()) - options)} not in {sorted(options)}")
    check("each MS_WITH_* option of CMakeLists.txt has a variant", options <= set(mapped.values()),
          f"{sorted(options - set(mapped.values()))} have none")
    cuda_args = cls(Spec(dict(base, cuda=True))).cmake_args()
    check("+cuda names the CUDA compiler",
          any(a.startswith("-DCMAKE_CUDA_COMPILER=") for a in cuda_args), str(cuda_args))

    deps = {}
    for a, k in rec["depends_on"]:
        name = re.match(r"[\w-]+", a[0]).group(0)
        deps.setdefault(name, []).append(k.get("when"))
    for name in ("cmake", "hdf5", "libdeflate", "libpng"):
        check(f"depends on {name} always", name in deps and None in deps[name], str(deps.get(name)))
    for name, when in (("onednn", "+dnnl"), ("mpi", "+mpi"), ("libtiff", "+tiff"),
                       ("cuda", "+cuda"), ("cudnn", "+cuda"), ("nccl", "+cuda+nccl")):
        check(f"depends on {name} when {when}", deps.get(name) == [when], str(deps.get(name)))
    check("hdf5 with its high-level library (+hl)",
          any("+hl" in a[0] for a, _ in rec["depends_on"] if a[0].startswith("hdf5")))

    versions = {a[0]: k for a, k in rec["version"]}
    bad = [v for v, k in versions.items() if v != "main" and not (
        re.fullmatch(r"\d+\.\d+\.\d+", v) and k.get("tag") == f"v{v}")]
    check("versions are main and X.Y.Z from tag vX.Y.Z",
          not bad and versions.get("main", {}).get("branch") == "main", str(versions))
    return versions, variants


# ---- one version everywhere ----------------------------------------------------------------
def check_versions(labels, versions):
    cm = read(os.path.join(ROOT, "CMakeLists.txt"))
    m = re.search(r"^project\(milscreen VERSION (\d+\.\d+\.\d+)", cm, re.M)
    if not check("CMakeLists.txt has project(milscreen VERSION X.Y.Z)", m is not None):
        return
    v = m.group(1)
    import yaml
    cff = yaml.safe_load(read(os.path.join(ROOT, "CITATION.cff")))
    check("CITATION.cff: cff-version 1.2.0 and its required keys",
          cff.get("cff-version") == "1.2.0"
          and all(k in cff for k in ("message", "authors", "title")))
    check(f"CITATION.cff version is {v}", str(cff.get("version")) == v, str(cff.get("version")))
    pc = cff.get("preferred-citation", {})
    check("CITATION.cff cites the paper (Bioinformatics 32(12):i52-i59, "
          "doi 10.1093/bioinformatics/btw252)",
          pc.get("doi") == "10.1093/bioinformatics/btw252" and pc.get("journal") == "Bioinformatics"
          and str(pc.get("volume")) == "32" and str(pc.get("issue")) == "12" and
          str(pc.get("start")) == "i52" and str(pc.get("end")) == "i59" and pc.get("year") == 2016
          and [a.get("family-names") for a in pc.get("authors", [])] == ["Kraus", "Ba", "Frey"],
          str(pc))
    check("CITATION.cff license is BSD-3-Clause", cff.get("license") == "BSD-3-Clause")
    lic = read(os.path.join(ROOT, "LICENSE"))
    check("LICENSE is the BSD 3-Clause text", "BSD 3-Clause License" in lic
          and "Neither the name of the copyright holder" in lic)
    first = re.search(r"^## (\d+\.\d+\.\d+)", read(os.path.join(ROOT, "CHANGELOG.md")), re.M)
    check(f"CHANGELOG.md's first entry is {v}", first is not None and first.group(1) == v,
          first.group(1) if first else "no '## X.Y.Z' entry")
    check(f"the Apptainer image label says {v}",
          labels.get("org.opencontainers.image.version") == v, str(labels))
    check(f"the Spack recipe has version {v} (tag v{v})", versions.get(v, {}).get("tag") == f"v{v}",
          str(versions))
    r = subprocess.run(["git", "-C", ROOT, "tag", "-l", "v*"], capture_output=True, text=True)
    tags = r.stdout.split() if r.returncode == 0 else []
    bad = [t for t in tags if not re.fullmatch(r"v\d+\.\d+\.\d+", t)]
    check("git tags v* are vX.Y.Z", not bad, str(bad))
    missing = [t for t in tags if t[1:] not in versions]
    check("every vX.Y.Z tag is a version of the Spack recipe", not missing, str(missing))
    log = read(os.path.join(ROOT, "CHANGELOG.md"))
    missing = [t for t in tags if not re.search(rf"^## {re.escape(t[1:])}\b", log, re.M)]
    check("every vX.Y.Z tag has a CHANGELOG entry", not missing, str(missing))


if __name__ == "__main__":
    labels = check_apptainer() or {}
    versions, _ = check_spack()
    check_versions(labels, versions)
    print("all passed" if not failures else "FAILED: " + ", ".join(failures))
    sys.exit(1 if failures else 0)
