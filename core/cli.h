/* cli.h - the subcommands of dp-engine, one file each (cmd_<name>.c), and the helpers they
 * share. main.c is the composition root and dispatches to them. */
#ifndef DP_CLI_H
#define DP_CLI_H

#include "engine.h"
#include "buf.h"

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
int dp_cmd_rollback(dp_engine *eng, int argc, char **argv);
int dp_cmd_connectors(dp_engine *eng, int argc, char **argv);
int dp_cmd_init(dp_engine *eng, int argc, char **argv);
int dp_cmd_doctor(dp_engine *eng, int argc, char **argv);
/* doctor when the configuration cannot be read (why: the engine home has no lua/): that one
 * check, failed with its fix */
int dp_cmd_doctor_without_home(const dp_err *why, int argc, char **argv);
int dp_cmd_show(dp_engine *eng, int argc, char **argv);
int dp_cmd_lineage(dp_engine *eng, int argc, char **argv);
int dp_cmd_retention(dp_engine *eng, int argc, char **argv);
int dp_cmd_forget(dp_engine *eng, int argc, char **argv);

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
/* Prints "dp-engine CMD: message" as dp_cli_exit does (a JSON line with DP_LOG_FORMAT=json) and
 * returns exit_code. */
int dp_cli_error(const char *cmd, int exit_code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints every row of r to stdout as aligned columns (a header line, values cut at 60). */
void dp_cli_print_table(PGresult *r);
/* Runs sql with its text parameters and prints the rows as a table, or (json) as one JSON array
 * of row objects (json_agg on the server). Returns 0 or the error in e. */
int dp_cli_query_print(PGconn *c, const char *sql, int n, const char *const *p, int json, dp_err *e);
/* The audited runs ids[0..n) as one JSON array, in that order, into out: each run is its
 * audit.system_run row with "layers" (system_layer_run rows) and "entities" (entity_layer_run
 * rows), what `runs show --json` prints and `run --json` prints the element of. */
int dp_cli_runs_json(PGconn *c, const char *const *ids, size_t n, dp_buf *out, dp_err *e);
/* Prints one run's document of dp_cli_runs_json on stdout as one JSON object, with the member
 * "key": value (JSON text) added when key is not NULL. */
int dp_cli_print_run_json(PGconn *c, const char *run_id, const char *key, const char *value, dp_err *e);
/* The ids of the model runs a gold run started (dp_gold_opts.ran), for --json. */
#define DP_CLI_GOLD_MAX 1024
typedef struct dp_cli_gold_ids {
  char ids[DP_CLI_GOLD_MAX][37];
  size_t n;
} dp_cli_gold_ids;
/* Those runs as dp_cli_runs_json's array into out. */
int dp_cli_gold_json(PGconn *c, const dp_cli_gold_ids *g, dp_buf *out, dp_err *e);
/* Prints the error of a configuration problem; returns DP_EXIT_USAGE. */
int dp_cli_fail_config(const dp_err *e);

#endif
