/* Lists of class or channel names, as score and eval compare them (identity by name,
 * docs/RELIABILITY.md section 1): split from the checkpoint's '\n'-joined form, compared in
 * order, looked up, and printed for messages. */
#ifndef MS_NAMES_H
#define MS_NAMES_H

#include <stddef.h>

#include "engine/status.h"

/* '\n'-joined names into *n malloc'd strings (free with ms_names_free); "" or NULL: none. */
ms_status_t ms_names_split(const char *joined, char ***out, int *n);
void ms_names_free(char **v, int n);
/* 1 when both lists hold the same names in the same order. */
int ms_names_same(char *const *a, int na, char *const *b, int nb);
/* The index of name in v, or -1. */
int ms_names_index(const char *name, char *const *v, int n);
/* "'a', 'b', 'c'" ("none" for an empty list) into buf, cut with "..." when it does not fit. */
const char *ms_names_format(char *buf, size_t size, char *const *v, int n);

#endif
