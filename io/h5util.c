/* HDF5 helpers: atomic files, typed datasets and attributes, errors as ms_status_t naming the
 * file and object. HDF5's own error printing is switched off per thread.
 *
 * Failure paths are as safe as success paths: a write that fails (a full disk, a read-only
 * or vanished folder) is reported in words ("no space left on the device"), the temporary
 * file is removed, and the HDF5 file is always closed for good. The last point needs care:
 * when H5Fclose cannot flush, HDF5 1.10 keeps the half-destroyed file under its id and
 * crashes when it touches it again (a second H5Fclose, or its own clean-up at exit). So a
 * file is closed only after an explicit flush succeeded, and a file being discarded has its
 * descriptor swapped for an anonymous memory file first, where every write succeeds. */
#define _GNU_SOURCE /* memfd_create */
#include "io/h5util.h"

#include <hdf5_hl.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local int quiet_done;

void ms_h5_quiet(void)
{
    if (!quiet_done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        quiet_done = 1;
    }
}

const char *ms_io_strerror(int e)
{
    switch (e) {
    case ENOSPC: return "no space left on the device";
#ifdef EDQUOT
    case EDQUOT: return "disk quota exceeded (no space left for this user)";
#endif
    case EROFS: return "read-only file system";
    case EACCES:
    case EPERM: return "permission denied (the folder or file is read-only for this user)";
    default: return strerror(e);
    }
}

uint64_t ms_io_memory_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : UINT64_MAX;
}

ms_status_t ms_io_check_memory(const char *path, const char *what, double bytes)
{
    double have = (double)ms_io_memory_bytes();
    if (bytes <= have)
        return MS_OK;
    return MS_ERR(MS_ENOMEM, "%s: %s would take %.1f GiB, more than the %.1f GiB of memory of "
                  "this machine", path, what, bytes / (1u << 30), have / (1u << 30));
}

/* What a walk of HDF5's error stack found: the innermost description, the errno of a failed
 * system call (HDF5's file drivers write "errno = N" into theirs), a checksum failure. */
typedef struct {
    char desc[256];
    int err;
    int checksum;
} h5_walk_t;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data)
{
    (void)n;
    h5_walk_t *w = data;
    if (!e->desc)
        return 0;
    snprintf(w->desc, sizeof w->desc, "%s", e->desc);
    const char *p = strstr(e->desc, "errno = ");
    if (p && atoi(p + 8) > 0)
        w->err = atoi(p + 8);
    if (strstr(e->desc, "Fletcher32") || strstr(e->desc, "checksum"))
        w->checksum = 1;
    return 0;
}

const char *ms_h5_reason(void)
{
    static _Thread_local char buf[300];
    h5_walk_t w = {.desc = ""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, &w);
    if (w.err)
        snprintf(buf, sizeof buf, "%s", ms_io_strerror(w.err));
    else if (w.checksum)
        snprintf(buf, sizeof buf, "checksum mismatch: the stored bytes changed after they were "
                 "written (the file is damaged)");
    else
        snprintf(buf, sizeof buf, "%s", w.desc[0] ? w.desc : "HDF5 error");
    return buf;
}

#define h5_reason ms_h5_reason

hid_t ms_h5_fapl(void)
{
    ms_h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, 0, 1);
#else
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
#endif
    return fapl;
}

/* ------------------------------------------------------------------ temporary files */

/* This host's name as it goes into temporary names: up to the first dot, [A-Za-z0-9_-]. */
static void host_tag(char *out, size_t n)
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1) != 0 || !h[0])
        snprintf(h, sizeof h, "unknown");
    h[sizeof h - 1] = 0;
    size_t j = 0;
    for (const char *p = h; *p && *p != '.' && j + 1 < n; p++)
        out[j++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                  (*p >= '0' && *p <= '9') || *p == '-'
                              ? *p
                              : '_');
    out[j] = 0;
}

/* Splits a temporary name ".<name>.tmp.<host>.<pid>" (or the older ".<name>.tmp.<pid>", host
 * then "") into host and pid; 0 if the name is not one. */
static int parse_tmp_name(const char *name, char *host, size_t nh, long *pid)
{
    if (name[0] != '.')
        return 0;
    const char *dot = strrchr(name, '.');
    if (!dot || !dot[1] || dot == name)
        return 0;
    char *end;
    long p = strtol(dot + 1, &end, 10);
    if (*end || p <= 0)
        return 0;
    const char *t = NULL;
    for (const char *q = name + 1; (q = strstr(q, ".tmp.")); q++)
        t = q; /* the last ".tmp." */
    if (!t || t == name || t + 4 > dot)
        return 0;
    host[0] = 0;
    if (t + 4 < dot) { /* a host between ".tmp." and ".<pid>" */
        size_t len = (size_t)(dot - (t + 5));
        if (len >= nh)
            return 0;
        memcpy(host, t + 5, len);
        host[len] = 0;
    }
    *pid = p;
    return 1;
}

