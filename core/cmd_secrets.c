/* cmd_secrets.c - dp-engine secrets set|get|list|rm|rotate-key|gen-key: the store's CLI client.
 * Values are read from standard input or a no-echo prompt, never from argv. */
#include "cli.h"
#include "secretlookup.h"
#include "secrets.h"

#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char *SECRETS_USAGE =
    "usage: dp-engine secrets COMMAND [NAME]\n"
    "\n"
    "The encrypted secret store (docs/secrets.md).\n"
    "  set NAME          store a secret; the value comes from standard input (one trailing newline\n"
    "                    dropped) or a no-echo prompt on a terminal, never from the command line\n"
    "  get NAME          print a stored value (--resolve: look it up as a run would)\n"
    "  list              names and update times of the stored secrets, never values\n"
    "  rm NAME           delete a secret\n"
    "  rotate-key        re-encrypt the store under DP_NEW_MASTER_KEY_FILE (or DP_NEW_MASTER_KEY)\n"
    "  gen-key           print a new random master key (base64)\n"
    "Environment: DP_MASTER_KEY_FILE or DP_MASTER_KEY (32 bytes as base64 or hex), DP_SECRETS_FILE\n"
    "  (default $DP_DATA_DIR/secrets.enc), DP_SECRETS_DIR (/run/secrets), DP_SECRET_<NAME>.\n"
    "Exit codes: 0 success, 1 no such secret or the store is damaged, 2 usage or configuration\n"
    "error (including a missing, malformed or wrong key).\n";

static const char *SET_USAGE =
    "usage: dp-engine secrets set NAME\n"
    "\n"
    "Stores the value read from standard input (one trailing newline dropped), or typed at a\n"
    "no-echo prompt (asked twice) when standard input is a terminal. Replaces an existing value.\n"
    "NAME: 1 to 128 letters, digits, _, . and -. The value: 1 byte to 64 KiB.\n"
    "  printf %s \"$TOKEN\" | dp-engine secrets set github_token\n";

static const char *GET_USAGE =
    "usage: dp-engine secrets get NAME [--resolve]\n"
    "\n"
    "Prints the value stored under NAME exactly (a newline is added only on a terminal).\n"
    "  --resolve   look NAME up as a run does: DP_SECRET_<NAME>, then $DP_SECRETS_DIR/NAME, then the\n"
    "              store; says on stderr where the value came from\n"
    "Exit 1 when there is no such secret.\n";

static const char *LIST_USAGE =
    "usage: dp-engine secrets list\n"
    "\n"
    "Prints the name and update time (UTC) of every stored secret, one per line, sorted by name.\n"
    "Values are never printed.\n";

static const char *RM_USAGE =
    "usage: dp-engine secrets rm NAME\n"
    "\n"
    "Deletes a stored secret. Exit 1 when there is no such secret.\n";

static const char *ROTATE_USAGE =
    "usage: dp-engine secrets rotate-key\n"
    "\n"
    "Re-encrypts the store under a new master key, atomically: the old file stays valid until the\n"
    "new one is in place. The current key comes from DP_MASTER_KEY_FILE / DP_MASTER_KEY, the new\n"
    "one from DP_NEW_MASTER_KEY_FILE / DP_NEW_MASTER_KEY. Afterwards point DP_MASTER_KEY_FILE at\n"
    "the new key. Create a key with: dp-engine secrets gen-key > new.key\n";

static const char *GENKEY_USAGE =
    "usage: dp-engine secrets gen-key\n"
    "\n"
    "Prints a new master key: 32 random bytes as base64. Keep it out of the data folder and its\n"
    "backups, and keep a copy somewhere safe: without it the store cannot be read.\n"
    "  (umask 077; dp-engine secrets gen-key > master.key)\n";

/* Exit code of a failed secrets command. */
static int fail(const dp_err *e) {
  fprintf(stderr, "dp-engine secrets: %s\n", e->msg);
  switch (e->code) {
    case DP_ECONFIG: case DP_EKEY: case DP_EINVAL: return DP_EXIT_USAGE;
    default: return DP_EXIT_RUN_FAILED;
  }
}

/* ---------- reading a value ---------- */

