/* migrate.h - applies migrations/NNNN_name.sql in order, once each, each in a transaction,
 * recording name and sha256 in dp.schema_migration; an applied file edited later is refused. */
#ifndef DP_MIGRATE_H
#define DP_MIGRATE_H

#include <libpq-fe.h>
#include "error.h"

/* Applies pending migrations from dir. *applied receives how many ran. */
int dp_migrate(PGconn *c, const char *dir, int *applied, dp_err *e);
/* How many files of dir are applied and how many are pending (the first pending name into
 * first, cap bytes); reads only. A database never migrated has them all pending. */
int dp_migrate_status(PGconn *c, const char *dir, int *applied, int *pending, char *first, size_t cap, dp_err *e);

#endif
