/* cli.h - the subcommands of dp-engine, one file each (cmd_<name>.c), and the helpers they
 * share. main.c is the composition root and dispatches to them. */
#ifndef DP_CLI_H
#define DP_CLI_H

#include "engine.h"

enum { DP_EXIT_OK = 0, DP_EXIT_RUN_FAILED = 1, DP_EXIT_USAGE = 2 };

typedef int (*dp_cmd_fn)(dp_engine *eng, int argc, char **argv);

int dp_cmd_migrate(dp_engine *eng, int argc, char **argv);
int dp_cmd_metadata(dp_engine *eng, int argc, char **argv);
int dp_cmd_run(dp_engine *eng, int argc, char **argv);
int dp_cmd_runs(dp_engine *eng, int argc, char **argv);
int dp_cmd_replay(dp_engine *eng, int argc, char **argv);
int dp_cmd_secrets(dp_engine *eng, int argc, char **argv);
int dp_cmd_gold(dp_engine *eng, int argc, char **argv);
int dp_cmd_serve(dp_engine *eng, int argc, char **argv);
int dp_cmd_prefect(dp_engine *eng, int argc, char **argv);

/* The layers of "raw", "raw,bronze", "all", ... (names: raw, bronze, silver, all) ORed into
 * *mask (DP_LAYER_* of run.h). Returns 0, or -1 when a name is not a layer. */
int dp_cli_layers(const char *arg, unsigned *mask);
/* When argv[i] is one of the options in opts (NULL-terminated) and no value follows it: prints
 * "option X needs a value" with the usage and returns DP_EXIT_USAGE; else 0. */
int dp_cli_missing_value(int argc, char **argv, int i, const char *const *opts, const char *usage);
/* "1 system" / "2 systems": n and the right form of the word, into buf. */
const char *dp_cli_count(char *buf, size_t cap, size_t n, const char *one, const char *many);
/* True when --help or -h is among the arguments. */
int dp_cli_wants_help(int argc, char **argv);
/* Prints "dp-engine: <fmt with its arguments>" and the usage to stderr; returns DP_EXIT_USAGE. */
int dp_cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The one way a command reports an error: prints "dp-engine CMD: <e's message>" to stderr and
 * returns the exit class of e's code (DP_ERRNO_MAP, error.h); a message with no code is 1. */
int dp_cli_exit(const char *cmd, const dp_err *e);
/* Prints the error of a configuration problem; returns DP_EXIT_USAGE. */
int dp_cli_fail_config(const dp_err *e);

#endif