/* The terminal's settings while echo is off; restored on a signal. Process-wide by nature. */
static struct termios g_saved_tty;
static volatile sig_atomic_t g_tty_changed;

static void restore_tty_and_reraise(int sig) {
  if (g_tty_changed) tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Reads one line without echo into buf (cap bytes); *n its length without the newline. */
static int read_hidden_line(const char *prompt, unsigned char *buf, size_t cap, size_t *n, dp_err *e) {
  struct termios t;
  int rc = 0;
  *n = 0;
  if (tcgetattr(STDIN_FILENO, &g_saved_tty) != 0)
    return dp_err_set(e, DP_EIO, "cannot read the terminal settings: %s", strerror(errno));
  t = g_saved_tty;
  t.c_lflag &= ~(tcflag_t)ECHO;
  t.c_lflag |= ECHONL;
  signal(SIGINT, restore_tty_and_reraise);
  signal(SIGTERM, restore_tty_and_reraise);
  signal(SIGHUP, restore_tty_and_reraise);
  g_tty_changed = 1;
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) {
    g_tty_changed = 0;
    return dp_err_set(e, DP_EIO, "cannot turn off echo on the terminal: %s", strerror(errno));
  }
  fputs(prompt, stderr); /* only now: whatever is typed after the prompt is not shown */
  fflush(stderr);
  for (;;) {
    unsigned char c;
    ssize_t k = read(STDIN_FILENO, &c, 1);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) { rc = dp_err_set(e, DP_EIO, "cannot read the terminal: %s", strerror(errno)); break; }
    if (k == 0 || c == '\n') break;
    if (*n + 1 >= cap) { rc = dp_err_set(e, DP_EINVAL, "the value is over the %d-byte limit", DP_SECRET_VALUE_MAX); break; }
    buf[(*n)++] = c;
  }
  tcsetattr(STDIN_FILENO, TCSANOW, &g_saved_tty);
  g_tty_changed = 0;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  if (*n > 0 && buf[*n - 1] == '\r') (*n)--;
  return rc;
}

/* The value of `set`: from a no-echo prompt (asked twice) on a terminal, else all of standard
 * input with one trailing newline dropped. *out is sodium_malloc'd (caller sodium_free's). */
static int read_value(const char *name, unsigned char **out, size_t *len, dp_err *e) {
  size_t cap = DP_SECRET_VALUE_MAX + 3, n = 0, n2 = 0;
  unsigned char *buf = sodium_malloc(cap), *again = NULL;
  int rc = 0;
  if (!buf) return dp_err_set(e, DP_ENOMEM, "out of memory");
  if (isatty(STDIN_FILENO)) {
    char prompt[256];
    snprintf(prompt, sizeof prompt, "Value of secret %s (not shown): ", name);
    rc = read_hidden_line(prompt, buf, cap, &n, e);
    if (rc == 0 && n > 0) {
      again = sodium_malloc(cap);
      if (!again) { rc = dp_err_set(e, DP_ENOMEM, "out of memory"); goto cleanup; }
      rc = read_hidden_line("Again, to confirm: ", again, cap, &n2, e);
      if (rc == 0 && (n2 != n || sodium_memcmp(buf, again, n) != 0))
        rc = dp_err_set(e, DP_EINVAL, "the two values differ; nothing was stored");
    }
  } else {
    for (;;) {
      ssize_t k = read(STDIN_FILENO, buf + n, cap - n);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) { rc = dp_err_set(e, DP_EIO, "cannot read standard input: %s", strerror(errno)); break; }
      if (k == 0) break;
      n += (size_t)k;
      if (n == cap) break;
    }
    if (n > 0 && buf[n - 1] == '\n') {
      n--;
      if (n > 0 && buf[n - 1] == '\r') n--;
    }
  }
  if (rc) goto cleanup;
  if (n == 0) {
    rc = dp_err_set(e, DP_EINVAL, "the value of secret %s is empty (it is read from standard input); nothing was stored", name);
  } else if (n > DP_SECRET_VALUE_MAX) {
    rc = dp_err_set(e, DP_EINVAL, "the value of secret %s is over the %d-byte limit; nothing was stored", name,
                    DP_SECRET_VALUE_MAX);
  }
