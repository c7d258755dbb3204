/* error.h - error codes and the error detail struct.
 * Functions return 0 or a negative DP_E* code and, where the caller passes a dp_err,
 * a human-readable message that names what failed and where. */
#ifndef DP_ERROR_H
#define DP_ERROR_H

/* X(name, code, exit class, message): one table gives the enum, the name, the message and the
 * exit code of a command that fails with it (dp_cli_exit, cli.h): 0 success, 1 something the
 * engine did or reached failed (a service down, a run failed), 2 the user's input or
 * configuration is wrong (usage, metadata, configuration, an unknown name, a wrong key). */
#define DP_ERRNO_MAP(X)                                      \
  X(OK,        0,   0, "success")                        \
  X(EINVAL,    -1,  2, "invalid argument")               \
  X(ENOMEM,    -2,  1, "out of memory")                  \
  X(EIO,       -3,  1, "input/output error")             \
  X(EJSON,     -4,  1, "invalid JSON")                   \
  X(ECAST,     -5,  1, "value cannot be cast")           \
  X(EPG,       -6,  1, "PostgreSQL error")               \
  X(EMONGO,    -7,  1, "MongoDB error")                  \
  X(ELUA,      -8,  1, "Lua error")                      \
  X(EMETA,     -9,  2, "invalid metadata")               \
  X(EBUSY,     -10, 1, "already running")                \
  X(ECONFIG,   -11, 2, "configuration error")            \
  X(EMIGRATE,  -12, 1, "migration error")                \
  X(ENOTFOUND, -13, 2, "not found")                      \
  X(EKEY,      -14, 2, "wrong or unusable key")          \
  X(ETAMPERED, -15, 1, "data was modified or damaged")

typedef enum {
#define DP__ERR_ENUM(name, code, exit, msg) DP_##name = code,
  DP_ERRNO_MAP(DP__ERR_ENUM)
#undef DP__ERR_ENUM
} dp_errno;

typedef struct dp_err {
  int code;
  char msg[2048];
} dp_err;

/* Returns the name of an error code ("DP_EPG"). Static storage. */
const char *dp_err_name(int code);
/* The exit class (0, 1 or 2) of an error code; 1 for a code not in the table. */
int dp_err_exit_class(int code);
/* Returns the generic message of an error code. Static storage. */
const char *dp_strerror(int code);
/* Sets code and a printf-formatted message on e (e may be NULL); returns code. */
int dp_err_set(dp_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in e with a printf-formatted context ("silver: "). */
void dp_err_prefix(dp_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_err_clear(dp_err *e);

#endif
