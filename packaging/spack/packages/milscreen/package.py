# Spack recipe for milscreen (BSD-3-Clause). Add this repository with
#   spack repo add packaging/spack
# and install with `spack install milscreen@main` (or a tagged version), or build a checkout
# with `spack develop --path . milscreen@main && spack install`. Checked by
# tests/packaging_check.py against a stub of the Spack API: syntax, versions, and that every
# variant maps to a CMake option of CMakeLists.txt.
from spack.package import *  # noqa: F401,F403

try:  # Spack >= 1.0 keeps the build systems in its builtin package repository
    from spack_repo.builtin.build_systems.cmake import CMakePackage  # noqa: F811
except ImportError:
    pass


class Milscreen(CMakePackage):
    """Classify and segment high-content-screening microscopy plates with a fully
    convolutional CNN trained by multiple instance learning on whole-image labels (Kraus, Ba
    & Frey, Bioinformatics 2016): a C batch pipeline for HPC clusters, HDF5 plate shards in,
    predictions and masks out, on the CPU (oneDNN) or NVIDIA GPUs (CUDA + cuDNN), one process
    or many MPI ranks under Slurm."""

    homepage = "https://doi.org/10.1093/bioinformatics/btw252"
    # No public repository is configured for milscreen yet: set git to its URL (or to a
    # file:// path of a clone) where it is published.
    git = "file:///opt/src/milscreen"

    # Versions are the git tags vX.Y.Z (semantic versioning, README "Versions"); add each
    # release here with its tag (and its commit, once tagged, so Spack can verify it).
    version("main", branch="main")
    version("0.2.0", tag="v0.2.0")

    # one variant per optional part; each is the MS_WITH_* option of CMakeLists.txt
    variant("cuda", default=False, description="CUDA + cuDNN backend (MS_WITH_CUDA; sm_90)")
    variant("mpi", default=True, description="MPI ranks for train and score (MS_WITH_MPI)")
    variant("dnnl", default=True, description="oneDNN CPU backend (MS_WITH_DNNL)")
    variant("tiff", default=True, description="TIFF ingest with libtiff (MS_WITH_TIFF)")
    variant("nccl", default=True,
            description="NCCL all-reduce for GPU ranks, inside the CUDA plugin; needs +cuda "
            "to matter (MS_WITH_NCCL)")

    depends_on("c", type="build")
    depends_on("cxx", type="build")
    depends_on("cmake@3.25:", type="build")
    # H5Pset_file_locking (1.10.7) and the high-level library's dimension scales
    depends_on("hdf5@1.10.7: +hl")
    depends_on("libdeflate")
    depends_on("libpng")
    depends_on("onednn@2.6:2", when="+dnnl")  # the oneDNN 2 C API (engine/cpu)
    depends_on("mpi", when="+mpi")
    depends_on("libtiff", when="+tiff")
    depends_on("cuda@12:", when="+cuda")
    depends_on("cudnn", when="+cuda")
    depends_on("nccl", when="+cuda+nccl")

    def cmake_args(self):
        args = [
            self.define_from_variant("MS_WITH_CUDA", "cuda"),
            self.define_from_variant("MS_WITH_MPI", "mpi"),
            self.define_from_variant("MS_WITH_DNNL", "dnnl"),
            self.define_from_variant("MS_WITH_TIFF", "tiff"),
            self.define_from_variant("MS_WITH_NCCL", "nccl"),
            self.define("MS_SANITIZE", False),
        ]
        if self.spec.satisfies("+cuda"):
            args.append(self.define("CMAKE_CUDA_COMPILER",
                                    join_path(self.spec["cuda"].prefix.bin, "nvcc")))
        return args