/* Folders already scanned by this process, so that a run writing thousands of files into one
 * folder reads it once. */
static pthread_mutex_t stale_mu = PTHREAD_MUTEX_INITIALIZER;
static char *stale_seen[64];
static int stale_nseen;

/* A killed writer leaves its temporary file behind. Before the first file is created in a
 * folder, its temporary files are looked at: one of a process of this host that is no longer
 * running is removed (nobody else can finish it), one of another host (or of an older
 * milscreen, whose names lack the host) that has not changed for ten minutes is reported.
 * Notes go to stderr; nothing here is an error. */
static void clean_stale(const char *dir)
{
    pthread_mutex_lock(&stale_mu);
    for (int i = 0; i < stale_nseen; i++)
        if (!strcmp(stale_seen[i], dir)) {
            pthread_mutex_unlock(&stale_mu);
            return;
        }
    if (stale_nseen < 64)
        stale_seen[stale_nseen++] = strdup(dir);
    pthread_mutex_unlock(&stale_mu);

    DIR *d = opendir(dir);
    if (!d)
        return;
    char me[80];
    host_tag(me, sizeof me);
    struct dirent *e;
    while ((e = readdir(d))) {
        char host[256], path[4096];
        long pid;
        if (!parse_tmp_name(e->d_name, host, sizeof host, &pid) || pid == (long)getpid())
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        if (!strcmp(host, me)) {
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
                continue; /* its writer is running: it is being written now */
            if (unlink(path) == 0)
                fprintf(stderr, "milscreen: removed %s: a temporary file left by process %ld "
                        "of this host, which is no longer running\n", path, pid);
            continue;
        }
        struct stat sb;
        double age = stat(path, &sb) == 0 ? difftime(time(NULL), sb.st_mtime) : 0;
        if (age >= 600)
            fprintf(stderr, "milscreen: note: %s looks stale (a temporary file of process %ld "
                    "on %s, unchanged for %.0f minutes); remove it if no milscreen runs there\n",
                    path, pid, host[0] ? host : "an unknown host", age / 60);
    }
    closedir(d);
}

const char *ms_h5_where(hid_t loc, const char *name)
{
    static _Thread_local char buf[1024];
    char file[600] = "?";
    char obj[300] = "";
    /* asking HDF5 for names clears its error stack: keep it for ms_h5_reason, which may be
     * evaluated after this in the same message's arguments */
    hid_t stack = H5Eget_current_stack();
    if (loc >= 0) {
        H5Fget_name(loc, file, sizeof file);
        H5Iget_name(loc, obj, sizeof obj);
    }
    if (stack >= 0)
        H5Eset_current_stack(stack);
    if (!strcmp(obj, "/"))
        obj[0] = 0;
    /* a file being written is named by its final name, the one the user gave */
    char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    char host[256], *t = NULL;
    long pid;
    if (parse_tmp_name(base, host, sizeof host, &pid)) {
        for (char *q = base; (q = strstr(q, ".tmp.")); q++)
            t = q;
        *t = 0;
        memmove(base, base + 1, strlen(base)); /* drops the leading dot */
    }
    if (name)
        snprintf(buf, sizeof buf, "%s:%s/%s", file, obj, name);
    else
        snprintf(buf, sizeof buf, "%s:%s", file, obj[0] ? obj : "/");
    return buf;
}

/* ------------------------------------------------------------------ atomic files */

/* File access for files being written: no locking, the 1.8 file format (checksums on every
 * object header, so a damaged attribute is detected; readable by HDF5 1.8 and later, h5py
 * included), every open object closed with the file (so an abort really closes it), and no
 * raw-data chunk cache: every H5Dwrite reaches the file at once, so a full disk fails the call
 * that wrote, where its status is checked, not a later H5Dclose that nobody checks. */
static hid_t create_fapl(void)
{
    hid_t fapl = ms_h5_fapl();
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    H5Pset_cache(fapl, 0, 0, 0, 0.0);
    return fapl;
}

