/* doctor.h - the checks of `dp-engine doctor` (docs/cli.md#doctor). A check is a function that
 * reports one or more lines through dp_doctor_report; the table in cmd_doctor.c lists them in
 * order, so that adding a check is one line there. */
#ifndef DP_DOCTOR_H
#define DP_DOCTOR_H

#include "engine.h"

typedef enum { DP_DOCTOR_OK = 0, DP_DOCTOR_WARN, DP_DOCTOR_FAIL } dp_doctor_status;

typedef struct dp_doctor dp_doctor;

/* One line of the report: status, the check's name ("postgres", "inbox bank"), the fix (NULL
 * when ok; for a warning or failure what to do) and the message. Printed at once as text, or
 * kept for the JSON document. */
void dp_doctor_report(dp_doctor *d, dp_doctor_status st, const char *check, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The engine the checks look at (connections are opened by the checks that need them). */
dp_engine *dp_doctor_engine(dp_doctor *d);
/* 1 when --network was given: a check may send a request. */
int dp_doctor_network(const dp_doctor *d);

typedef void (*dp_doctor_check_fn)(dp_doctor *d);

#endif
