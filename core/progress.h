/* progress.h - progress of long work: records per second per entity and layer. On a terminal
 * (standard output and error are TTYs, text logs) one line is redrawn in place; otherwise an info log line
 * comes every DP_PROGRESS_SECONDS (default 30; 0: at every record, for tests). The current
 * step is per thread: dp_progress_begin ... dp_progress_end around a layer step, and the layer
 * code calls dp_progress_add as records go by (cheap: a clock read). */
#ifndef DP_PROGRESS_H
#define DP_PROGRESS_H

#include <stdint.h>

/* Reads DP_LOG_FORMAT and DP_PROGRESS_SECONDS once (main calls it at start; the first
 * dp_progress_begin does otherwise). */
void dp_progress_init(void);
void dp_progress_begin(const char *layer, const char *system, const char *entity);
/* n more records; what: "records", "keys", ... (a static string) */
void dp_progress_add(int64_t n, const char *what);
void dp_progress_end(void);
/* Clears this thread's progress line from the terminal when one is drawn (the next update draws it
 * again): the logger calls it before every line, so a log line never follows a progress line on
 * the same row. */
void dp_progress_clear_line(void);

#endif
