/* inbox.c - file age and archive moves for connectors, and their dp.core binding. */
#include "inbox.h"
#include "rawfile.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int dp_file_info_get(const char *path, dp_file_info *out, dp_err *e) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    int code = errno == ENOENT ? DP_ENOTFOUND : DP_EIO;
    return dp_err_set(e, code, "%s: %s", path, strerror(errno));
  }
  if (!S_ISREG(sb.st_mode)) return dp_err_set(e, DP_EIO, "%s: not a regular file", path);
  out->size = (long long)sb.st_size;
  out->mtime = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec / 1e9;
  return 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Copies from into a new file to (created exclusively), fsynced. 0, or -1 with errno set;
 * EEXIST when to exists. */
static int copy_new(const char *from, const char *to) {
  int in = open(from, O_RDONLY), out = -1, rc = -1, saved = 0;
  char buf[65536];
  if (in < 0) return -1;
  out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (out < 0) goto cleanup;
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      goto cleanup;
    }
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        goto cleanup;
      }
      off += w;
    }
  }
  if (fsync(out) != 0) goto cleanup;
  rc = 0;
cleanup:
  saved = errno;
  if (out >= 0) close(out);
  if (rc != 0 && out >= 0) unlink(to);
  close(in);
  errno = saved;
  return rc;
}

int dp_file_move_into(const char *path, const char *dir, char *out, size_t outsz, dp_err *e) {
  int rc = dp_mkdirs(dir, e);
  if (rc) return rc;
  const char *slash = strrchr(path, '/');
  const char *name = slash ? slash + 1 : path;
  char src_dir[4096];
  snprintf(src_dir, sizeof src_dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
  for (int n = 0; n < 10000; n++) {
    if (n == 0) snprintf(out, outsz, "%s/%s", dir, name);
    else snprintf(out, outsz, "%s/%s.%d", dir, name, n);
    /* link() fails with EEXIST rather than replacing a file: no archived file is overwritten */
    if (link(path, out) == 0) {
      if (unlink(path) != 0) return dp_err_set(e, DP_EIO, "cannot remove %s after archiving it: %s", path, strerror(errno));
      fsync_dir(dir);
      fsync_dir(src_dir);
      return 0;
    }
    if (errno == EEXIST) continue;
    if (errno != EXDEV && errno != EPERM && errno != ENOTSUP && errno != EMLINK)
      return dp_err_set(e, DP_EIO, "cannot move %s to %s: %s", path, dir, strerror(errno));
    /* another file system (or no hard links there): copy, then remove the original */
    if (copy_new(path, out) != 0) {
      if (errno == EEXIST) continue;
      return dp_err_set(e, DP_EIO, "cannot copy %s to %s: %s", path, out, strerror(errno));
    }
    fsync_dir(dir);
    if (unlink(path) != 0) return dp_err_set(e, DP_EIO, "cannot remove %s after archiving it: %s", path, strerror(errno));
    fsync_dir(src_dir);
    return 0;
  }
  return dp_err_set(e, DP_EIO, "cannot move %s to %s: too many files named %s there", path, dir, name);
}

/* file_info(path) -> { size, mtime, age } | nil, err (age: seconds since the last change). */
static int l_file_info(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  dp_file_info fi;
  dp_err e;
  if (dp_file_info_get(path, &fi, &e)) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, (lua_Number)fi.size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, fi.mtime);
  lua_setfield(L, -2, "mtime");
  lua_pushnumber(L, (double)now.tv_sec + now.tv_nsec / 1e9 - fi.mtime);
  lua_setfield(L, -2, "age");
  return 1;
}

/* file_move(path, dir) -> final path | nil, err */
static int l_file_move(lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *dir = luaL_checkstring(L, 2);
  char out[4096];
  dp_err e;
  if (dp_file_move_into(path, dir, out, sizeof out, &e)) {
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    return 2;
  }
  lua_pushstring(L, out);
  return 1;
}

void dp_inbox_lua_register(lua_State *L) {
  static const luaL_Reg funcs[] = {{"file_info", l_file_info}, {"file_move", l_file_move}, {NULL, NULL}};
  luaL_register(L, NULL, funcs);
}