ms_status_t ms_h5_create(ms_h5file_t *f, const char *path)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    memset(f, 0, sizeof *f);
    f->id = H5I_INVALID_HID;
    char host[80];
    host_tag(host, sizeof host);
    size_t n = strlen(path) + strlen(host) + 48;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp)
        MS_FAIL(MS_ENOMEM, "out of memory creating %s", path);
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path + 1) : 0;
    char dir[4096]; /* the folder, without its last slash ("/" stays) */
    if (!dirlen)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(dirlen > 1 ? dirlen - 1 : 1), path);
    clean_stale(dir);
    snprintf(f->tmp, n, "%.*s.%s.tmp.%s.%ld", (int)dirlen, path, path + dirlen, host,
             (long)getpid());
    hid_t fapl = create_fapl();
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_obj_track_times(fcpl, 0); /* the root group: same content, same bytes */
    f->id = H5Fcreate(f->tmp, H5F_ACC_TRUNC, fcpl, fapl);
    const char *why = f->id < 0 ? h5_reason() : NULL; /* before H5Pclose clears the stack */
    H5Pclose(fcpl);
    H5Pclose(fapl);
    if (f->id < 0) {
        unlink(f->tmp); /* the create may have failed after the file appeared */
        MS_FAIL(MS_EIO, "cannot create %s (temporary name %s): %s", path, f->tmp, why);
    }
done:
    if (st != MS_OK) {
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
    }
    return st;
}

/* The file's descriptor (the default sec2 driver), or -1. */
static int file_fd(hid_t id)
{
    void *h = NULL;
    if (H5Fget_vfd_handle(id, H5P_DEFAULT, &h) < 0 || !h)
        return -1;
    return *(int *)h;
}

ms_status_t ms_h5_commit(ms_h5file_t *f)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    if (!f->tmp)
        return MS_ERR(MS_EINTERNAL, "commit of a file that is not open");
    /* flush first: a close that cannot flush leaves HDF5 in a state it cannot leave */
    if (H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0)
        MS_FAIL(MS_EIO, "cannot write %s: %s", f->path, h5_reason());
    /* on disk before it gets its name (and a file system that reports a full disk only when
     * the data are written back, such as NFS, reports it here) */
    int fd = file_fd(f->id);
    if (fd >= 0 && fsync(fd) != 0 && errno != EINVAL)
        MS_FAIL(MS_EIO, "cannot write %s: %s", f->path, ms_io_strerror(errno));
    if (H5Fclose(f->id) < 0) {
        f->id = H5I_INVALID_HID; /* not to be touched again (see the top of this file) */
        MS_FAIL(MS_EIO, "cannot write %s: %s", f->path, h5_reason());
    }
    f->id = H5I_INVALID_HID;
    if (rename(f->tmp, f->path) != 0)
        MS_FAIL(MS_EIO, "cannot rename %s to %s: %s", f->tmp, f->path, ms_io_strerror(errno));
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
done:
    if (st != MS_OK)
        ms_h5_abort(f);
    return st;
}

void ms_h5_abort(ms_h5file_t *f)
{
    ms_h5_quiet();
    if (f->tmp)
        unlink(f->tmp); /* first: whatever happens below, no temporary file is left */
    if (f->id >= 0) {
        /* HDF5 writes what it holds when it closes: let it write into memory, where it
         * cannot fail, rather than into the file being dropped (perhaps on a full disk) */
        int fd = file_fd(f->id);
        int mem = fd >= 0 ? memfd_create("milscreen-discarded", MFD_CLOEXEC) : -1;
        if (mem >= 0) {
            dup2(mem, fd);
            close(mem);
        }
        /* After a failed flush HDF5 1.10 leaves its metadata cache half way (its "slist" still
         * enabled): one more flush, failing or not, puts it back so that the close succeeds */
        H5Fflush(f->id, H5F_SCOPE_GLOBAL);
        H5Fclose(f->id);
    }
    f->id = H5I_INVALID_HID;
    free(f->tmp);
    free(f->path);
    f->tmp = f->path = NULL;
}

ms_status_t ms_h5_open(hid_t *fid, const char *path)
{
    ms_h5_quiet();
    if (access(path, R_OK) != 0)
        return MS_ERR(MS_EIO, "cannot read %s: %m", path);
    if (H5Fis_hdf5(path) <= 0)
        return MS_ERR(MS_EFORMAT, "%s is not an HDF5 file (or it is truncated)", path);
    hid_t fapl = ms_h5_fapl();
    *fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    ms_status_t st = *fid < 0 ? MS_ERR(MS_EFORMAT, "cannot open %s: %s", path, h5_reason())
                              : MS_OK; /* the reason before H5Pclose clears it */
    H5Pclose(fapl);
    return st;
}

int ms_h5_exists(hid_t loc, const char *path)
{
    ms_h5_quiet();
    /* H5Lexists fails on a missing intermediate group: check each prefix. */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + (buf[0] == '/'); ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
                return 0;
            if (!c)
                return 1;
            *p = c;
        }
    }
}

