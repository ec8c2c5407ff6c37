/*
 * repl.c: `solobase repl [--dry-run]`: an interactive Lua prompt with the full sb API
 * (script.h), in the manner of lua.c and psql (docs/repl.md).
 *
 * Lines are read until they compile, as lua.c does: first as an expression whose values
 * are printed ("return " .. text), else as statements; a syntax error at <eof> asks for
 * another line. Values print through sb.pretty (core/lua/pretty.lua, compiled in). On a
 * terminal GNU readline gives line editing, a history file and completion of names
 * walked from the live tables; it is driven through its callback interface so that
 * Ctrl-C at the prompt only sets a flag, and while a chunk runs Ctrl-C only sets a Lua
 * hook that raises "interrupted". Piped input is read with getline, with no prompt and
 * no history, and the exit status tells whether any chunk failed. In a dry run the
 * session is one transaction rolled back at exit (script.h) and each chunk runs in a
 * savepoint, so that a failed statement does not leave the rest of the session aborted.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <lauxlib.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "cli.h"
#include "embedded.h"
#include "log.h"
#include "script.h"
#include "util.h"

#define CHUNKNAME "=stdin"   /* errors read "stdin:2: ..." as in lua.c */
#define HISTORY_MAX 1000     /* entries kept in the history file */
#define HISTORY_NEWLINE '\1' /* a chunk's newlines in the history file, as psql does */
#define NAME_DEPTH 8         /* __index links followed when listing names */
#define HELP_WIDTH 78

/* One session: lives from the command's start to its end. */
typedef struct repl {
  sb_script_t *s;
  lua_State *L;
  bool tty;           /* stdin is a terminal: readline, prompts, history */
  bool timing;        /* .timing: print how long each chunk ran */
  bool failed;        /* a chunk failed: the exit status of piped input */
  bool quit;          /* .quit was typed */
  FILE *notes;        /* banners and notices: stdout on a terminal, else stderr */
  char *history_path; /* NULL without a terminal or a home */
  int history_added;  /* entries added this session, appended to the file at exit */
} repl_t;

/* The text of the chunk being read: its lines joined with newlines. */
typedef struct chunk {
  char *text;
  size_t len;
  bool open; /* a line was read and more are wanted */
} chunk_t;

typedef enum { INPUT_LINE, INPUT_EOF, INPUT_CANCEL } input_t;
typedef enum { CHUNK_READY, CHUNK_INCOMPLETE, CHUNK_BROKEN } chunk_status_t;

static const char pretty_key = 'p'; /* registry: the sb.pretty module */

/* A dot command: dispatched, completed and listed by .help from this table. */
typedef struct dot_command {
  const char *name, *args, *summary;
  void (*fn)(repl_t *r, const char *arg);
} dot_command_t;

static void dot_help(repl_t *r, const char *arg);
static void dot_timing(repl_t *r, const char *arg);
static void dot_quit(repl_t *r, const char *arg) { r->quit = true; }

static const dot_command_t dot_commands[] = {
    {"help", "", "this help", dot_help},
    {"timing", "[on|off]", "print how long each chunk takes", dot_timing},
    {"quit", "", "leave (so does Ctrl-D on an empty line)", dot_quit},
    {"exit", "", "leave", dot_quit},
    {NULL, NULL, NULL, NULL},
};

/* ---- Signals: each handler only sets a flag or a hook. ---- */

/* On a terminal SIGINT and SIGWINCH only set these for the whole session (so a Ctrl-C
 * between two chunks is dropped, not fatal); tty_read_line acts on them. */
static volatile sig_atomic_t prompt_sigint, prompt_sigwinch;
static lua_State *running_L; /* the state a Ctrl-C interrupts (lua.c's globalL) */
static bool interrupt_raised;  /* set by the hook, outside the signal handler */

/* Sets fn for sig; saves the action it replaces in old when old is not NULL. */
static void set_handler(int sig, void (*fn)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sa.sa_flags = SA_RESTART; /* only pselect at the prompt needs EINTR, and always gets it */
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, old);
}

