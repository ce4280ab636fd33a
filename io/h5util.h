/* Small HDF5 helpers shared by shards, checkpoints and output files: atomic create (temporary
 * name in the same folder, rename on commit), typed datasets and attributes with dims checks,
 * file locking off (DESIGN §4) and HDF5's own error printing silenced: every failure becomes an
 * ms_status_t message naming the file and the object. */
#ifndef MS_H5UTIL_H
#define MS_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/status.h"

/* Silences HDF5's automatic error printing for the calling thread (the threadsafe HDF5 keeps
 * one error stack per thread). Every function here calls it; call it yourself before calling
 * HDF5 directly from a new thread. */
void ms_h5_quiet(void);

/* Physical memory of this machine in bytes (UINT64_MAX when unknown). */
uint64_t ms_io_memory_bytes(void);
/* Resources are checked before they are taken: MS_ENOMEM "path: what would take X GiB, more
 * than the Y GiB of memory of this machine" when bytes exceeds the physical memory, so that
 * a size read from a file ends in a message, never in the kernel's out-of-memory killer. */
ms_status_t ms_io_check_memory(const char *path, const char *what, double bytes);

/* Words for the errno of a failed write or create, the way a user reads them: ENOSPC and
 * EDQUOT "no space left ...", EROFS "read-only file system", EACCES and EPERM "permission
 * denied (... read-only for this user)"; others strerror's. */
const char *ms_io_strerror(int e);
/* Why the last HDF5 call of this thread failed, in words: the errno of the system call under
 * it (HDF5's file driver records it) through ms_io_strerror, "checksum mismatch ..." for a
 * damaged checksummed dataset, else HDF5's own innermost description. Call it before any other
 * HDF5 call (ms_h5_where keeps the error stack, so both may be arguments of one message). */
const char *ms_h5_reason(void);

/* A file access property list with file locking off (H5Pset_file_locking, HDF5 >= 1.10.7;
 * older versions get HDF5_USE_FILE_LOCKING=FALSE in the environment). Caller closes it. */
hid_t ms_h5_fapl(void);

/* A file being written: created as "<dir>/.<name>.tmp.<host>.<pid>" and renamed to path by
 * commit. The first create in a folder removes the temporary files that writers killed on
 * this host left there (their process is gone) and reports, on stderr, those of other hosts
 * unchanged for ten minutes. Written files use the HDF5 1.8 format (checksummed metadata). */
typedef struct {
    hid_t id;   /* the open HDF5 file, or H5I_INVALID_HID */
    char *path; /* final name */
    char *tmp;  /* temporary name in the same folder */
} ms_h5file_t;

ms_status_t ms_h5_create(ms_h5file_t *f, const char *path);
/* Flushes, syncs, closes and renames to the final name. On failure (the message names the
 * file and says why: "no space left on the device", "read-only file system") the temporary
 * file is removed and the HDF5 file closed. Objects still open in the file are closed too. */
ms_status_t ms_h5_commit(ms_h5file_t *f);
/* Removes the temporary file and closes it for good (also after a failed write on a full
 * disk); safe on a zeroed or already committed file. */
void ms_h5_abort(ms_h5file_t *f);

/* Opens read-only (locking off); the message names the path when it is missing or not HDF5. */
ms_status_t ms_h5_open(hid_t *fid, const char *path);

/* "file.h5:/group/name" for messages (thread-local buffer, valid until the next call). */
const char *ms_h5_where(hid_t loc, const char *name);

/* 1 if the link exists (intermediate groups included), 0 if not. */
int ms_h5_exists(hid_t loc, const char *path);

/* Writes a dataset of memtype (H5T_NATIVE_FLOAT, _INT, _UINT8, ...) with dims; intermediate
 * groups are created. chunk: NULL for contiguous, else chunk dims; deflate: 0 none, 1..9 level
 * (with shuffle). The file type equals the memory type. */