/* Creates the groups above name ("a/b" for "a/b/c") that do not exist yet, without
 * timestamps (HDF5's intermediate-group creation would stamp them: same content, other
 * bytes). */
static ms_status_t make_groups(hid_t loc, const char *name)
{
    ms_status_t st = MS_OK;
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", name) >= (int)sizeof buf)
        return MS_ERR(MS_EARG, "HDF5 path too long: %s", name);
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_obj_track_times(gcpl, 0);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0) {
            hid_t g = H5Gcreate2(loc, buf, H5P_DEFAULT, gcpl, H5P_DEFAULT);
            if (g < 0)
                MS_FAIL(MS_EIO, "cannot create %s: %s", ms_h5_where(loc, buf), h5_reason());
            H5Gclose(g);
        }
        *p = '/';
    }
done:
    H5Pclose(gcpl);
    return st;
}

/* ms_h5_write and ms_h5_write_checked: fletcher32 adds HDF5's checksum filter (chunked). */
static ms_status_t write_ds(hid_t loc, const char *name, hid_t memtype, int rank,
                            const hsize_t *dims, const void *data, const hsize_t *chunk,
                            int deflate, int fletcher32)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hid_t ds = H5I_INVALID_HID;
    MS_TRY(make_groups(loc, name));
    space = H5Screate_simple(rank, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0); /* no timestamps: same content, same bytes */
    if (space < 0 || dcpl < 0)
        MS_FAIL(MS_EIO, "cannot prepare %s: %s", ms_h5_where(loc, name), h5_reason());
    hsize_t total = 1;
    for (int d = 0; d < rank; d++)
        total *= dims[d];
    if (chunk && total > 0) {
        if (H5Pset_chunk(dcpl, rank, chunk) < 0)
            MS_FAIL(MS_EARG, "bad chunk shape for %s", ms_h5_where(loc, name));
        if (fletcher32)
            H5Pset_fletcher32(dcpl);
        if (deflate > 0) {
            H5Pset_shuffle(dcpl);
            H5Pset_deflate(dcpl, (unsigned)deflate);
        }
    }
    ds = H5Dcreate2(loc, name, memtype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EIO, "cannot create %s: %s", ms_h5_where(loc, name), h5_reason());
    if (total > 0 && H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        MS_FAIL(MS_EIO, "cannot write %s: %s", ms_h5_where(loc, name), h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return st;
}

ms_status_t ms_h5_write(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                        const void *data, const hsize_t *chunk, int deflate)
{
    return write_ds(loc, name, memtype, rank, dims, data, chunk, deflate, 0);
}

ms_status_t ms_h5_write_checked(hid_t loc, const char *name, hid_t memtype, int rank,
                                const hsize_t *dims, const void *data)
{
    /* chunks of whole rows along the first dimension, at most about 4 MiB each (HDF5 takes
     * at most 4 GiB per chunk; a checksum per few MiB also says where damage is) */
    hsize_t chunk[8];
    size_t row = H5Tget_size(memtype);
    for (int d = 1; d < rank; d++) {
        chunk[d] = dims[d] ? dims[d] : 1;
        row *= (size_t)chunk[d];
    }
    if (rank > 0) {
        hsize_t rows = (hsize_t)((4u << 20) / (row ? row : 1));
        if (rows > dims[0])
            rows = dims[0];
        chunk[0] = rows ? rows : 1;
    }
    return write_ds(loc, name, memtype, rank, dims, data, rank > 0 ? chunk : NULL, 0, 1);
}

ms_status_t ms_h5_dims(hid_t loc, const char *name, int *rank, hsize_t *dims)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t ds = H5I_INVALID_HID, space = H5I_INVALID_HID;
    if (!ms_h5_exists(loc, name))
        MS_FAIL(MS_EFORMAT, "%s is missing", ms_h5_where(loc, name));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EFORMAT, "cannot open %s: %s", ms_h5_where(loc, name), h5_reason());
    space = H5Dget_space(ds);
    int r = H5Sget_simple_extent_ndims(space);
    if (r < 0 || r > 8)
        MS_FAIL(MS_EFORMAT, "%s has rank %d (at most 8 expected)", ms_h5_where(loc, name), r);
    H5Sget_simple_extent_dims(space, dims, NULL);
    *rank = r;
done:
    if (space >= 0)
        H5Sclose(space);
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

static void dims_text(char *buf, size_t n, int rank, const hsize_t *dims)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < rank && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", d ? ", " : "",
                              (unsigned long long)dims[d]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

