/* What every command shares: --config, --set, --help, --print-config, turning a status into
 * a message and an exit code, and printing only on rank 0. */
#ifndef MS_CLI_H
#define MS_CLI_H

#include <getopt.h>

#include "engine/config.h"
#include "engine/status.h"

#define MS_CLI_MAX_SETS 64

typedef struct {
    const char *cmd;           /* "train", ... */
    const char *config_path;   /* --config, or NULL */
    const char *sets[MS_CLI_MAX_SETS];
    int nsets;
    int print_config;          /* --print-config: print the resolved config and stop */
} ms_cli_t;

/* getopt_long entries for --config, --set, --help and --max-image-pixels (io/shard.h); ids
 * are MS_OPT_CONFIG etc. */
enum {
    MS_OPT_CONFIG = 1000,
    MS_OPT_SET,
    MS_OPT_HELP,
    MS_OPT_MAX_PIXELS,
    MS_OPT_PRINT_CONFIG,
    MS_OPT_FIRST_FREE
};
#define MS_CLI_COMMON_OPTIONS                                                          \
    {"config", required_argument, 0, MS_OPT_CONFIG},                                   \
        {"set", required_argument, 0, MS_OPT_SET}, {"help", no_argument, 0, MS_OPT_HELP}, \
    {                                                                                  \
        "max-image-pixels", required_argument, 0, MS_OPT_MAX_PIXELS                    \
    }

/* --print-config, for the commands that read a config (model, train, score, bench): add it
 * to the option table after MS_CLI_COMMON_OPTIONS. */
#define MS_CLI_PRINT_CONFIG_OPTION {"print-config", no_argument, 0, MS_OPT_PRINT_CONFIG}

/* Handles a common option; returns 1 if it was one, 0 if not, -1 on error. */
int ms_cli_common(ms_cli_t *cli, int opt, const char *arg);
/* Loads --config (or an empty config) and applies every --set; with --print-config the
 * config records every default that is read from then on (ms_config_record_defaults). */
ms_status_t ms_cli_config(const ms_cli_t *cli, ms_config_t **cfg);
/* --print-config: once the command has read every key it uses (and ms_config_check_used
 * passed), prints cfg as INI text to stdout, each key not given marked "; default" and each
 * from --set "; --set", so that the output is itself a config giving the same run. */
ms_status_t ms_cli_print_config(const ms_cli_t *cli, const ms_config_t *cfg, const char *origin);
/* Exit status of a command stopped by a signal after saving its state ("stopped, resumable"):
 * EX_TEMPFAIL of sysexits.h, distinct from 1 (failure) and 2 (usage); slurm/train.sbatch
 * requeues on it. */
#define MS_EXIT_INTERRUPTED 75
/* Prints "milscreen CMD: error: message" (and the trace with MS_TRACE=1); returns the exit
 * code for the status: 2 for usage and configuration errors, MS_EXIT_INTERRUPTED (75, the
 * message printed without "error:") for MS_EINTERRUPT, 1 otherwise. */
int ms_cli_fail(const char *cmd, ms_status_t st);
/* Exit code 2 with "try 'milscreen CMD --help'". */
int ms_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses the integer argument of --NAME: the whole of arg, within [lo, hi]. Returns 0, or
 * prints a usage error naming the option and returns -1. */
int ms_cli_int(const char *cmd, const char *name, const char *arg, long lo, long hi, int *out);
/* The long name of the option whose getopt value is opt in opts ({0}-terminated), or "?". */
const char *ms_cli_opt_name(const struct option *opts, int opt);
/* mkdir -p */
ms_status_t ms_mkdirs(const char *path);
/* Parses "WxHxC" or "WxH" (C defaults to def_c). */
int ms_cli_parse_size(const char *s, int *w, int *h, int *c, int def_c);

#endif