static void on_prompt_sigint(int sig) { prompt_sigint = 1; }
static void on_prompt_sigwinch(int sig) { prompt_sigwinch = 1; }

/* The hook a Ctrl-C sets: raises "file:line: interrupted" where the chunk was. */
static void interrupted(lua_State *L, lua_Debug *ar) {
  lua_sethook(L, NULL, 0, 0);
  interrupt_raised = true;
  luaL_where(L, 0);
  lua_pushliteral(L, "interrupted");
  lua_concat(L, 2);
  lua_error(L);
}

/* The default action comes back first, so a second Ctrl-C ends a chunk stuck in C. */
static void on_running_sigint(int sig) {
  set_handler(sig, SIG_DFL, NULL);
  lua_sethook(running_L, interrupted, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* sb_script_pcall with Ctrl-C raising "interrupted" in the running code. */
static int docall(repl_t *r, int nargs, int nresults, sb_error_t *err) {
  running_L = r->L;
  interrupt_raised = false;
  struct sigaction session;
  set_handler(SIGINT, on_running_sigint, &session);
  int rc = sb_script_pcall(r->L, nargs, nresults, err);
  sigaction(SIGINT, &session, NULL);
  if (lua_gethook(r->L) == interrupted) lua_sethook(r->L, NULL, 0, 0); /* came too late */
  return rc;
}

/* ---- Output ---- */

static void report(repl_t *r, const char *msg) {
  /* Every traceback ends in this REPL's own call: not worth a line. */
  static const char tail[] = "\n\t[C]: in ?";
  size_t n = strlen(msg), t = sizeof tail - 1;
  if (n >= t && strcmp(msg + n - t, tail) == 0) n -= t;
  fflush(stdout);
  /* The terminal echoed ^C where the cursor was. */
  fprintf(stderr, "%s%.*s\n", r->tty && interrupt_raised ? "\n" : "", (int)n, msg);
  fflush(stderr);
  r->failed = true;
}

/* print_values(...): each argument on its own line through sb.pretty.format. Looks
 * format up on every call, so a session may set its own. */
static int print_values(lua_State *L) {
  int n = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pretty_key); /* args, pretty */
  for (int i = 1; i <= n; i++) {
    lua_getfield(L, n + 1, "format");
    lua_pushvalue(L, i);
    lua_call(L, 1, 1); /* args, pretty, text */
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (!text) return luaL_error(L, "sb.pretty.format returned a %s", luaL_typename(L, -1));
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
    lua_pop(L, 1);
  }
  return 0;
}

/* Keeps sb.pretty (loaded with every script state, core/script.c) in the registry, so
 * the REPL still prints if a session replaces sb.pretty with something broken. */
static int load_pretty(lua_State *L) {
  lua_getglobal(L, "sb");
  if (lua_getfield(L, -1, "pretty") != LUA_TTABLE) return luaL_error(L, "sb.pretty is missing");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &pretty_key);
  lua_pop(L, 1);
  return 0;
}

/* ---- Names: what completion offers and .help lists ---- */

static bool is_name(const char *s, size_t len) {
  if (len == 0 || isdigit((unsigned char)s[0])) return false;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
  return true;
}

/* Replaces the value on top with its field name, looked up raw along the __index
 * chain: completing must not run a metamethod. */
static void raw_field(lua_State *L, const char *name, size_t len) {
  for (int i = 0; i < NAME_DEPTH; i++) {
    if (lua_istable(L, -1)) {
      lua_pushlstring(L, name, len);
      if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_remove(L, -2); /* field */
        return;
      }
      lua_pop(L, 1);
    }
    if (!lua_getmetatable(L, -1)) break;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);  /* value, mt, __index */
    lua_remove(L, -2);
    lua_remove(L, -2);  /* __index */
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