/* ------------------------------------------------------------------ every byte read was written */

/* HDF5 answers a read of storage that was never written with the fill value (zeros): a file
 * made by another tool that declared /images but wrote only some of it would read as black
 * images with exit 0. Before any read, the part read must exist on disk. */

/* Layout and filters of a dataset; only_deflate: every filter is one whose output is at most
 * about 1032 times smaller than its input (deflate, shuffle, fletcher32). */
static ms_status_t ds_layout(hid_t ds, const char *what, H5D_layout_t *layout, int *rank,
                             hsize_t *chunk, int *nfilters, int *only_deflate)
{
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0)
        return MS_ERR(MS_EFORMAT, "cannot read the layout of %s: %s", what, h5_reason());
    *layout = H5Pget_layout(dcpl);
    *nfilters = 0;
    *only_deflate = 1;
    if (*layout == H5D_CHUNKED) {
        *rank = H5Pget_chunk(dcpl, 8, chunk);
        *nfilters = H5Pget_nfilters(dcpl);
        for (int f = 0; f < *nfilters; f++) {
            unsigned flags, cd[8], cfg;
            size_t ncd = 8;
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)f, &flags, &ncd, cd, 0, NULL, &cfg);
            if (id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE &&
                id != H5Z_FILTER_FLETCHER32)
                *only_deflate = 0;
        }
    }
    H5Pclose(dcpl);
    if (*layout == H5D_VIRTUAL)
        return MS_ERR(MS_EFORMAT, "%s is a virtual dataset: not read, because a source file "
                      "that is missing reads as fill values (copy the data into the file)",
                      what);
    if (*layout == H5D_CHUNKED && *rank < 1)
        return MS_ERR(MS_EFORMAT, "cannot read the chunk shape of %s", what);
    return MS_OK;
}

ms_status_t ms_h5_check_region(hid_t ds, const char *what, int rank, const hsize_t *start,
                               const hsize_t *count)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    H5D_layout_t layout;
    hsize_t chunk[8];
    int crank = 0, nf, only;
    MS_TRY(ds_layout(ds, what, &layout, &crank, chunk, &nf, &only));
    for (int d = 0; d < rank; d++)
        if (!count[d])
            return MS_OK;
    if (layout == H5D_CONTIGUOUS) {
        H5D_space_status_t ss;
        if (H5Dget_space_status(ds, &ss) < 0 || ss != H5D_SPACE_STATUS_ALLOCATED)
            MS_FAIL(MS_EFORMAT, "%s was never written (no storage allocated: it would read as "
                    "fill values)", what);
    } else if (layout == H5D_CHUNKED) {
        if (crank != rank)
            MS_FAIL(MS_EFORMAT, "%s: chunks of rank %d for a dataset of rank %d", what, crank,
                    rank);
        /* every chunk the window touches, odometer order */
        hsize_t lo[8], hi[8], at[8];
        for (int d = 0; d < rank; d++) {
            lo[d] = start[d] / chunk[d] * chunk[d];
            hi[d] = start[d] + count[d] - 1;
            at[d] = lo[d];
        }
        for (;;) {
            unsigned mask = 0;
            haddr_t addr = HADDR_UNDEF;
            hsize_t size = 0;
            if (H5Dget_chunk_info_by_coord(ds, at, &mask, &addr, &size) < 0)
                MS_FAIL(MS_EFORMAT, "%s: cannot locate a chunk: %s", what, h5_reason());
            if (addr == HADDR_UNDEF || size == 0) {
                char a[128];
                dims_text(a, sizeof a, rank, at);
                MS_FAIL(MS_EFORMAT, "%s: the chunk at %s was never written (it would read as "
                        "fill values)", what, a);
            }
            int d = rank - 1;
            while (d >= 0 && at[d] + chunk[d] > hi[d]) {
                at[d] = lo[d];
                d--;
            }
            if (d < 0)
                break;
            at[d] += chunk[d];
        }
    }
done:
    return st;
}

