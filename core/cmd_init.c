/* cmd_init.c - dp-engine init system|connector (placeholder replaced below). */
#include "cli.h"
#include <stdio.h>
int dp_cmd_init(dp_engine *eng, int argc, char **argv) {
  (void)eng; (void)argc; (void)argv;
  fputs("dp-engine init: not built yet\n", stderr);
  return DP_EXIT_USAGE;
}