/* Replaces the value on top with the set (name -> true) of the names it offers: its
 * string keys that are names starting with prefix, and those of the tables its
 * metatables' __index lead to (how sb.config and query results show theirs); with
 * methods, only those naming functions. */
static void push_names(lua_State *L, const char *prefix, bool methods) {
  size_t plen = strlen(prefix);
  lua_newtable(L);
  lua_insert(L, -2); /* set, value */
  for (int i = 0; i < NAME_DEPTH; i++) {
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) { /* set, value, key, field */
        size_t len;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
        if (k && is_name(k, len) && strncmp(k, prefix, plen) == 0 &&
            (!methods || lua_type(L, -1) == LUA_TFUNCTION)) {
          lua_pushvalue(L, -2);
          lua_pushboolean(L, 1);
          lua_rawset(L, -6);
        }
        lua_pop(L, 1);
      }
    }
    if (!lua_getmetatable(L, -1)) break;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_remove(L, -2); /* set, __index */
  }
  lua_pop(L, 1);
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pushes a userdata holding the names of the set on top, sorted, as const char *[*n].
 * They point into the set, so it must stay below. */
static const char **sorted_names(lua_State *L, int *n) {
  int count = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    count++;
  }
  const char **names = lua_newuserdatauv(L, (size_t)count * sizeof *names + 1, 0);
  int i = 0;
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pop(L, 1);
    names[i++] = lua_tostring(L, -1);
  }
  qsort(names, (size_t)count, sizeof *names, compare_names);
  *n = count;
  return names;
}

/* What to complete: the names of the value at path ("" for the globals) after sep
 * ('.' or ':', or 0 for a bare name) starting with prefix; or a dot command. */
typedef struct completion {
  const char *path;
  size_t path_len;
  char sep;
  const char *prefix;
  bool dot_command;
} completion_t;

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    NULL,
};

/* find_names(completion): pushes the set of names it asks for. Protected. */
static int find_names(lua_State *L) {
  const completion_t *c = lua_touserdata(L, 1);
  size_t plen = strlen(c->prefix);
  if (c->dot_command) {
    lua_newtable(L);
    for (const dot_command_t *d = dot_commands; d->name; d++) {
      if (strncmp(d->name, c->prefix, plen) != 0) continue;
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, d->name);
    }
    return 1;
  }
  lua_pushglobaltable(L);
  const char *p = c->path, *end = c->path + c->path_len;
  while (p < end) {
    const char *dot = memchr(p, '.', (size_t)(end - p));
    size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
    raw_field(L, p, n);
    p += n + 1;
  }
  push_names(L, c->prefix, c->sep == ':');
  if (c->sep == 0) {
    for (const char *const *k = keywords; *k; k++) {
      if (strncmp(*k, c->prefix, plen) != 0) continue;
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, *k);
    }
  }
  return 1;
}

/* ---- Completion (readline) ---- */

static repl_t *completing; /* the session readline completes for */

/* Readline's generator: the names of the set on top of the state's stack, one a call;
 * the key of the previous call stays on the stack in between. */
static char *next_name(const char *text, int state) {
  lua_State *L = completing->L;
  if (state == 0) lua_pushnil(L);
  if (!lua_next(L, -2)) return NULL;
  lua_pop(L, 1);
  return sb_xstrdup(lua_tostring(L, -1));
}

/* Where the dotted name that ends at end in line starts ("sb.db" in "x = sb.db"), or
 * -1 when what ends there is not a plain name path (a call, an index, a number). */
static int name_path_start(const char *line, int end) {
  int i = end;
  for (;;) {
    int k = i;
    while (k > 0 && (isalnum((unsigned char)line[k - 1]) || line[k - 1] == '_')) k--;
    if (!is_name(line + k, (size_t)(i - k))) return -1;
    if (k > 1 && line[k - 1] == '.' && line[k - 2] != '.') {
      i = k - 1;
      continue;
    }
    if (k > 0 && strchr(")]}\"':", line[k - 1])) return -1;
    return k;
  }
}