ms_status_t ms_h5_check_stored(hid_t loc, const char *name)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t ds = H5I_INVALID_HID, space = H5I_INVALID_HID, type = H5I_INVALID_HID;
    char what[1024];
    snprintf(what, sizeof what, "%s", ms_h5_where(loc, name));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EFORMAT, "cannot open %s: %s", what, h5_reason());
    space = H5Dget_space(ds);
    type = H5Dget_type(ds);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[8], zero[8] = {0};
    if (rank < 0 || rank > 8 || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        MS_FAIL(MS_EFORMAT, "%s: cannot read its shape", what);
    double n = 1;
    for (int d = 0; d < rank; d++)
        n *= (double)dims[d];
    if (n == 0)
        goto done;
    H5D_layout_t layout;
    hsize_t chunk[8];
    int crank = 0, nf, only;
    MS_TRY(ds_layout(ds, what, &layout, &crank, chunk, &nf, &only));
    if (layout == H5D_CHUNKED) {
        /* all chunks counted in one walk of the index (about a microsecond each) */
        double want = 1;
        for (int d = 0; d < rank; d++)
            want *= (double)((dims[d] + chunk[d] - 1) / chunk[d]);
        hsize_t have = 0;
        if (H5Dget_num_chunks(ds, space, &have) < 0)
            MS_FAIL(MS_EFORMAT, "%s: cannot count its chunks: %s", what, h5_reason());
        if ((double)have < want)
            MS_FAIL(MS_EFORMAT, "%s: only %llu of its %.0f chunks were written (the rest would "
                    "read as fill values)", what, (unsigned long long)have, want);
        /* a declared size that its stored bytes cannot hold is damage (or a trap), found
         * before anything is allocated for it */
        double bytes = n * (double)H5Tget_size(type), stored = (double)H5Dget_storage_size(ds);
        if (nf > 0 && only && bytes > 1100.0 * stored + 1e6)
            MS_FAIL(MS_EFORMAT, "%s declares %.0f bytes but stores only %.0f, more than deflate "
                    "can compress: the file is damaged", what, bytes, stored);
    } else {
        MS_TRY(ms_h5_check_region(ds, what, rank, zero, dims));
    }
done:
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

ms_status_t ms_h5_read(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                       void *buf)
{
    ms_status_t st = MS_OK;
    hid_t ds = H5I_INVALID_HID;
    int r;
    hsize_t have[8];
    MS_TRY(ms_h5_dims(loc, name, &r, have));
    int same = r == rank;
    for (int d = 0; same && d < rank; d++)
        same = have[d] == dims[d];
    if (!same) {
        char a[128], b[128];
        dims_text(a, sizeof a, r, have);
        dims_text(b, sizeof b, rank, dims);
        MS_FAIL(MS_ESHAPE, "%s has shape %s, expected %s", ms_h5_where(loc, name), a, b);
    }
    MS_TRY(ms_h5_check_stored(loc, name));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0 || H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read %s: %s", ms_h5_where(loc, name), h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

ms_status_t ms_h5_label_dims(hid_t loc, const char *name, const char *const *labels)
{
    ms_status_t st = MS_OK;
    int rank;
    hsize_t dims[8];
    hid_t ds = H5I_INVALID_HID;
    MS_TRY(ms_h5_dims(loc, name, &rank, dims));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        MS_FAIL(MS_EIO, "cannot open %s: %s", ms_h5_where(loc, name), h5_reason());
    for (int d = 0; d < rank; d++)
        if (H5DSset_label(ds, (unsigned)d, labels[d]) < 0)
            MS_FAIL(MS_EIO, "cannot label dimension %d of %s: %s", d, ms_h5_where(loc, name),
                    h5_reason());
done:
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

/* A fixed-length UTF-8 string type wide enough for every string (at least 1 byte). */
static hid_t fixed_str_type(size_t n, const char *const *s)
{
    size_t w = 1;
    for (size_t i = 0; i < n; i++) {
        size_t l = s[i] ? strlen(s[i]) + 1 : 1;
        if (l > w)
            w = l;
    }
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, w);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* Packs strings into a fixed-width buffer for writing. */
static char *pack_strings(size_t n, const char *const *s, size_t w)
{
    char *buf = calloc(n ? n : 1, w);
    if (buf)
        for (size_t i = 0; i < n; i++)
            if (s[i])
                memcpy(buf + i * w, s[i], strlen(s[i]));
    return buf;
}

ms_status_t ms_h5_write_strings(hid_t loc, const char *name, size_t n, const char *const *s)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    hid_t t = fixed_str_type(n, s);
    char *buf = pack_strings(n, s, H5Tget_size(t));
    if (!buf)
        MS_FAIL(MS_ENOMEM, "out of memory writing %s", name);
    hsize_t dims[1] = {n};
    MS_TRY(ms_h5_write(loc, name, t, 1, dims, buf, NULL, 0));
done:
    free(buf);
    H5Tclose(t);
    return st;
}

/* Reads n strings from a dataset or attribute whose type is ftype, via rd(memtype, buf). */
typedef herr_t (*read_fn)(hid_t obj, hid_t memtype, void *buf);
static herr_t dread(hid_t obj, hid_t mt, void *buf)
{
    return H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}
static herr_t aread(hid_t obj, hid_t mt, void *buf) { return H5Aread(obj, mt, buf); }

static ms_status_t read_strings_obj(hid_t obj, hid_t ftype, hid_t space, read_fn rd, size_t n,
                                    const char *what, char ***out)
{
    ms_status_t st = MS_OK;
    char **res = NULL;
    char *raw = NULL;
    hid_t mt = H5I_INVALID_HID;
    if (H5Tget_class(ftype) != H5T_STRING)
        MS_FAIL(MS_EFORMAT, "%s is not a string", what);
    MS_ALLOC(res, n ? n : 1, "strings");
    if (H5Tis_variable_str(ftype) > 0) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        char **v = NULL;
        MS_ALLOC(v, n ? n : 1, "strings");
        if (rd(obj, mt, v) < 0) {
            free(v);
            MS_FAIL(MS_EFORMAT, "cannot read %s: %s", what, h5_reason());
        }
        for (size_t i = 0; i < n; i++)
            res[i] = strdup(v[i] ? v[i] : "");
        H5Dvlen_reclaim(mt, space, H5P_DEFAULT, v);
        free(v);
    } else {
        size_t w = H5Tget_size(ftype);
        /* the width comes from the file: n strings of it must fit in memory */
        MS_TRY(ms_io_check_memory(what, "its strings", (double)n * ((double)w + 1)));
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        MS_ALLOC(raw, (n ? n : 1) * (w + 1), "strings");
        if (rd(obj, mt, raw) < 0)
            MS_FAIL(MS_EFORMAT, "cannot read %s: %s", what, h5_reason());
        for (size_t i = 0; i < n; i++)
            res[i] = strndup(raw + i * (w + 1), w);
    }
    for (size_t i = 0; i < n; i++)
        if (!res[i])
            MS_FAIL(MS_ENOMEM, "out of memory reading %s", what);
    *out = res;
    res = NULL;
done:
    if (res)
        ms_h5_free_strings(res, n);
    free(raw);
    if (mt >= 0)
        H5Tclose(mt);
    return st;
}

ms_status_t ms_h5_read_strings(hid_t loc, const char *name, size_t n, char ***out)
{
    ms_status_t st = MS_OK;
    hid_t ds = H5I_INVALID_HID, ft = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    int r;
    hsize_t dims[8];
    MS_TRY(ms_h5_dims(loc, name, &r, dims));
    if (r != 1 || dims[0] != n)
        MS_FAIL(MS_ESHAPE, "%s has %s%llu entries, expected %zu", ms_h5_where(loc, name),
                r != 1 ? "rank != 1 or " : "", (unsigned long long)dims[0], n);
    MS_TRY(ms_h5_check_stored(loc, name));
    ds = H5Dopen2(loc, name, H5P_DEFAULT);
    ft = H5Dget_type(ds);
    sp = H5Dget_space(ds);
    MS_TRY(read_strings_obj(ds, ft, sp, dread, n, ms_h5_where(loc, name), out));
done:
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    if (ds >= 0)
        H5Dclose(ds);
    return st;
}

void ms_h5_free_strings(char **s, size_t n)
{
    if (!s)
        return;
    for (size_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

/* Creates (replacing) attribute name of type t and shape space, writes buf. */
static ms_status_t attr_write(hid_t loc, const char *name, hid_t t, hid_t space, const void *buf)
{
    ms_status_t st = MS_OK;
    ms_h5_quiet();
    if (H5Aexists(loc, name) > 0)
        H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, t, buf) < 0)
        st = MS_ERR(MS_EIO, "cannot write attribute %s: %s", ms_h5_where(loc, name),
                    h5_reason());
    if (a >= 0)
        H5Aclose(a);
    return st;
}

ms_status_t ms_h5_attr_set_str(hid_t loc, const char *name, const char *value)
{
    const char *v[1] = {value};
    hid_t t = fixed_str_type(1, v);
    hid_t sp = H5Screate(H5S_SCALAR);
    char *buf = pack_strings(1, v, H5Tget_size(t));
    ms_status_t st = buf ? attr_write(loc, name, t, sp, buf)
                         : MS_ERR(MS_ENOMEM, "out of memory writing %s", name);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    return st;
}

ms_status_t ms_h5_attr_set_strings(hid_t loc, const char *name, size_t n, const char *const *s)
{
    hid_t t = fixed_str_type(n, s);
    hsize_t dims[1] = {n};
    hid_t sp = n ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_NULL);
    char *buf = pack_strings(n, s, H5Tget_size(t));
    ms_status_t st = buf ? attr_write(loc, name, t, sp, buf)
                         : MS_ERR(MS_ENOMEM, "out of memory writing %s", name);
    free(buf);
    H5Sclose(sp);
    H5Tclose(t);
    return st;
}

