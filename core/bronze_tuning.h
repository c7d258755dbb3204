/* bronze_tuning.h - is the bronze server tuned as bronze needs (docs/deployment.md#bronze-on-ferretdb)?
 * For `dp-engine doctor`. */
#ifndef DP_BRONZE_TUNING_H
#define DP_BRONZE_TUNING_H

#include <stddef.h>
#include <mongoc/mongoc.h>

enum { DP_TUNING_OK = 0, DP_TUNING_WARN = 1, DP_TUNING_ERROR = 2 };

/* Checks the server of cli (buildInfo): a real MongoDB needs nothing (DP_TUNING_OK); FerretDB
 * needs, on its PostgreSQL database, plan_cache_mode = force_custom_plan and the event trigger
 * dp_ferretdb_id_gin of docker/ferretdb-tuning.sql, which doctor checks through pg_url (the libpq
 * URI of that database, DP_FERRETDB_PG_URL; NULL or "": not checked, DP_TUNING_WARN saying how
 * to let it check). DP_TUNING_WARN when something is missing, DP_TUNING_ERROR when a server
 * cannot be asked. msg (cap bytes) says what was found; fix (fixcap bytes) what to do, "" when ok. */
int dp_bronze_tuning_check(mongoc_client_t *cli, const char *pg_url, char *msg, size_t cap, char *fix, size_t fixcap);

typedef struct dp_doctor dp_doctor;
/* doctor's line "bronze tuning" (call after the MongoDB check found the server), with
 * DP_FERRETDB_PG_URL: ok, warn, or fail when a server cannot be asked. */
void dp_bronze_tuning_doctor(dp_doctor *d);

#endif
