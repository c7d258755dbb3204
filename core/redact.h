/* redact.h - keeps secret values out of text that leaves the process (log lines, error
 * messages, emitted records, HTTP error bodies).
 *
 * A process-wide registry (like the log configuration: there is one stderr and one set of
 * secrets per process), guarded by a mutex so run workers can share it. Whoever resolves a
 * secret registers its value; dp_log, dp_err_set and dp_err_prefix redact every message, and
 * the engine's emit path redacts records. A registered value is matched as raw bytes, in its
 * JSON-escaped form and in its URL-encoded form, and replaced by "[redacted:LABEL]". A text that
 * holds a backslash or a percent sign is also searched through its escapes: decoded one level
 * of JSON escapes (\uXXXX, surrogate pairs, \/ ...) and %XX at a time, up to 4 levels, each
 * level searched, and a hit replaces the original bytes (whole escapes) that encode the value,
 * so "T\u00f6ken", "\u0054oken" or a value escaped twice inside JSON text are all found and a
 * JSON record stays valid JSON. A text with neither character takes the plain scan. */
#ifndef DP_REDACT_H
#define DP_REDACT_H

#include <stddef.h>
#include "buf.h"

/* Values shorter than this are not registered: redacting them would garble every text. */
#define DP_REDACT_MIN_LEN 4
/* Longest label kept (names of secrets are at most 128 bytes). */
#define DP_REDACT_LABEL_MAX 128

/* Registers value (len bytes, any bytes) under label (may be NULL: "[redacted]"). The registry
 * keeps its own copies in locked memory, wiped on dp_redact_reset. Registering a value twice is
 * a no-op. Returns 0, DP_EINVAL when len < DP_REDACT_MIN_LEN (not registered), DP_ENOMEM. */
int dp_redact_register(const char *label, const void *value, size_t len);
/* Number of values registered (0: redaction has nothing to do). */
size_t dp_redact_count(void);
/* Replaces every registered value in b (b grows as needed). Returns the number of replacements,
 * or DP_ENOMEM (b is then left as it was). */
int dp_redact_buf(dp_buf *b);
/* Writes a redacted copy of src (len bytes) into dst, cut to cap - 1 bytes after redacting, so a
 * value is never half copied; always NUL-terminates (cap > 0). Returns the number of
 * replacements, or DP_ENOMEM (dst then holds a placeholder, never unredacted text). */
int dp_redact_copy(const char *src, size_t len, char *dst, size_t cap);
/* Wipes and forgets every registered value (specs; process exit). */
void dp_redact_reset(void);

#endif