ms_status_t ms_h5_attr_set_int(hid_t loc, const char *name, long long value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    ms_status_t st = attr_write(loc, name, H5T_NATIVE_LLONG, sp, &value);
    H5Sclose(sp);
    return st;
}

ms_status_t ms_h5_attr_set_double(hid_t loc, const char *name, double value)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    ms_status_t st = attr_write(loc, name, H5T_NATIVE_DOUBLE, sp, &value);
    H5Sclose(sp);
    return st;
}

int ms_h5_attr_exists(hid_t loc, const char *name)
{
    ms_h5_quiet();
    return H5Aexists(loc, name) > 0;
}

/* Opens attribute name; *npoints its element count. */
static ms_status_t attr_open(hid_t loc, const char *name, hid_t *a, hid_t *t, hid_t *sp,
                             size_t *npoints)
{
    ms_h5_quiet();
    if (H5Aexists(loc, name) <= 0)
        return MS_ERR(MS_EFORMAT, "attribute %s is missing", ms_h5_where(loc, name));
    *a = H5Aopen(loc, name, H5P_DEFAULT);
    if (*a < 0)
        return MS_ERR(MS_EFORMAT, "cannot open attribute %s: %s", ms_h5_where(loc, name),
                      h5_reason());
    *t = H5Aget_type(*a);
    *sp = H5Aget_space(*a);
    hssize_t np = H5Sget_simple_extent_npoints(*sp);
    *npoints = np > 0 ? (size_t)np : 0;
    return MS_OK;
}

