/* inbox.c - the files of an inbox folder, opened so that nothing outside the folder is reached
 * (symbolic links refused, or followed only to a file inside it), archive moves that never
 * overwrite, and their dp.core binding. See inbox.h and docs/connectors.md ("Symbolic links"). */
#include "inbox.h"
#include "buf.h"
#include "log.h"
#include "rawfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHOWN_MAX 512 /* names and paths in messages: escaped (log.h), cut */

#define HINT "replace the link by the file, or set \"follow_symlinks\": true on the system"

int dp_file_info_get(const char *path, dp_file_info *out, dp_err *e) {
  struct stat sb;
  char sp[SHOWN_MAX];
  if (stat(path, &sb) != 0) {
    int code = errno == ENOENT ? DP_ENOTFOUND : DP_EIO;
    return dp_err_set(e, code, "%s: %s", dp_log_shown(path, sp, sizeof sp), strerror(errno));
  }
  if (!S_ISREG(sb.st_mode)) return dp_err_set(e, DP_EIO, "%s: not a regular file", dp_log_shown(path, sp, sizeof sp));
  out->size = (long long)sb.st_size;
  out->mtime = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec / 1e9;
  return 0;
}

/* A name of a file directly in a folder: not empty, no "/", no NUL, not "." or "..". */
static int check_name(const char *name, size_t len, dp_err *e) {
  if (len == 0 || strlen(name) != len || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    char sn[SHOWN_MAX];
    return dp_err_set(e, DP_EINVAL, "\"%s\" is not a file name in the inbox (no \"/\" or \"..\")",
                      dp_log_shown(name, sn, sizeof sn));
  }
  return 0;
}

/* Opens folder dir (trailing slashes ignored, so that they cannot make the last component
 * followed); without follow, a symbolic link as its last component is refused. what names the
 * folder in messages ("inbox", "archive"). */
static int open_dir(const char *dir, int follow, const char *what, int *out, dp_err *e) {
  char path[PATH_MAX], sp[SHOWN_MAX];
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  if (n == 0 || n >= sizeof path) return dp_err_set(e, DP_EINVAL, "%s folder path is empty or too long", what);
  memcpy(path, dir, n);
  path[n] = '\0';
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
  if (fd >= 0) {
    *out = fd;
    return 0;
  }
  int err = errno;
  struct stat sb;
  dp_log_shown(path, sp, sizeof sp);
  if (!follow && (err == ELOOP || err == ENOTDIR) && lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode))
    return dp_err_set(e, DP_EIO,
                      "the %s folder %s is a symbolic link, and symbolic links are not followed (point the "
                      "system's %s at the real folder, or set \"follow_symlinks\": true on the system)",
                      what, sp, what);
  if (err == ENOENT) return dp_err_set(e, DP_ENOTFOUND, "cannot open folder %s", sp);
  return dp_err_set(e, DP_EIO, "cannot open folder %s: %s", sp, strerror(err));
}

/* The path the kernel has for an open fd (after every link), from /proc/self/fd. */
static int fd_path(int fd, char *out, size_t cap) {
  char p[64];
  snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(p, out, cap - 1);
  if (n < 0 || (size_t)n >= cap - 1) return -1;
  out[n] = '\0';
  return 0;
}

/* Is the open file fd inside the open folder dirfd (at any depth), by the paths the kernel has
 * for both (no window between checking and using: these are the opened files themselves)? */
static int inside(int dirfd, int fd, char *target, size_t cap, dp_err *e) {
  char dir[PATH_MAX];
  if (fd_path(dirfd, dir, sizeof dir) != 0 || fd_path(fd, target, cap) != 0)
    return dp_err_set(e, DP_EIO, "cannot tell where a symbolic link leads (/proc/self/fd is not readable): "
                                 "follow_symlinks needs /proc");
  size_t dl = strlen(dir);
  if (dl == 1) return 1; /* the inbox is "/" */
  return strncmp(target, dir, dl) == 0 && target[dl] == '/';
}