cleanup:
  if (again) sodium_free(again);
  if (rc) {
    sodium_free(buf);
    return rc;
  }
  *out = buf;
  *len = n;
  return 0;
}

/* ---------- commands ---------- */

static int check_name(const char *name, dp_err *e) {
  if (!dp_secret_name_valid(name))
    return dp_err_set(e, DP_EINVAL, "\"%s\" is not a secret name: use 1 to %d letters, digits, _, . and - "
                      "(not . or .. alone)", name, DP_SECRET_NAME_MAX);
  return 0;
}

/* Takes exactly one NAME; returns it or NULL after printing a usage error in *exit_code. */
static const char *one_name(const char *usage, const char *cmd, int argc, char **argv, int *exit_code) {
  const char *name = NULL;
  for (int i = 0; i < argc; i++) {
    if (argv[i][0] == '-' && argv[i][1] != '\0') {
      *exit_code = dp_cli_usage_error(usage, "unknown option: %s", argv[i]);
      return NULL;
    }
    if (name) {
      *exit_code = strcmp(cmd, "set") == 0
                       ? dp_cli_usage_error(usage, "%s", "secrets set takes only NAME: the value is never taken from "
                                            "the command line (ps and the shell history would see it); pipe it "
                                            "on standard input")
                       : dp_cli_usage_error(usage, "unexpected argument: %s", argv[i]);
      return NULL;
    }
    name = argv[i];
  }
  if (!name) *exit_code = dp_cli_usage_error(usage, "secrets %s needs a NAME", cmd);
  return name;
}

static int cmd_set(const dp_secrets_config *c, int argc, char **argv) {
  int code = 0;
  const char *name = one_name(SET_USAGE, "set", argc, argv, &code);
  if (!name) return code;
  dp_err e;
  dp_err_clear(&e);
  dp_secrets_key key;
  dp_secret_store st;
  unsigned char *value = NULL;
  size_t len = 0;
  int lock = -1, rc;
  memset(&key, 0, sizeof key);
  memset(&st, 0, sizeof st);
  rc = check_name(name, &e);
  if (rc == 0) rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, &e);
  /* open the store once before asking for the value: a wrong key fails before anything is typed */
  if (rc == 0) rc = dp_secret_store_load(c->file, &key, &st, &e);
  dp_secret_store_free(&st);
  if (rc == 0) rc = read_value(name, &value, &len, &e);
  if (rc == 0) rc = dp_secret_store_lock(c->file, &lock, &e);
  if (rc == 0) rc = dp_secret_store_load(c->file, &key, &st, &e);
  if (rc == 0) rc = dp_secret_store_put(&st, name, value, len, (int64_t)time(NULL), &e);
  if (rc == 0) rc = dp_secret_store_save(c->file, &key, &st, &e);
  dp_secret_store_unlock(lock);
  dp_secret_store_free(&st);
  dp_secrets_key_wipe(&key);
  if (value) sodium_free(value);
  if (rc) return fail(&e);
  if (len < 4)
    fprintf(stderr, "dp-engine secrets: warning: values shorter than 4 bytes cannot be redacted from logs\n");
  fprintf(stderr, "stored secret %s in %s\n", name, c->file);
  return DP_EXIT_OK;
}

static void print_value(const unsigned char *v, size_t n) {
  fwrite(v, 1, n, stdout);
  if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
  fflush(stdout);
}