static void attr_close(hid_t a, hid_t t, hid_t sp)
{
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
}

ms_status_t ms_h5_attr_get_strings(hid_t loc, const char *name, size_t *n, char ***out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    if (H5Sget_simple_extent_type(sp) == H5S_NULL)
        np = 0;
    char what[1024];
    snprintf(what, sizeof what, "attribute %s", ms_h5_where(loc, name));
    MS_TRY(read_strings_obj(a, t, sp, aread, np, what, out));
    *n = np;
done:
    attr_close(a, t, sp);
    return st;
}

ms_status_t ms_h5_attr_get_str(hid_t loc, const char *name, char **out)
{
    ms_status_t st = MS_OK;
    char **s = NULL;
    size_t n = 0;
    MS_TRY(ms_h5_attr_get_strings(loc, name, &n, &s));
    if (n != 1)
        MS_FAIL(MS_EFORMAT, "attribute %s has %zu strings, expected one",
                ms_h5_where(loc, name), n);
    *out = s[0];
    s[0] = NULL;
done:
    ms_h5_free_strings(s, n);
    return st;
}

static ms_status_t attr_get_num(hid_t loc, const char *name, hid_t mt, void *out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    H5T_class_t c = H5Tget_class(t);
    if (np != 1 || (c != H5T_INTEGER && c != H5T_FLOAT))
        MS_FAIL(MS_EFORMAT, "attribute %s is not a single number", ms_h5_where(loc, name));
    if (H5Aread(a, mt, out) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read attribute %s: %s", ms_h5_where(loc, name),
                h5_reason());
done:
    attr_close(a, t, sp);
    return st;
}

ms_status_t ms_h5_attr_get_int(hid_t loc, const char *name, long long *out)
{
    return attr_get_num(loc, name, H5T_NATIVE_LLONG, out);
}

ms_status_t ms_h5_attr_get_double(hid_t loc, const char *name, double *out)
{
    return attr_get_num(loc, name, H5T_NATIVE_DOUBLE, out);
}

ms_status_t ms_h5_attr_get_doubles(hid_t loc, const char *name, size_t n, double *out)
{
    ms_status_t st = MS_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    size_t np = 0;
    MS_TRY(attr_open(loc, name, &a, &t, &sp, &np));
    H5T_class_t c = H5Tget_class(t);
    if (np != n || (c != H5T_INTEGER && c != H5T_FLOAT))
        MS_FAIL(MS_EFORMAT, "attribute %s holds %zu values%s; expected %zu numbers",
                ms_h5_where(loc, name), np,
                c == H5T_INTEGER || c == H5T_FLOAT ? "" : ", not numbers", n);
    if (H5Aread(a, H5T_NATIVE_DOUBLE, out) < 0)
        MS_FAIL(MS_EFORMAT, "cannot read attribute %s: %s", ms_h5_where(loc, name),
                h5_reason());
done:
    attr_close(a, t, sp);
    return st;
}
