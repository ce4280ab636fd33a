/* Where milscreen's own files are. The binary finds them from its own location
 * (/proc/self/exe), never from a path compiled in, so an installed tree can be moved or
 * copied as a whole (relocatable). Layout, relative to the prefix (the folder above the
 * executable's folder):
 *   bin/milscreen
 *   lib/milscreen/                           plugins (the CUDA backend)
 *   share/milscreen/{configs,slurm,tools,docs}
 * A build tree has the same shape: build/pipeline/milscreen and the tests in build/tests
 * have the prefix build/, and CMake links build/share/milscreen/{configs,slurm,tools,docs}
 * to the source tree's folders (relative links), so that a build tree and an install find
 * their data alike. */
#ifndef MS_INSTALL_H
#define MS_INSTALL_H

#include <stddef.h>

#include "engine/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The prefix: the parent of the folder holding the running executable, e.g. /opt/milscreen
 * for /opt/milscreen/bin/milscreen. */
ms_status_t ms_install_prefix(char *buf, size_t n);
/* prefix/share/milscreen/<rel> (rel "" for the folder itself); MS_EIO naming the path it
 * looked for when that does not exist. */
ms_status_t ms_install_data(char *buf, size_t n, const char *rel);
/* prefix/lib/milscreen/<rel>, likewise (plugins). */
ms_status_t ms_install_lib(char *buf, size_t n, const char *rel);

#ifdef __cplusplus
}
#endif

#endif