/* Opens name in the open folder dirfd (inbox: its path, for messages) for reading: a regular
 * file, not a symbolic link (follow: a link to a file inside the folder). *out: the fd (owned by
 * the caller), blocking. Returns 0, DP_ENOTFOUND, DP_EINVAL or DP_EIO. */
static int open_in(int dirfd, const char *inbox, const char *name, int follow, int *out, dp_err *e) {
  char sn[SHOWN_MAX], si[SHOWN_MAX];
  dp_log_shown(name, sn, sizeof sn);
  dp_log_shown(inbox, si, sizeof si);
  /* O_NONBLOCK: a FIFO planted under a file's name must not hang the run (refused below) */
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
  if (fd < 0) {
    int err = errno;
    struct stat sb;
    int link = fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode);
    if (link && !follow) return dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is a symbolic link, and symbolic links are not followed (" HINT ")", sn, si);
    if (link && err == ENOENT) return dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is a symbolic link to a file that does not exist", sn, si);
    if (link && err == ELOOP) return dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is a symbolic link in a loop", sn, si);
    if (err == ENOENT) return dp_err_set(e, DP_ENOTFOUND, "no file \"%s\" in inbox %s", sn, si);
    return dp_err_set(e, DP_EIO, "cannot open \"%s\" in inbox %s: %s", sn, si, strerror(err));
  }
  int rc = 0;
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot read \"%s\" in inbox %s: %s", sn, si, strerror(errno));
    goto cleanup;
  }
  if (follow) {
    char target[PATH_MAX], st[SHOWN_MAX];
    int in = inside(dirfd, fd, target, sizeof target, e);
    if (in < 0) { rc = in; goto cleanup; }
    if (!in) {
      rc = dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is a symbolic link to %s, outside the inbox: not read "
                                 "(follow_symlinks follows only links that stay inside the inbox)",
                      sn, si, dp_log_shown(target, st, sizeof st));
      goto cleanup;
    }
  }
  if (!S_ISREG(sb.st_mode)) {
    rc = dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is %s, not a regular file", sn, si,
                    S_ISDIR(sb.st_mode) ? "a folder" : S_ISFIFO(sb.st_mode) ? "a named pipe" : "a device or socket");
    goto cleanup;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    rc = dp_err_set(e, DP_EIO, "cannot read \"%s\" in inbox %s: %s", sn, si, strerror(errno));
    goto cleanup;
  }
cleanup:
  if (rc) close(fd);
  else *out = fd;
  return rc;
}

int dp_inbox_open(const char *inbox, const char *name, size_t namelen, int follow, int *out, dp_err *e) {
  int dirfd = -1, rc = check_name(name, namelen, e);
  if (rc == 0) rc = open_dir(inbox, follow, "inbox", &dirfd, e);
  if (rc == 0) rc = open_in(dirfd, inbox, name, follow, out, e);
  if (dirfd >= 0) close(dirfd);
  return rc;
}