static char **complete(const char *text, int start, int end) {
  rl_attempted_completion_over = 1; /* never file names */
  rl_completion_append_character = '\0';
  completion_t c = {.path = "", .prefix = text};
  char before = start > 0 ? rl_line_buffer[start - 1] : 0;
  if (before == '.' || before == ':') {
    c.sep = before;
    int i = start - 1;
    while (i > 0 && isspace((unsigned char)rl_line_buffer[i - 1])) i--;
    if (i == 0 && before == '.') {
      c.dot_command = true;
    } else {
      int from = name_path_start(rl_line_buffer, start - 1);
      if (from < 0) return NULL;
      c.path = rl_line_buffer + from;
      c.path_len = (size_t)(start - 1 - from);
    }
  }
  lua_State *L = completing->L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, find_names);
  lua_pushlightuserdata(L, &c);
  sb_error_t err;
  char **matches = NULL;
  if (sb_script_pcall(L, 1, 1, &err) == 0) matches = rl_completion_matches(text, next_name);
  lua_settop(L, top);
  return matches;
}

/* ---- Input ---- */

static char *handler_line;       /* what the callback handler got: a line, or NULL at EOF */
static bool handler_done;

static void on_line(char *line) {
  handler_line = line;
  handler_done = true;
  rl_callback_handler_remove();
}

/* Ctrl-C at the prompt: the line stays on the screen with ^C after it, as bash shows
 * it. The ^C goes out before the terminal is restored, which may return the cursor
 * to the start of the line (when bracketed paste was on). */
static void cancel_line(void) {
  rl_point = rl_end;
  rl_redisplay();
  fputs("^C", rl_outstream);
  rl_free_line_state();
  rl_callback_sigcleanup();
  rl_cleanup_after_signal();
  rl_callback_handler_remove();
  fputc('\n', rl_outstream);
  fflush(rl_outstream);
}

/* One line from readline's callback interface, waiting in pselect with SIGINT and
 * SIGWINCH open only there, so no signal slips between a check and the wait (the way
 * Python's readline module avoids longjmp out of a signal handler). */
static input_t tty_read_line(const char *prompt, char **line) {
  sigset_t block, saved, waiting;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGWINCH);
  sigprocmask(SIG_BLOCK, &block, &saved);
  waiting = saved;
  sigdelset(&waiting, SIGINT);
  sigdelset(&waiting, SIGWINCH);
  prompt_sigint = 0; /* a Ctrl-C while no prompt was up */
  if (prompt_sigwinch) {
    prompt_sigwinch = 0;
    rl_reset_screen_size();
  }

  handler_line = NULL;
  handler_done = false;
  rl_eof_found = 0; /* readline() resets it, the callback interface does not */
  fflush(stdout);
  rl_callback_handler_install(prompt, on_line);
  input_t got = INPUT_LINE;
  int fd = fileno(rl_instream);
  while (!handler_done) {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    int n = pselect(fd + 1, &fds, NULL, NULL, NULL, &waiting);
    if (prompt_sigwinch) {
      prompt_sigwinch = 0;
      rl_resize_terminal();
    }
    if (prompt_sigint) {
      cancel_line();
      got = INPUT_CANCEL;
      break;
    }
    if (n < 0 && errno != EINTR) {
      rl_callback_handler_remove();
      got = INPUT_EOF;
      break;
    }
    if (n > 0) rl_callback_read_char();
  }
  sigprocmask(SIG_SETMASK, &saved, NULL);
  if (got == INPUT_LINE && !handler_line) {
    /* Ctrl-D: readline ends the line itself when it turns bracketed paste off. */
    const char *paste = rl_variable_value("enable-bracketed-paste");
    if (!paste || strcmp(paste, "on") != 0) fputc('\n', stdout);
    got = INPUT_EOF;
  }
  *line = handler_line;
  return got;
}

static input_t pipe_read_line(char **line) {
  size_t cap = 0;
  *line = NULL;
  ssize_t n = getline(line, &cap, stdin);
  if (n < 0) {
    free(*line);
    *line = NULL;
    return INPUT_EOF;
  }
  while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r')) (*line)[--n] = '\0';
  return INPUT_LINE;
}

