/* error.h - error codes and the error detail struct.
 * Functions return 0 or a negative DP_E* code and, where the caller passes a dp_err,
 * a human-readable message that names what failed and where. */
#ifndef DP_ERROR_H
#define DP_ERROR_H

/* X(name, code, message): one table gives the enum, the name and the message. */
#define DP_ERRNO_MAP(X)                                   \
  X(OK,       0,   "success")                             \
  X(EINVAL,  -1,   "invalid argument")                    \
  X(ENOMEM,  -2,   "out of memory")                       \
  X(EIO,     -3,   "input/output error")                  \
  X(EJSON,   -4,   "invalid JSON")                        \
  X(ECAST,   -5,   "value cannot be cast")                \
  X(EPG,     -6,   "PostgreSQL error")                    \
  X(EMONGO,  -7,   "MongoDB error")                       \
  X(ELUA,    -8,   "Lua error")                           \
  X(EMETA,   -9,   "invalid metadata")                    \
  X(EBUSY,   -10,  "already running")                     \
  X(ECONFIG, -11,  "configuration error")                 \
  X(EMIGRATE,-12,  "migration error")                     \
  X(ENOTFOUND,-13, "not found")                          \
  X(EKEY,    -14,  "wrong or unusable key")               \
  X(ETAMPERED,-15, "data was modified or damaged")

typedef enum {
#define DP__ERR_ENUM(name, code, msg) DP_##name = code,
  DP_ERRNO_MAP(DP__ERR_ENUM)
#undef DP__ERR_ENUM
} dp_errno;

typedef struct dp_err {
  int code;
  char msg[2048];
} dp_err;

/* Returns the name of an error code ("DP_EPG"). Static storage. */
const char *dp_err_name(int code);
/* Returns the generic message of an error code. Static storage. */
const char *dp_strerror(int code);
/* Sets code and a printf-formatted message on e (e may be NULL); returns code. */
int dp_err_set(dp_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in e with a printf-formatted context ("silver: "). */
void dp_err_prefix(dp_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_err_clear(dp_err *e);

#endif
