/* INI configuration (its own parser, no line length limit) with typed, range-checked getters. Every entry remembers the
 * file and line it came from (or "--set"), getters mark entries used, and
 * ms_config_check_used() turns any key nobody asked for into an error naming its place. */
#ifndef MS_CONFIG_H
#define MS_CONFIG_H

#include <stddef.h>

#include "engine/status.h"

typedef struct ms_config ms_config_t;

ms_status_t ms_config_load(ms_config_t **cfg, const char *path);
ms_status_t ms_config_parse(ms_config_t **cfg, const char *text, const char *origin);
/* The same over len bytes of text (a NUL byte in them is an error): what fuzzers call. */
ms_status_t ms_config_parse_n(ms_config_t **cfg, const char *text, size_t len,
                              const char *origin);
/* Applies "section.key=value" (the --set option); replaces an existing value. Blanks around
 * the value are dropped, as the parser does; names are letters, digits, '_', '-'; a value with
 * a control character or a ';' after a blank (which would not read back) is refused. */
ms_status_t ms_config_set(ms_config_t *cfg, const char *assignment);
void ms_config_free(ms_config_t *cfg);

/* Sections in order of first appearance. */
int ms_config_nsections(const ms_config_t *cfg);
const char *ms_config_section(const ms_config_t *cfg, int i);
int ms_config_has(const ms_config_t *cfg, const char *sec, const char *key);
/* "file:line" of an entry ("--set sec.key" for one from the command line, "default" for one
 * recorded by ms_config_record_defaults), or of the section header when key is NULL. */
const char *ms_config_where(const ms_config_t *cfg, const char *sec, const char *key);

/* Getters: a missing key yields def; a present one must parse fully and lie in [lo, hi]. */
ms_status_t ms_config_int(ms_config_t *cfg, const char *sec, const char *key, long def,
                          long lo, long hi, long *out);
ms_status_t ms_config_real(ms_config_t *cfg, const char *sec, const char *key, double def,
                           double lo, double hi, double *out);
ms_status_t ms_config_bool(ms_config_t *cfg, const char *sec, const char *key, int def, int *out);
ms_status_t ms_config_str(ms_config_t *cfg, const char *sec, const char *key, const char *def,
                          const char **out);
/* names is NULL-terminated; *out is the index of the value; def must be one of names. */
ms_status_t ms_config_choice(ms_config_t *cfg, const char *sec, const char *key,
                             const char *def, const char *const *names, int *out);
/* Fails naming the first key that no getter asked for (a typo, or a key of another section). */
ms_status_t ms_config_check_used(const ms_config_t *cfg);
/* Marks a whole section as consumed by someone else (e.g. a command that ignores it). */
void ms_config_mark_section(ms_config_t *cfg, const char *sec);

/* From now on every getter that returns its default also records it as an entry (used, with
 * ms_config_where "default"), so that ms_config_text lists every key read: --print-config. */
void ms_config_record_defaults(ms_config_t *cfg);

/* The effective configuration as INI text (malloc'd), for checkpoints and run logs; it is
 * parsed back and compared before it is returned (MS_EINTERNAL if it would not read back). */
ms_status_t ms_config_text(const ms_config_t *cfg, char **text);

#endif
