/* Fuzz target: the CSV parser (io/csv.c) and the manifest layer above it (io/ingest.c, as
 * `ingest --dry-run` runs it: columns, milscreen's and CellProfiler LoadData's layouts, class
 * lists, the join; no TIFF is read and nothing written). Properties beyond "no crash": every
 * row has the header's field count and a line number that grows; a refusal carries a
 * message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/csv.h"
#include "io/ingest.h"
#include "tests/fuzz/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ms_csv_t t;
    ms_status_t st = ms_csv_parse(&t, "fuzz.csv", (const char *)data, size);
    if (st) {
        FUZZ_CHECK(ms_error_message()[0], "ms_csv_parse failed without a message");
        ms_error_clear();
    } else {
        int line = 0;
        for (int r = 0; r < t.nrows; r++) {
            FUZZ_CHECK(t.rows[r].nf == t.hdr.nf, "row %d has %d fields, the header %d", r,
                       t.rows[r].nf, t.hdr.nf);
            FUZZ_CHECK(t.rows[r].line > line, "row %d at line %d after line %d", r,
                       t.rows[r].line, line);
            line = t.rows[r].line;
            for (int j = 0; j < t.rows[r].nf; j++)
                FUZZ_CHECK(t.rows[r].f[j] != NULL, "row %d field %d is NULL", r, j);
        }
        ms_csv_free(&t);
    }
    ms_ingest_opts_t o = ms_ingest_defaults();
    o.dry_run = 1;
    o.log = NULL;
    st = ms_ingest_manifest_text("fuzz/manifest.csv", (const char *)data, size,
                                 "/nonexistent/ms-fuzz-out.h5", &o);
    if (st)
        FUZZ_CHECK(ms_error_message()[0], "the manifest was refused without a message");
    ms_error_clear();
    return 0;
}
