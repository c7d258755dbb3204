/* preflight.c - see preflight.h. */
#include "preflight.h"
#include "pg.h"

#include <stdio.h>
#include <string.h>

int dp_relation_exists(PGconn *c, const char *schema, const char *name, dp_err *e) {
  const char *p[] = {schema, name};
  PGresult *r = NULL;
  int rc = dp_pg_exec(c, "SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL", 2, p, &r, e);
  if (rc) return rc;
  rc = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  return rc;
}

int dp_input_exists(PGconn *c, const char *input, const char *who, dp_err *e) {
  char rel[600], fix[600];
  const char *dot = strchr(input, '.');
  int rc;
  if (dot) {
    snprintf(rel, sizeof rel, "%.*s__%s_current", (int)(dot - input), input, dot + 1);
    snprintf(fix, sizeof fix, "dp-engine run %.*s", (int)(dot - input), input);
    rc = dp_relation_exists(c, "silver", rel, e);
  } else {
    snprintf(rel, sizeof rel, "%s", input);
    snprintf(fix, sizeof fix, "dp-engine gold run %s", input);
    rc = dp_relation_exists(c, "gold", rel, e);
  }
  if (rc < 0) return rc;
  if (rc == 1) return 0;
  return dp_err_set(e, DP_ENOTFOUND, "%s%s%s.%s%s does not exist yet: run `%s` first", who ? who : "",
                    who ? " reads " : "", dot ? "silver" : "gold", rel, who ? ", which" : "", fix);
}

int dp_gold_inputs_exist(PGconn *c, char *const *depends_on, size_t n, const char *name, dp_err *e) {
  char who[300];
  snprintf(who, sizeof who, "gold model %s", name);
  int rc = 0;
  for (size_t k = 0; k < n && rc == 0; k++) rc = dp_input_exists(c, depends_on[k], who, e);
  return rc;
}
