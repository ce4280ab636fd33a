/* `milscreen --version` (pipeline/version.h). Each backend is asked the way a command would
 * open it, so "available" means a command can use it on this machine and the reason printed
 * otherwise is the one that command would give. */
#include "pipeline/version.h"

#include <hdf5.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/install.h"
#include "ms_build_config.h"
#include "ms_git_revision.h" /* written at build time (cmake/ms_git_revision.cmake) */
#if MS_HAVE_MPI
#include <mpi.h>
#endif
#if MS_HAVE_TIFF
#include <tiffio.h>
#endif

const char *ms_version_revision(void)
{
    return MS_GIT_REVISION;
}

static void backend_line(FILE *f, const char *name)
{
    ms_backend_t *be = NULL;
    ms_error_clear();
    /* device 0, default threads and precision: what `--backend NAME` gets */
    ms_status_t st = ms_backend_open(&be, name, 0, 0, NULL);
    if (st == MS_OK) {
        char desc[512];
        be->describe(be, desc, sizeof desc);
        fprintf(f, "  %-5s available: %s\n", name, desc);
        ms_backend_close(be);
    } else {
        fprintf(f, "  %-5s not available: %s\n", name, ms_error_message());
    }
    ms_error_clear();
}

int ms_version_print(FILE *f)
{
    fprintf(f, "milscreen %s (git %s)\n", MS_VERSION, ms_version_revision());
    fprintf(f, "backends:\n");
    backend_line(f, "ref");
    backend_line(f, "cpu");
    backend_line(f, "cuda");
#if MS_HAVE_MPI
    /* MPI-3 allows this before MPI_Init; it starts nothing */
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(mpi, &len) == MPI_SUCCESS) {
        mpi[strcspn(mpi, ",\n")] = 0; /* "Open MPI v4.1.4, package: ..." -> its name */
        fprintf(f, "MPI:  %s (MPI %d.%d)\n", mpi, MPI_VERSION, MPI_SUBVERSION);
    } else {
        fprintf(f, "MPI:  compiled in, library version unknown\n");
    }
#else
    fprintf(f, "MPI:  not compiled in (one process per job)\n");
#endif
#if MS_HAVE_TIFF
    const char *tiff = TIFFGetVersion();
    fprintf(f, "TIFF: %.*s\n", (int)strcspn(tiff, "\n"), tiff);
#else
    fprintf(f, "TIFF: not compiled in (no ingest from TIFF)\n");
#endif
    unsigned maj = 0, min = 0, rel = 0;
    if (H5get_libversion(&maj, &min, &rel) >= 0)
        fprintf(f, "HDF5: %u.%u.%u (built against %d.%d.%d)\n", maj, min, rel, H5_VERS_MAJOR,
                H5_VERS_MINOR, H5_VERS_RELEASE);
    char data[4096];
    if (ms_install_data(data, sizeof data, "") == MS_OK)
        fprintf(f, "data: %s\n", data);
    else
        fprintf(f, "data: not found: %s\n", ms_error_message());
    ms_error_clear();
    return 0;
}