static int cmd_get(const dp_secrets_config *c, int argc, char **argv) {
  int resolve = 0, code = 0;
  char *rest[2];
  int nrest = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--resolve") == 0) resolve = 1;
    else if (nrest < 2) rest[nrest++] = argv[i];
    else return dp_cli_usage_error(GET_USAGE, "unexpected argument: %s", argv[i]);
  }
  const char *name = one_name(GET_USAGE, "get", nrest, rest, &code);
  if (!name) return code;
  dp_err e;
  dp_err_clear(&e);
  int rc = check_name(name, &e);
  if (rc) return fail(&e);
  if (resolve) {
    unsigned char *v = NULL;
    size_t n = 0;
    dp_secret_source src = 0;
    char where[4200];
    rc = dp_secret_lookup(c, name, &v, &n, &src, where, sizeof where, &e);
    if (rc) return fail(&e);
    print_value(v, n);
    sodium_free(v);
    fprintf(stderr, "secret %s came from %s %s\n", name,
            src == DP_SECRET_FROM_ENV ? "the environment variable" : src == DP_SECRET_FROM_FILE ? "the file" : "the store",
            where);
    return DP_EXIT_OK;
  }
  if (access(c->file, F_OK) != 0) {
    dp_err_set(&e, DP_ENOTFOUND, "no secret named %s: there is no store at %s yet", name, c->file);
    return fail(&e);
  }
  dp_secrets_key key;
  dp_secret_store st;
  memset(&st, 0, sizeof st);
  rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, &e);
  if (rc == 0) rc = dp_secret_store_load(c->file, &key, &st, &e);
  dp_secrets_key_wipe(&key);
  if (rc == 0) {
    const dp_secret_item *it = dp_secret_store_find(&st, name);
    if (it) print_value(it->value, it->value_len);
    else rc = dp_err_set(&e, DP_ENOTFOUND, "no secret named %s in the store %s", name, c->file);
  }
  dp_secret_store_free(&st);
  return rc ? fail(&e) : DP_EXIT_OK;
}

static int cmd_list(const dp_secrets_config *c, int argc, char **argv) {
  if (argc > 0) return dp_cli_usage_error(LIST_USAGE, "unexpected argument: %s", argv[0]);
  dp_err e;
  dp_err_clear(&e);
  if (access(c->file, F_OK) != 0) {
    fprintf(stderr, "no secrets yet: there is no store at %s\n", c->file);
    return DP_EXIT_OK;
  }
  dp_secrets_key key;
  dp_secret_store st;
  memset(&st, 0, sizeof st);
  int rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, &e);
  if (rc == 0) rc = dp_secret_store_load(c->file, &key, &st, &e);
  dp_secrets_key_wipe(&key);
  if (rc == 0) {
    int w = 4;
    for (size_t i = 0; i < st.n; i++) if ((int)st.items[i].name_len > w) w = (int)st.items[i].name_len;
    for (size_t i = 0; i < st.n; i++) {
      char ts[32];
      struct tm tm;
      time_t t = (time_t)st.items[i].updated_at;
      gmtime_r(&t, &tm);
      strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
      printf("%-*.*s  %s\n", w, (int)st.items[i].name_len, st.items[i].name, ts);
    }
  }
  dp_secret_store_free(&st);
  return rc ? fail(&e) : DP_EXIT_OK;
}

static int cmd_rm(const dp_secrets_config *c, int argc, char **argv) {
  int code = 0;
  const char *name = one_name(RM_USAGE, "rm", argc, argv, &code);
  if (!name) return code;
  dp_err e;
  dp_err_clear(&e);
  dp_secrets_key key;
  dp_secret_store st;
  int lock = -1;
  memset(&key, 0, sizeof key);
  memset(&st, 0, sizeof st);
  int rc = check_name(name, &e);
  if (rc == 0 && access(c->file, F_OK) != 0)
    rc = dp_err_set(&e, DP_ENOTFOUND, "no secret named %s: there is no store at %s yet", name, c->file);
  if (rc == 0) rc = dp_secrets_key_from_env("DP_MASTER_KEY", &key, &e);
  if (rc == 0) rc = dp_secret_store_lock(c->file, &lock, &e);
  if (rc == 0) rc = dp_secret_store_load(c->file, &key, &st, &e);
  if (rc == 0) {
    rc = dp_secret_store_remove(&st, name, &e);
    if (rc == DP_ENOTFOUND) dp_err_set(&e, DP_ENOTFOUND, "no secret named %s in the store %s", name, c->file);
  }
  if (rc == 0) rc = dp_secret_store_save(c->file, &key, &st, &e);
  dp_secret_store_unlock(lock);
  dp_secret_store_free(&st);
  dp_secrets_key_wipe(&key);
  if (rc) return fail(&e);
  fprintf(stderr, "removed secret %s from %s\n", name, c->file);
  return DP_EXIT_OK;
}

