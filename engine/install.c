/* The prefix from the executable's own path (engine/install.h says why and the layout). */
#include "engine/install.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

ms_status_t ms_install_prefix(char *buf, size_t n)
{
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len < 0)
        return MS_ERR(MS_EIO, "cannot find this program's own path: readlink /proc/self/exe: "
                              "%s", strerror(errno));
    if ((size_t)len >= sizeof exe - 1)
        return MS_ERR(MS_EIO, "this program's path is longer than %zu bytes", sizeof exe - 2);
    exe[len] = 0;
    /* a binary replaced while it runs (a reinstall under a nightly job) reads "... (deleted)";
     * its folder is still the one to look in */
    static const char deleted[] = " (deleted)";
    size_t dl = sizeof deleted - 1;
    if ((size_t)len > dl && !strcmp(exe + len - dl, deleted))
        exe[len - dl] = 0;
    /* drop the file name, then the folder holding it (bin/, pipeline/, tests/) */
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            return MS_ERR(MS_EIO, "this program's path '%s' has no parent folder", exe);
        *slash = 0;
    }
    if (!exe[0])
        strcpy(exe, "/");
    if (snprintf(buf, n, "%s", exe) >= (int)n)
        return MS_ERR(MS_EINTERNAL, "install prefix '%s' longer than its buffer (%zu)", exe, n);
    return MS_OK;
}

static ms_status_t under(char *buf, size_t n, const char *folder, const char *rel)
{
    char prefix[4096];
    ms_status_t st = ms_install_prefix(prefix, sizeof prefix);
    if (st != MS_OK)
        return st;
    const char *sep = rel[0] ? "/" : "";
    if (snprintf(buf, n, "%s/%s%s%s", strcmp(prefix, "/") ? prefix : "", folder, sep, rel) >=
        (int)n)
        return MS_ERR(MS_EINTERNAL, "path %s/%s/%s longer than its buffer (%zu)", prefix, folder,
                      rel, n);
    if (access(buf, F_OK) != 0)
        return MS_ERR(MS_EIO, "%s not found (%s): milscreen looks for its %s beside its binary, "
                      "in PREFIX/%s/ for PREFIX/bin/milscreen; reinstall with cmake --install, "
                      "or keep the installed tree together when moving it",
                      buf, strerror(errno), rel[0] ? rel : "files", folder);
    return MS_OK;
}

ms_status_t ms_install_data(char *buf, size_t n, const char *rel)
{
    return under(buf, n, "share/milscreen", rel);
}

ms_status_t ms_install_lib(char *buf, size_t n, const char *rel)
{
    return under(buf, n, "lib/milscreen", rel);
}