/* ---- History ---- */

static bool is_blank(const char *s) {
  while (isspace((unsigned char)*s)) s++;
  return *s == '\0';
}

/* $SOLOBASE_HISTORY, else ~/.solobase_history; NULL without a home. Caller frees. */
static char *history_file(void) {
  const char *env = getenv("SOLOBASE_HISTORY");
  if (env && *env) return sb_xstrdup(env);
  const char *home = getenv("HOME");
  if (!home || !*home) {
    struct passwd *pw = getpwuid(getuid());
    home = pw ? pw->pw_dir : NULL;
  }
  return home ? sb_path_join(home, ".solobase_history") : NULL;
}

/* In memory a chunk keeps its newlines; in the file each entry is one line. */
static void history_translate(char from, char to) {
  for (int i = 0; i < history_length; i++) {
    HIST_ENTRY *h = history_get(history_base + i);
    if (!h) continue;
    for (char *p = h->line; *p; p++)
      if (*p == from) *p = to;
  }
}

static void history_open(repl_t *r) {
  using_history();
  stifle_history(HISTORY_MAX);
  r->history_path = history_file();
  if (!r->history_path) return;
  int rc = read_history(r->history_path);
  if (rc != 0 && rc != ENOENT)
    sb_warn("repl", "cannot read history from %s: %s", r->history_path, strerror(rc));
  history_translate(HISTORY_NEWLINE, '\n');
}

/* Adds text as typed, but not blank lines nor the entry just before again. */
static void history_remember(repl_t *r, const char *text) {
  if (!r->tty || is_blank(text)) return;
  HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last && strcmp(last->line, text) == 0) return;
  add_history(text);
  r->history_added++;
}

/* Appends this session's entries, so sessions side by side keep each other's. */
static void history_save(repl_t *r) {
  if (!r->history_path || r->history_added == 0) return;
  history_translate('\n', HISTORY_NEWLINE);
  int n = r->history_added < history_length ? r->history_added : history_length;
  struct stat st;
  bool exists = stat(r->history_path, &st) == 0;
  int rc = exists ? append_history(n, r->history_path) : write_history(r->history_path);
  if (rc != 0) {
    sb_warn("repl", "cannot save history to %s: %s", r->history_path, strerror(rc));
    return;
  }
  /* /dev/null keeps no history, and must not be replaced by a truncated copy. */
  if (!exists || S_ISREG(st.st_mode)) history_truncate_file(r->history_path, HISTORY_MAX);
}

/* ---- Chunks ---- */

static void chunk_add(chunk_t *c, const char *line, size_t len) {
  size_t need = c->len + (c->open ? 1 : 0) + len + 1;
  c->text = sb_xrealloc(c->text, need);
  if (c->open) c->text[c->len++] = '\n';
  memcpy(c->text + c->len, line, len);
  c->len += len;
  c->text[c->len] = '\0';
  c->open = true;
}

static void chunk_clear(chunk_t *c) {
  free(c->text);
  c->text = NULL;
  c->len = 0;
  c->open = false;
}

/* True when status is a syntax error at the end of the input: the chunk may go on. */
static bool incomplete(lua_State *L, int status) {
  static const char mark[] = "<eof>";
  size_t len, m = sizeof mark - 1;
  if (status != LUA_ERRSYNTAX) return false;
  const char *msg = lua_tolstring(L, -1, &len);
  return len >= m && strcmp(msg + len - m, mark) == 0;
}

/* Compiles c as an expression whose values are printed, else as statements. Pushes the
 * function (READY) or the statements' syntax error (BROKEN); pushes nothing when more
 * lines could complete it (INCOMPLETE), which is never so when final. */
