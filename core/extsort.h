/* extsort.h - sorting fixed-size records that may not fit in memory: records are collected in a
 * buffer of a fixed size; a full buffer is sorted and written to a temporary file (a "run"); at the
 * end the runs (and the last buffer) are merged back in order. Memory is the buffer, whatever
 * the number of records. Used by bronze to read a run's records and the stored keys in key order
 * (docs/data-layers.md#bronze-the-latest-document-per-key). */
#ifndef DP_EXTSORT_H
#define DP_EXTSORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "error.h"

typedef int (*dp_extsort_cmp)(const void *a, const void *b);

typedef struct dp_extsort {
  size_t recsize, cap, n;  /* record size; buffer capacity and fill, in records */
  dp_extsort_cmp cmp;
  char *buf;               /* owned */
  char *dir;               /* where runs go (owned) */
  FILE **runs;             /* owned; unlinked at creation, so a crash leaves nothing behind */
  size_t nruns;
  /* merging */
  char *heads;             /* one current record per run (owned) */
  unsigned char *live;     /* per run: 1 while it has a current record */
  size_t pos;              /* next record of the buffer */
} dp_extsort;

/* A sorter of records of recsize bytes, holding at most mem_bytes of them in memory; runs go
 * to temporary files in dir. */
int dp_extsort_init(dp_extsort *s, size_t recsize, dp_extsort_cmp cmp, size_t mem_bytes, const char *dir,
                    dp_err *e);
int dp_extsort_add(dp_extsort *s, const void *rec, dp_err *e);
/* Ends adding; records then come in order from dp_extsort_next. */
int dp_extsort_finish(dp_extsort *s, dp_err *e);
/* The next record in order into out: 1, 0 at the end, or an error (< 0). Records comparing
 * equal come in the order they were added only if cmp tells them apart: make it total. */
int dp_extsort_next(dp_extsort *s, void *out, dp_err *e);
void dp_extsort_free(dp_extsort *s);

#endif