ms_status_t ms_h5_write(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                        const void *data, const hsize_t *chunk, int deflate);
/* The same, chunked with HDF5's fletcher32 checksum on every chunk: any reader (h5py too, no
 * plugin) refuses bytes that changed after they were written, and ms_h5_read says so naming
 * the dataset. For data that must prove itself (checkpoints). */
ms_status_t ms_h5_write_checked(hid_t loc, const char *name, hid_t memtype, int rank,
                                const hsize_t *dims, const void *data);
/* Rank and dims (up to 8) of a dataset. */
ms_status_t ms_h5_dims(hid_t loc, const char *name, int *rank, hsize_t *dims);
/* Every byte read is a byte written: HDF5 reads storage that was never written as the fill
 * value (zeros), so before a read the part read must exist. MS_EFORMAT naming the dataset
 * when the window start..start+count-1 of dataset ds (what: its name for messages) touches a
 * chunk that was never written, or the dataset is contiguous and was never written, or it is
 * virtual (a missing source file reads as fill values). */
ms_status_t ms_h5_check_region(hid_t ds, const char *what, int rank, const hsize_t *start,
                               const hsize_t *count);
/* The same for the whole dataset (one walk of its chunk index), and a declared size its stored
 * bytes cannot hold (more than deflate compresses) refused: call it before allocating memory
 * sized by the dataset's shape. ms_h5_read and ms_h5_read_strings call it (the latter also
 * checks that the strings fit in memory: their width comes from the file). */
ms_status_t ms_h5_check_stored(hid_t loc, const char *name);
/* Reads a whole dataset converted to memtype after checking that its rank and dims equal the
 * expected ones and that it was written (ms_h5_check_stored). */
ms_status_t ms_h5_read(hid_t loc, const char *name, hid_t memtype, int rank, const hsize_t *dims,
                       void *buf);

/* Names the dimensions of dataset `name` under loc (HDF5 dimension scales' labels, which h5py
 * shows as f[name].dims[i].label and HDFView and ViTables as column names): labels[i] for
 * dimension i, as many as the dataset's rank. */
ms_status_t ms_h5_label_dims(hid_t loc, const char *name, const char *const *labels);

/* 1-D string datasets (fixed length UTF-8, null-terminated; either fixed or variable length
 * is read). read gives n malloc'd strings in one malloc'd array: free with ms_h5_free_strings. */
ms_status_t ms_h5_write_strings(hid_t loc, const char *name, size_t n, const char *const *s);
ms_status_t ms_h5_read_strings(hid_t loc, const char *name, size_t n, char ***out);
void ms_h5_free_strings(char **s, size_t n);

/* Attributes on loc (a file, group or dataset). Setting replaces an existing one. */
ms_status_t ms_h5_attr_set_str(hid_t loc, const char *name, const char *value);
ms_status_t ms_h5_attr_set_strings(hid_t loc, const char *name, size_t n, const char *const *s);
ms_status_t ms_h5_attr_set_int(hid_t loc, const char *name, long long value);
ms_status_t ms_h5_attr_set_double(hid_t loc, const char *name, double value);
/* A missing attribute is MS_EFORMAT naming it; ms_h5_attr_exists to test first. */
int ms_h5_attr_exists(hid_t loc, const char *name);
ms_status_t ms_h5_attr_get_str(hid_t loc, const char *name, char **out); /* malloc'd */
ms_status_t ms_h5_attr_get_strings(hid_t loc, const char *name, size_t *n, char ***out);
ms_status_t ms_h5_attr_get_int(hid_t loc, const char *name, long long *out);
ms_status_t ms_h5_attr_get_double(hid_t loc, const char *name, double *out);
/* A numeric attribute of exactly n values (any shape), as doubles: e.g. pixel_size_um. */
ms_status_t ms_h5_attr_get_doubles(hid_t loc, const char *name, size_t n, double *out);

#endif