static chunk_status_t compile(lua_State *L, const chunk_t *c, bool final) {
  static const char ret[] = "return ";
  size_t rlen = sizeof ret - 1;
  char *expr = sb_xmalloc(rlen + c->len);
  memcpy(expr, ret, rlen);
  memcpy(expr + rlen, c->text, c->len);
  int rc = luaL_loadbufferx(L, expr, rlen + c->len, CHUNKNAME, "t");
  free(expr);
  if (rc == LUA_OK) return CHUNK_READY;
  bool more = incomplete(L, rc);
  lua_pop(L, 1);
  rc = luaL_loadbufferx(L, c->text, c->len, CHUNKNAME, "t");
  if (rc == LUA_OK) return CHUNK_READY;
  if (!final && (more || incomplete(L, rc))) {
    lua_pop(L, 1);
    return CHUNK_INCOMPLETE;
  }
  return CHUNK_BROKEN;
}

/* A dry run's chunk runs in a savepoint once the session has a connection: rolled back
 * when the chunk leaves the transaction failed (as psql's ON_ERROR_ROLLBACK), else
 * released. Returns whether one was opened. */
static bool savepoint_open(repl_t *r) {
  sb_db_t *db = r->s->db;
  sb_error_t err;
  if (!r->s->dry_run || !db || PQstatus(db->conn) != CONNECTION_OK) return false;
  return sb_db_begin(db, &err) == 0;
}

static void savepoint_close(repl_t *r, bool opened) {
  sb_db_t *db = r->s->db;
  sb_error_t err;
  if (!r->s->dry_run || !db) return;
  bool failed = PQtransactionStatus(db->conn) == PQTRANS_INERROR;
  if (opened) {
    if ((failed ? sb_db_rollback(db, &err) : sb_db_commit(db, &err)) != 0)
      sb_warn("repl", "dry run: %s", err.msg);
  } else if (failed) {
    /* The chunk connected, so the failed transaction holds nothing but its own work. */
    while (db->tx_depth > 0) sb_db_rollback(db, &err);
    if (sb_db_begin(db, &err) != 0) sb_warn("repl", "dry run: %s", err.msg);
  }
}

/* Runs the function on top and prints what it returns; the stack ends as before. */
static void run(repl_t *r) {
  lua_State *L = r->L;
  int base = lua_gettop(L) - 1;
  sb_error_t err;
  bool savepoint = savepoint_open(r);
  uint64_t started = sb_now_ns();
  int rc = docall(r, 0, LUA_MULTRET, &err);
  uint64_t elapsed = sb_now_ns() - started;
  savepoint_close(r, savepoint);
  if (rc != 0) {
    report(r, err.msg);
  } else if (lua_gettop(L) > base) {
    int n = lua_gettop(L) - base;
    lua_pushcfunction(L, print_values);
    lua_insert(L, base + 1);
    if (docall(r, n, 0, &err) != 0) report(r, err.msg);
  }
  lua_settop(L, base);
  if (r->timing) printf("Time: %.3f ms\n", (double)elapsed / 1e6);
  fflush(stdout);
}

/* ---- Dot commands ---- */

static int print_api(lua_State *L);

static void dot_help(repl_t *r, const char *arg) {
  puts("Type Lua: an expression prints its values, statements run. A chunk goes on over\n"
       "several lines until it is complete. Locals last one chunk; globals stay.\n\n"
       "Dot commands, at the start of a line:");
  for (const dot_command_t *d = dot_commands; d->name; d++) {
    char usage[64];
    snprintf(usage, sizeof usage, ".%s %s", d->name, d->args);
    printf("  %-18s %s\n", usage, d->summary);
  }
  puts("\nThe sb API (sb.pretty.format shows a value as the REPL does):");
  fflush(stdout);
  sb_error_t err;
  lua_pushcfunction(r->L, print_api);
  if (sb_script_pcall(r->L, 0, 0, &err) != 0) report(r, err.msg);
  puts("\nExamples:\n"
       "  sb.db.query(\"SELECT name, price_monthly_cents FROM plans\")\n"
       "  sb.db.one(\"SELECT count(*) AS n FROM users WHERE status = $1\", \"active\").n\n"
       "  sb.db.query(\"SELECT * FROM plans WHERE code = $code\", {code = \"hobby\"})\n"
       "  sb.policy.versions()\n"
       "  sb.json.encode({plan = \"hobby\", seats = 3})\n\n"
       "Keys: Tab completes names (sb.db.q<Tab>, s:up<Tab>); Up, Down and Ctrl-R search\n"
       "the history; Ctrl-C clears the input or interrupts a running chunk; Ctrl-D on\n"
       "an empty line leaves.");
}

