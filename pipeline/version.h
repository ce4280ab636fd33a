/* What this binary is: its version (CMake's project version, semantic vX.Y.Z tags), the git
 * revision it was built from, and the backends and libraries it has and can use here. */
#ifndef MS_VERSION_H
#define MS_VERSION_H

#include <stdio.h>

/* `git describe --tags --always --dirty` of the source tree when the binary was built (e.g.
 * "v0.2.0-3-g1a2b3c4-dirty"), MS_GIT_REVISION given to CMake, or "unknown" outside git. */
const char *ms_version_revision(void);
/* `milscreen --version`: version and revision, then one line per backend (compiled in and
 * usable on this machine, or why not), MPI, TIFF, HDF5 and the data folder. Returns 0. */
int ms_version_print(FILE *f);

#endif
