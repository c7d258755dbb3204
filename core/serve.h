/* serve.h - dp-engine serve: triggers, the HTTP API and the worker pool on one libuv loop
 * (docs/triggers.md). */
#ifndef DP_SERVE_H
#define DP_SERVE_H

#include "engine.h"

/* Runs the service until SIGTERM/SIGINT. eng holds the configuration (its connections and Lua
 * state are not used: the loop and every worker open their own). Returns a process exit code:
 * 0 after a clean shutdown, 2 when it cannot start (configuration, metadata, listen address). */
int dp_serve_main(dp_engine *eng);

#endif
