/* inbox.h - the files of an inbox folder, as connectors reach them (ctx.files): listed, opened,
 * stat'ed and archived so that nothing outside the folder is ever reached.
 *
 * Every function opens the inbox folder itself (O_NOFOLLOW: a symbolic link as the folder is
 * refused) and works relative to that open folder (openat, fstatat, linkat), so there is no
 * window between a check and the use of what was checked. A symbolic link in the inbox is
 * refused with an error, unless the system opts in (follow: "follow_symlinks": true); then the
 * link is followed, and the file it leads to must be a regular file inside the inbox, checked on
 * the opened file (the path the kernel has for its fd, /proc/self/fd). FIFOs, devices and
 * sockets are never opened for reading (O_NONBLOCK, then fstat). docs/connectors.md, "Symbolic
 * links", states the rule for users. Names and paths in error messages are escaped (log.h). */
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

/* Opens file name (namelen bytes: a NUL inside is refused) of folder inbox for reading. *out
 * gets an fd the caller owns (close it). Returns 0, DP_EINVAL (not a plain file name),
 * DP_ENOTFOUND (no such file, or no such inbox) or DP_EIO (a link that is refused, not a regular
 * file, an I/O error), with e naming the file and the inbox. */
int dp_inbox_open(const char *inbox, const char *name, size_t namelen, int follow, int *out, dp_err *e);
/* Size and modification time of file name of folder inbox, checked as dp_inbox_open does. */
int dp_inbox_stat(const char *inbox, const char *name, size_t namelen, int follow, dp_file_info *out, dp_err *e);
/* The names of the regular files of folder inbox that match glob (fnmatch, no flags), sorted
 * by strcmp. Folders, FIFOs, devices and sockets are skipped; a matching symbolic link fails
 * the listing unless follow (then a link to a regular file inside the inbox is listed, a link
 * to a folder skipped, any other fails). *names (n of them) is the caller's: free it with
 * dp_inbox_names_free. Returns 0, DP_ENOTFOUND (no inbox), DP_EIO, DP_ENOMEM. */
int dp_inbox_list(const char *inbox, const char *glob, int follow, char ***names, size_t *n, dp_err *e);
void dp_inbox_names_free(char **names, size_t n);
/* Moves file name of folder inbox into folder archive (created when needed; without follow, a
 * symbolic link as the archive folder is refused) under its own name, or "<name>.1", ... when
 * that is taken (never overwrites). The entry itself moves: with follow, a link moves as a link.
 * A rename when both are on one file system, else copy + fsync + unlink. Writes the final path
 * to out (outsz bytes). Returns 0, DP_EINVAL, DP_ENOTFOUND or DP_EIO with e naming the file. */
int dp_inbox_archive(const char *inbox, const char *name, size_t namelen, const char *archive, int follow, char *out,
                     size_t outsz, dp_err *e);

/* Moves the file at path into folder dir (created when needed) as dp_inbox_archive does, for
 * trusted paths (the folders are followed). Returns 0, DP_ENOTFOUND or DP_EIO. */
int dp_file_move_into(const char *path, const char *dir, char *out, size_t outsz, dp_err *e);

/* Registrar for dp.core (see luamod.c): file_info(path), file_move(path, dir),
 * inbox_list(inbox, glob, follow), inbox_open(inbox, name, follow) -> reader (reader:line(),
 * reader:read([n]), reader:close()), inbox_stat(inbox, name, follow),
 * inbox_archive(inbox, name, archive, follow), escape_text(s) (dp_log_escape's text form).
 * Failures return nil, message, code name. */
void dp_inbox_lua_register(lua_State *L);

#endif
