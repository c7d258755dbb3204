/* cli.c - helpers shared by the subcommands. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int dp_cli_wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
  return 0;
}

int dp_cli_usage_error(const char *usage, const char *fmt, const char *arg) {
  fprintf(stderr, "dp-engine: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n\n%s", usage);
  return DP_EXIT_USAGE;
}

int dp_cli_fail_config(const dp_err *e) {
  fprintf(stderr, "dp-engine: %s\n", e->msg);
  return DP_EXIT_USAGE;
}