static int cmd_rotate(const dp_secrets_config *c, int argc, char **argv) {
  if (argc > 0) return dp_cli_usage_error(ROTATE_USAGE, "unexpected argument: %s", argv[0]);
  dp_err e;
  dp_err_clear(&e);
  dp_secrets_key old_key, new_key;
  dp_secret_store st;
  int lock = -1, rc;
  memset(&old_key, 0, sizeof old_key);
  memset(&new_key, 0, sizeof new_key);
  memset(&st, 0, sizeof st);
  char old_id[2 * DP_SECRETS_KEY_ID_BYTES + 1], new_id[2 * DP_SECRETS_KEY_ID_BYTES + 1];
  rc = dp_secrets_key_from_env("DP_MASTER_KEY", &old_key, &e);
  if (rc == 0) rc = dp_secrets_key_from_env("DP_NEW_MASTER_KEY", &new_key, &e);
  if (rc == 0 && sodium_memcmp(old_key.enc, new_key.enc, sizeof old_key.enc) == 0)
    rc = dp_err_set(&e, DP_EINVAL, "the new key (DP_NEW_MASTER_KEY[_FILE]) is the current key: nothing to rotate");
  if (rc == 0 && access(c->file, F_OK) != 0)
    rc = dp_err_set(&e, DP_ENOTFOUND, "there is no store at %s: nothing to rotate", c->file);
  if (rc == 0) rc = dp_secret_store_lock(c->file, &lock, &e);
  if (rc == 0) rc = dp_secret_store_load(c->file, &old_key, &st, &e);
  if (rc == 0) rc = dp_secret_store_save(c->file, &new_key, &st, &e);
  dp_secret_store_unlock(lock);
  dp_secrets_key_id_hex(&old_key, old_id);
  dp_secrets_key_id_hex(&new_key, new_id);
  size_t n = st.n;
  dp_secret_store_free(&st);
  dp_secrets_key_wipe(&old_key);
  dp_secrets_key_wipe(&new_key);
  if (rc) return fail(&e);
  printf("re-encrypted %zu secret%s in %s: key id %s -> %s\n"
         "now point DP_MASTER_KEY_FILE (or DP_MASTER_KEY) at the new key\n",
         n, n == 1 ? "" : "s", c->file, old_id, new_id);
  return DP_EXIT_OK;
}

static int cmd_gen_key(const dp_secrets_config *c, int argc, char **argv) {
  if (argc > 0) return dp_cli_usage_error(GENKEY_USAGE, "unexpected argument: %s", argv[0]);
  char key[45];
  dp_secrets_gen_key(key);
  printf("%s\n", key);
  fflush(stdout);
  sodium_memzero(key, sizeof key);
  if (isatty(STDOUT_FILENO))
    fprintf(stderr, "(write it to a file instead: (umask 077; dp-engine secrets gen-key > master.key))\n");
  return DP_EXIT_OK;
}

int dp_cmd_secrets(dp_engine *eng, int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(const dp_secrets_config *, int, char **);
    const char **usage;
  } cmds[] = {
      {"set", cmd_set, &SET_USAGE},         {"get", cmd_get, &GET_USAGE},
      {"list", cmd_list, &LIST_USAGE},      {"rm", cmd_rm, &RM_USAGE},
      {"rotate-key", cmd_rotate, &ROTATE_USAGE}, {"gen-key", cmd_gen_key, &GENKEY_USAGE},
  };
  if (argc == 0) {
    fputs(SECRETS_USAGE, stderr);
    return DP_EXIT_USAGE;
  }
  if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
    fputs(SECRETS_USAGE, stdout);
    return DP_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    if (strcmp(argv[0], cmds[i].name) != 0) continue;
    if (dp_cli_wants_help(argc - 1, argv + 1)) {
      fputs(*cmds[i].usage, stdout);
      return DP_EXIT_OK;
    }
    dp_secrets_config c;
    dp_err e;
    dp_err_clear(&e);
    if (dp_secrets_config_from_env(eng->cfg.data_dir, &c, &e) != 0) return fail(&e);
    int rc = cmds[i].fn(&c, argc - 1, argv + 1);
    dp_secrets_config_free(&c);
    return rc;
  }
  return dp_cli_usage_error(SECRETS_USAGE, "unknown secrets command: %s", argv[0]);
}