/* print_api(): one line per member of sb: a table's names, else its value. */
static int print_api(lua_State *L) {
  lua_pushglobaltable(L);
  raw_field(L, "sb", 2);               /* sb */
  lua_pushvalue(L, 1);
  push_names(L, "", false);            /* sb, members */
  int n;
  const char **members = sorted_names(L, &n); /* sb, members, sorted */
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, 1);
    raw_field(L, members[i], strlen(members[i])); /* ..., value */
    int col = printf("  sb.%-9s", members[i]);
    if (lua_istable(L, -1)) {
      push_names(L, "", false);        /* ..., names */
      int count;
      const char **names = sorted_names(L, &count);
      for (int j = 0; j < count; j++) {
        const char *sep = j ? ", " : " ";
        if (col + (int)strlen(sep) + (int)strlen(names[j]) > HELP_WIDTH - 5) {
          fputs(", ...", stdout);
          break;
        }
        col += printf("%s%s", sep, names[j]);
      }
      lua_pop(L, 2);
    } else {
      printf(" %s", luaL_tolstring(L, -1, NULL));
      lua_pop(L, 2);
    }
    putchar('\n');
  }
  lua_settop(L, 0);
  return 0;
}

static void dot_timing(repl_t *r, const char *arg) {
  if (!*arg) r->timing = !r->timing;
  else if (strcmp(arg, "on") == 0) r->timing = true;
  else if (strcmp(arg, "off") == 0) r->timing = false;
  else {
    fflush(stdout);
    fprintf(stderr, ".timing: expected on or off, not '%s'\n", arg);
    r->failed = true;
    return;
  }
  printf("Timing is %s.\n", r->timing ? "on" : "off");
}

/* A line whose first non-blank is a dot and a letter (".5" is Lua). */
static bool is_dot_command(const char *line) {
  while (isspace((unsigned char)*line)) line++;
  return line[0] == '.' && isalpha((unsigned char)line[1]);
}

static void dot_command(repl_t *r, char *line) {
  char *name = strchr(line, '.') + 1;
  char *p = name;
  while (isalnum((unsigned char)*p)) p++;
  char *arg = p;
  while (isspace((unsigned char)*arg)) arg++;
  char *end = arg + strlen(arg);
  while (end > arg && isspace((unsigned char)end[-1])) *--end = '\0';
  size_t len = (size_t)(p - name);
  for (const dot_command_t *d = dot_commands; d->name; d++) {
    if (strlen(d->name) == len && strncmp(d->name, name, len) == 0) {
      d->fn(r, arg);
      fflush(stdout);
      return;
    }
  }
  fflush(stdout);
  fprintf(stderr, "unknown command .%.*s; .help lists them\n", (int)len, name);
  r->failed = true;
}

/* ---- The loop ---- */

static input_t read_line(repl_t *r, bool more, char **line) {
  if (!r->tty) return pipe_read_line(line);
  const char *prompt = r->s->dry_run ? (more ? "sb(dry-run)>> " : "sb(dry-run)> ")
                                     : (more ? "sb>> " : "sb> ");
  return tty_read_line(prompt, line);
}