int dp_inbox_stat(const char *inbox, const char *name, size_t namelen, int follow, dp_file_info *out, dp_err *e) {
  int fd = -1, rc = dp_inbox_open(inbox, name, namelen, follow, &fd, e);
  if (rc) return rc;
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    char sn[SHOWN_MAX];
    rc = dp_err_set(e, DP_EIO, "cannot read \"%s\": %s", dp_log_shown(name, sn, sizeof sn), strerror(errno));
  } else {
    out->size = (long long)sb.st_size;
    out->mtime = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec / 1e9;
  }
  close(fd);
  return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void dp_inbox_names_free(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

int dp_inbox_list(const char *inbox, const char *glob, int follow, char ***names_out, size_t *n_out, dp_err *e) {
  int dirfd = -1, rc = open_dir(inbox, follow, "inbox", &dirfd, e);
  char **names = NULL;
  size_t n = 0, cap = 0;
  DIR *d = NULL;
  if (rc) return rc;
  int dfd = dup(dirfd);
  if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
    if (dfd >= 0) close(dfd);
    char si[SHOWN_MAX];
    rc = dp_err_set(e, DP_EIO, "cannot list folder %s: %s", dp_log_shown(inbox, si, sizeof si), strerror(errno));
    goto cleanup;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *nm = de->d_name;
    if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0'))) continue;
    if (fnmatch(glob, nm, 0) != 0) continue;
    struct stat sb;
    if (fstatat(dirfd, nm, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue; /* gone since readdir */
    if (S_ISLNK(sb.st_mode)) {
      /* a link to a folder (or a device, ...) is skipped like a folder; any other link must
       * be followable to a regular file inside the inbox, or the listing fails */
      struct stat tb;
      if (follow && fstatat(dirfd, nm, &tb, 0) == 0 && !S_ISREG(tb.st_mode)) continue;
      int fd = -1;
      rc = open_in(dirfd, inbox, nm, follow, &fd, e);
      if (rc) goto cleanup;
      close(fd);
    } else if (!S_ISREG(sb.st_mode)) {
      continue;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **p = realloc(names, cap * sizeof *p);
      if (!p) { rc = dp_err_set(e, DP_ENOMEM, "out of memory while listing an inbox"); goto cleanup; }
      names = p;
    }
    if ((names[n] = strdup(nm)) == NULL) { rc = dp_err_set(e, DP_ENOMEM, "out of memory while listing an inbox"); goto cleanup; }
    n++;
  }
  if (n) qsort(names, n, sizeof *names, cmp_str);
cleanup:
  if (d) closedir(d);
  close(dirfd);
  if (rc) {
    dp_inbox_names_free(names, n);
    return rc;
  }
  *names_out = names;
  *n_out = n;
  return 0;
}

/* Copies the regular file name in srcfd into a new file newname in dstfd (created exclusively,
 * never through a link), fsynced. 0, or -1 with errno set; EEXIST when newname exists. */
static int copy_new(int srcfd, const char *name, int dstfd, const char *newname) {
  int in = openat(srcfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK), out = -1, rc = -1, saved = 0;
  char buf[65536];
  struct stat sb;
  if (in < 0) return -1;
  if (fstat(in, &sb) != 0) goto cleanup;
  if (!S_ISREG(sb.st_mode)) { errno = EINVAL; goto cleanup; }
  out = openat(dstfd, newname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (out < 0) goto cleanup;
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
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
  if (rc != 0 && out >= 0) unlinkat(dstfd, newname, 0);
  close(in);
  errno = saved;
  return rc;
}

/* Recreates the symbolic link name of srcfd as newname in dstfd. 0, or -1 with errno set. */
static int copy_link(int srcfd, const char *name, int dstfd, const char *newname) {
  char target[PATH_MAX];
  ssize_t n = readlinkat(srcfd, name, target, sizeof target - 1);
  if (n < 0) return -1;
  target[n] = '\0';
  return symlinkat(target, dstfd, newname);
}

/* Moves entry name of folder srcfd (src: its path, for messages) into folder dstfd (dst: its
 * path) under its own name or "<name>.N", never replacing a file; the entry itself moves (a
 * symbolic link stays a link). Writes dst/<final name> to out. */
static int move_at(int srcfd, const char *src, const char *name, int dstfd, const char *dst, char *out,
                   size_t outsz, dp_err *e) {
  char sn[SHOWN_MAX], ss[SHOWN_MAX], sd[SHOWN_MAX], newname[NAME_MAX + 1];
  dp_log_shown(name, sn, sizeof sn);
  dp_log_shown(src, ss, sizeof ss);
  dp_log_shown(dst, sd, sizeof sd);
  struct stat sb;
  if (fstatat(srcfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
    return dp_err_set(e, errno == ENOENT ? DP_ENOTFOUND : DP_EIO, "cannot move %s/%s to %s: %s", ss, sn, sd, strerror(errno));
  for (int n = 0; n < 10000; n++) {
    int k = n == 0 ? snprintf(newname, sizeof newname, "%s", name) : snprintf(newname, sizeof newname, "%s.%d", name, n);
    if (k < 0 || (size_t)k >= sizeof newname)
      return dp_err_set(e, DP_EIO, "cannot move %s/%s to %s: the name is too long for a numbered copy", ss, sn, sd);
    snprintf(out, outsz, "%s/%s", dst, newname);
    /* linkat (flags 0: a link is linked, not followed) fails with EEXIST rather than replacing a
     * file: no archived file is overwritten */
    if (linkat(srcfd, name, dstfd, newname, 0) == 0) {
      if (unlinkat(srcfd, name, 0) != 0)
        return dp_err_set(e, DP_EIO, "cannot remove %s/%s after archiving it: %s", ss, sn, strerror(errno));
      fsync(dstfd);
      fsync(srcfd);
      return 0;
    }
    if (errno == EEXIST) continue;
    if (errno != EXDEV && errno != EPERM && errno != ENOTSUP && errno != EMLINK)
      return dp_err_set(e, DP_EIO, "cannot move %s/%s to %s: %s", ss, sn, sd, strerror(errno));
    /* another file system (or no hard links there): copy, then remove the original */
    if ((S_ISLNK(sb.st_mode) ? copy_link(srcfd, name, dstfd, newname) : copy_new(srcfd, name, dstfd, newname)) != 0) {
      if (errno == EEXIST) continue;
      return dp_err_set(e, DP_EIO, "cannot copy %s/%s to %s: %s", ss, sn, sd, strerror(errno));
    }
    fsync(dstfd);
    if (unlinkat(srcfd, name, 0) != 0)
      return dp_err_set(e, DP_EIO, "cannot remove %s/%s after archiving it: %s", ss, sn, strerror(errno));
    fsync(srcfd);
    return 0;
  }
  return dp_err_set(e, DP_EIO, "cannot move %s/%s to %s: too many files named %s there", ss, sn, sd, sn);
}

int dp_inbox_archive(const char *inbox, const char *name, size_t namelen, const char *archive, int follow, char *out,
                     size_t outsz, dp_err *e) {
  int srcfd = -1, dstfd = -1, rc = check_name(name, namelen, e);
  if (rc == 0) rc = open_dir(inbox, follow, "inbox", &srcfd, e);
  if (rc == 0) {
    struct stat sb;
    char sn[SHOWN_MAX], si[SHOWN_MAX];
    dp_log_shown(name, sn, sizeof sn);
    dp_log_shown(inbox, si, sizeof si);
    char sa[SHOWN_MAX];
    if (fstatat(srcfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
      rc = dp_err_set(e, errno == ENOENT ? DP_ENOTFOUND : DP_EIO, "cannot move %s/%s to %s: %s", si, sn,
                      dp_log_shown(archive, sa, sizeof sa), strerror(errno));
    else if (S_ISLNK(sb.st_mode) && !follow)
      rc = dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is a symbolic link, and symbolic links are not followed (" HINT ")", sn, si);
    else if (!S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode))
      rc = dp_err_set(e, DP_EIO, "\"%s\" in inbox %s is not a regular file", sn, si);
  }
  if (rc == 0) rc = dp_mkdirs(archive, e);
  if (rc == 0) rc = open_dir(archive, follow, "archive", &dstfd, e);
  if (rc == 0) rc = move_at(srcfd, inbox, name, dstfd, archive, out, outsz, e);
  if (srcfd >= 0) close(srcfd);
  if (dstfd >= 0) close(dstfd);
  return rc;
}

int dp_file_move_into(const char *path, const char *dir, char *out, size_t outsz, dp_err *e) {
  const char *slash = strrchr(path, '/');
  const char *name = slash ? slash + 1 : path;
  char src_dir[PATH_MAX];
  if (!slash) snprintf(src_dir, sizeof src_dir, ".");
  else if (slash == path) snprintf(src_dir, sizeof src_dir, "/");
  else snprintf(src_dir, sizeof src_dir, "%.*s", (int)(slash - path), path);
  int srcfd = -1, dstfd = -1, rc = check_name(name, strlen(name), e);
  if (rc == 0) rc = dp_mkdirs(dir, e);
  if (rc == 0) rc = open_dir(src_dir, 1, "source", &srcfd, e);
  if (rc == 0) rc = open_dir(dir, 1, "target", &dstfd, e);
  if (rc == 0) rc = move_at(srcfd, src_dir, name, dstfd, dir, out, outsz, e);
  if (srcfd >= 0) close(srcfd);
  if (dstfd >= 0) close(dstfd);
  return rc;
}

/* --- dp.core binding ------------------------------------------------------------------------ */

#define READER_MT "dp.inbox.reader"

/* A file opened in an inbox, read through a buffer. The userdata owns fd and buf. */
typedef struct reader {
  int fd;
  char *buf;
  size_t cap, pos, len;
  int eof;
} reader;

static reader *check_reader(lua_State *L) {
  reader *r = luaL_checkudata(L, 1, READER_MT);
  if (r->fd < 0) luaL_error(L, "reading a file that was closed");
  return r;
}

/* Reads more into r->buf (compacting, growing when full). Returns bytes read, 0 at the end. */
static size_t fill(lua_State *L, reader *r) {
  if (r->eof) return 0;
  if (r->pos > 0) {
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
  }
  if (r->len == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 65536;
    char *b = realloc(r->buf, cap);
    if (!b) luaL_error(L, "out of memory while reading a file");
    r->buf = b;
    r->cap = cap;
  }
  for (;;) {
    ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) luaL_error(L, "reading a file of the inbox: %s", strerror(errno));
    if (n == 0) r->eof = 1;
    r->len += (size_t)n;
    return (size_t)n;
  }
}

/* reader:line() -> the next line without its "\n" (a "\r" before it is kept) | nil at the end */
static int l_reader_line(lua_State *L) {
  reader *r = check_reader(L);
  size_t from = r->pos;
  for (;;) {
    char *nl = r->len > from ? memchr(r->buf + from, '\n', r->len - from) : NULL; /* buf is NULL at first */
    if (nl) {
      lua_pushlstring(L, r->buf + r->pos, (size_t)(nl - (r->buf + r->pos)));
      r->pos = (size_t)(nl - r->buf) + 1;
      return 1;
    }
    size_t seen = r->len - r->pos;
    if (fill(L, r) == 0) break;
    from = r->pos + seen;
  }
  if (r->pos == r->len) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, r->buf + r->pos, r->len - r->pos);
  r->pos = r->len;
  return 1;
}

/* reader:read([n]) -> up to n bytes (default: the rest of the file) | nil at the end */
static int l_reader_read(lua_State *L) {
  reader *r = check_reader(L);
  lua_Number w = luaL_optnumber(L, 2, -1);
  int all = !(w >= 0); /* also NaN */
  size_t want = all ? 0 : w > 1e15 ? (size_t)1e15 : (size_t)w, got = 0;
  luaL_Buffer lb;
  luaL_buffinit(L, &lb);
  while (all || got < want) {
    if (r->len == r->pos && fill(L, r) == 0) break;
    size_t take = r->len - r->pos;
    if (!all && take > want - got) take = want - got;
    luaL_addlstring(&lb, r->buf + r->pos, take);
    r->pos += take;
    got += take;
  }
  luaL_pushresult(&lb);
  if (got == 0 && (all || want > 0)) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  return 1;
}

static int l_reader_close(lua_State *L) {
  reader *r = luaL_checkudata(L, 1, READER_MT);
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  free(r->buf);
  r->buf = NULL;
  r->cap = r->len = r->pos = 0;
  return 0;
}

static int push_fail(lua_State *L, const dp_err *e) {
  lua_pushnil(L);
  lua_pushstring(L, e->msg);
  lua_pushstring(L, dp_err_name(e->code));
  return 3;
}

/* inbox_open(inbox, name, follow) -> reader | nil, err, code */
static int l_inbox_open(lua_State *L) {
  size_t nl;
  const char *inbox = luaL_checkstring(L, 1), *name = luaL_checklstring(L, 2, &nl);
  int follow = lua_toboolean(L, 3), fd = -1;
  dp_err e;
  reader *r = lua_newuserdata(L, sizeof *r); /* first, so that no error can leak the fd */
  memset(r, 0, sizeof *r);
  r->fd = -1;
  luaL_getmetatable(L, READER_MT);
  lua_setmetatable(L, -2);
  if (dp_inbox_open(inbox, name, nl, follow, &fd, &e)) return push_fail(L, &e);
  r->fd = fd;
  return 1;
}

static void push_info(lua_State *L, const dp_file_info *fi) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, (lua_Number)fi->size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, fi->mtime);
  lua_setfield(L, -2, "mtime");
  lua_pushnumber(L, (double)now.tv_sec + now.tv_nsec / 1e9 - fi->mtime);
  lua_setfield(L, -2, "age");
}

/* inbox_stat(inbox, name, follow) -> { size, mtime, age } | nil, err, code */
static int l_inbox_stat(lua_State *L) {
  size_t nl;
  const char *inbox = luaL_checkstring(L, 1), *name = luaL_checklstring(L, 2, &nl);
  dp_file_info fi;
  dp_err e;
  if (dp_inbox_stat(inbox, name, nl, lua_toboolean(L, 3), &fi, &e)) return push_fail(L, &e);
  push_info(L, &fi);
  return 1;
}

/* inbox_list(inbox, glob, follow) -> sorted names | nil, err, code */
static int l_inbox_list(lua_State *L) {
  const char *inbox = luaL_checkstring(L, 1), *glob = luaL_optstring(L, 2, "*");
  char **names = NULL;
  size_t n = 0;
  dp_err e;
  if (dp_inbox_list(inbox, glob, lua_toboolean(L, 3), &names, &n, &e)) return push_fail(L, &e);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  dp_inbox_names_free(names, n);
  return 1;
}

/* inbox_archive(inbox, name, archive, follow) -> final path | nil, err, code */
static int l_inbox_archive(lua_State *L) {
  size_t nl;
  const char *inbox = luaL_checkstring(L, 1), *name = luaL_checklstring(L, 2, &nl), *dir = luaL_checkstring(L, 3);
  char out[PATH_MAX + NAME_MAX + 2];
  dp_err e;
  if (dp_inbox_archive(inbox, name, nl, dir, lua_toboolean(L, 4), out, sizeof out, &e)) return push_fail(L, &e);
  lua_pushstring(L, out);
  return 1;
}

/* escape_text(s) -> s with control characters escaped as log lines escape them (log.h) */
static int l_escape_text(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  dp_buf b = DP_BUF_INIT;
  if (dp_log_escape(&b, s, n, 0) != 0) {
    dp_buf_free(&b);
    return luaL_error(L, "escape_text: out of memory");
  }
  lua_pushlstring(L, b.data ? b.data : "", b.len);
  dp_buf_free(&b);
  return 1;
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
  push_info(L, &fi);
  return 1;
}

/* file_move(path, dir) -> final path | nil, err */
static int l_file_move(lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *dir = luaL_checkstring(L, 2);
  char out[PATH_MAX + NAME_MAX + 2];
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
  static const luaL_Reg methods[] = {{"line", l_reader_line}, {"read", l_reader_read}, {"close", l_reader_close}, {NULL, NULL}};
  if (luaL_newmetatable(L, READER_MT)) {
    lua_pushcfunction(L, l_reader_close);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "dp.inbox.reader");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  static const luaL_Reg funcs[] = {{"file_info", l_file_info},       {"file_move", l_file_move},
                                   {"inbox_open", l_inbox_open},     {"inbox_stat", l_inbox_stat},
                                   {"inbox_list", l_inbox_list},     {"inbox_archive", l_inbox_archive},
                                   {"escape_text", l_escape_text},   {NULL, NULL}};
  luaL_register(L, NULL, funcs);
}
