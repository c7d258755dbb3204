/* inbox.h - file operations on inbox folders that connectors need and Lua cannot do: the age of
 * a file (is it still being written?) and moving a processed file into an archive folder
 * without ever overwriting one that is there. */
#ifndef DP_INBOX_H
#define DP_INBOX_H

#include <stddef.h>
#include "error.h"

typedef struct lua_State lua_State;

typedef struct dp_file_info {
  long long size;
  double mtime; /* seconds since 1970 */
} dp_file_info;

/* Size and modification time of a regular file. Returns 0, DP_ENOTFOUND or DP_EIO. */
int dp_file_info_get(const char *path, dp_file_info *out, dp_err *e);

/* Moves the file at path into folder dir (created when needed) under its own name, or under
 * "<name>.1", "<name>.2", ... when that name is taken (never overwrites). A rename when both are
 * on one file system, else copy + fsync + unlink. Writes the final path to out (outsz bytes).
 * Returns 0, or DP_EIO with e naming the file and the reason. */
int dp_file_move_into(const char *path, const char *dir, char *out, size_t outsz, dp_err *e);

/* Registrar for dp.core (see luamod.c): file_info(path), file_move(path, dir). */
void dp_inbox_lua_register(lua_State *L);

#endif