static void loop(repl_t *r) {
  chunk_t c = {0};
  while (!r->quit) {
    assert(lua_gettop(r->L) == 0);
    char *line;
    input_t in = read_line(r, c.open, &line);
    if (in == INPUT_CANCEL) {
      chunk_clear(&c);
      continue;
    }
    if (in == INPUT_EOF) {
      if (!c.open) break;
      if (compile(r->L, &c, true) == CHUNK_BROKEN) {
        report(r, lua_tostring(r->L, -1));
      }
      lua_settop(r->L, 0);
      history_remember(r, c.text);
      chunk_clear(&c);
      if (!r->tty) break;
      continue;
    }
    if (!c.open && (is_blank(line) || is_dot_command(line))) {
      if (!is_blank(line)) {
        history_remember(r, line);
        dot_command(r, line);
      }
      free(line);
      continue;
    }
    chunk_add(&c, line, strlen(line));
    free(line);
    chunk_status_t status = compile(r->L, &c, false);
    if (status == CHUNK_INCOMPLETE) continue;
    history_remember(r, c.text);
    chunk_clear(&c);
    if (status == CHUNK_READY) run(r);
    else report(r, lua_tostring(r->L, -1));
    lua_settop(r->L, 0);
  }
  chunk_clear(&c);
}

static void setup_readline(repl_t *r) {
  completing = r;
  rl_instream = stdin;
  rl_outstream = stdout;
  rl_readline_name = "solobase"; /* for $if solobase in ~/.inputrc */
  rl_catch_signals = 0;          /* SIGINT and SIGWINCH are ours (tty_read_line) */
  rl_catch_sigwinch = 0;
  set_handler(SIGINT, on_prompt_sigint, NULL);
  set_handler(SIGWINCH, on_prompt_sigwinch, NULL);
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#.:";
  history_open(r);
}

int sb_cmd_repl(int argc, char **argv) {
  static const struct option opts[] = {
      {"dry-run", no_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  bool dry_run = false;
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+nh", opts, NULL)) != -1) {
    if (c == 'n') dry_run = true;
    else if (c == 'h') {
      fputs("usage: solobase repl [--dry-run]\n\n"
            "Interactive Lua with the full sb API (docs/repl.md): expressions print their\n"
            "values, query results print as tables. .help lists the dot commands. Reads\n"
            "standard input without prompts when it is not a terminal, and then exits 1\n"
            "if any chunk failed.\n\n"
            "  -n, --dry-run   run the session in one transaction, rolled back at exit\n\n"
            "History: $SOLOBASE_HISTORY, else ~/.solobase_history.\n",
            stdout);
      return SB_EXIT_OK;
    } else {
      return sb_cli_bad_option("repl", argv);
    }
  }
  if (optind < argc) return sb_cli_usage_error("repl", "unexpected argument '%s'", argv[optind]);

  sb_error_t err;
  sb_script_t *s = sb_script_new("repl", dry_run, &err);
  if (!s) return sb_cli_fail_err(&err);
  repl_t r = {.s = s, .L = s->L, .tty = isatty(STDIN_FILENO)};
  r.notes = r.tty ? stdout : stderr;
  lua_pushcfunction(r.L, load_pretty);
  if (sb_script_pcall(r.L, 0, 0, &err) != 0) {
    sb_script_free(s);
    return sb_cli_fail_err(&err);
  }
  if (r.tty) {
    printf("solobase %s repl: %s with the sb API; .help for help\n", SB_VERSION, LUA_RELEASE);
    setup_readline(&r);
  }
  if (dry_run)
    fputs("dry run: the session is one transaction, rolled back at exit\n", r.notes);
  fflush(r.notes);

  loop(&r);

  if (r.tty) {
    history_save(&r);
    set_handler(SIGINT, SIG_DFL, NULL);
    set_handler(SIGWINCH, SIG_DFL, NULL);
  }
  bool touched = s->db != NULL;
  sb_script_free(s);
  if (dry_run)
    fputs(touched ? "dry run: rolled back everything the session did\n"
                  : "dry run: the session did not touch the database\n",
          r.notes);
  free(r.history_path);
  return r.tty || !r.failed ? SB_EXIT_OK : SB_EXIT_FAIL;
}
