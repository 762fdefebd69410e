#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "util.h"

char *src_path(const char *rel) {
  if (rel[0] == '/') /* already absolute: a test's own file */
    return xstrdup(rel);
  const char *root = getenv("RNNC_SOURCE_DIR");
  return xasprintf("%s/%s", root ? root : ".", rel);
}

char *tmp_path(const char *stem) {
  static int counter;
  const char *dir = getenv("RNNC_TMP_DIR");
  for (;;) { /* a path no earlier run (of a process with this pid) left behind */
    char *p = xasprintf("%s/%s.%d.%d", dir ? dir : "/tmp", stem, (int)getpid(), counter++);
    struct stat st;
    if (lstat(p, &st) < 0)
      return p;
    free(p);
  }
}

void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

void shrink_file(const char *path, size_t n) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true((size_t)st.st_size >= n);
  assert_int_equal(truncate(path, st.st_size - (off_t)n), 0);
}

char *noisy_rnn_graph(void) {
  Err e;
  char *rnn = src_path("graphs/rnn.nn"), *text = read_file(rnn, NULL, &e);
  assert_non_null(text);
  char *at = strstr(text, "concat(x, h)");
  assert_non_null(at);
  char *noisy = xasprintf("%.*sconcat(x, h + kaiming_uniform(H))%s", (int)(at - text), text,
                          at + strlen("concat(x, h)"));
  char *path = tmp_path("noisy.nn");
  write_text(path, noisy);
  free(noisy);
  free(text);
  free(rnn);
  return path;
}

static char *slurp_or_empty(const char *path) {
  Err e;
  char *s = read_file(path, NULL, &e);
  return s ? s : xstrdup("");
}

/* In the child: fd (0..2) onto path, NULL for /dev/null, "-" closed. */
static void redirect(int fd, const char *path) {
  if (path && !strcmp(path, "-")) {
    close(fd);
    return;
  }
  int f = open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (f < 0 || dup2(f, fd) < 0)
    _exit(127);
  close(f);
}

/* spawn_rnnc, with standard input read from the file in (NULL: inherited). */
static pid_t spawn_in(const char *const *argv, const char *const *env, const char *in,
                      const char *out, const char *err) {
  const char *bin = getenv("RNNC_BIN");
  assert_non_null(bin);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The signals rnnc handles, as a terminal gives them (the test may
     * run with some ignored). */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (in && !freopen(in, "rb", stdin))
      _exit(127);
    redirect(1, out);
    redirect(2, err);
    for (size_t i = 0; env && env[i]; i++) {
      const char *eq = strchr(env[i], '=');
      char *name = strndup(env[i], (size_t)(eq - env[i]));
      setenv(name, eq + 1, 1);
    }
    size_t n = 0;
    while (argv[n])
      n++;
    char **args = calloc(n + 2, sizeof *args);
    args[0] = (char *)bin;
    for (size_t i = 0; i < n; i++)
      args[i + 1] = (char *)argv[i];
    execv(bin, args);
    _exit(127);
  }
  return pid;
}

int wait_rnnc(pid_t pid) {
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int wait_rnnc_for(pid_t pid, double seconds, struct rusage *ru) {
  struct rusage r;
  int status;
  for (int ms = 0;; ms += 10) {
    pid_t got = wait4(pid, &status, WNOHANG, &r);
    assert_true(got >= 0);
    if (got == pid)
      break;
    if (ms >= seconds * 1000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fail_msg("rnnc still running after %.0f s: killed", seconds);
    }
    usleep(10000);
  }
  if (ru)
    *ru = r;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

pid_t spawn_rnnc(const char *const *argv, const char *const *env, const char *out,
                 const char *err) {
  return spawn_in(argv, env, NULL, out, err);
}

int run_rnnc(const char *const *argv, char **out, char **err) {
  return run_rnnc_in(argv, NULL, out, err);
}

int run_rnnc_in(const char *const *argv, const char *in, char **out, char **err) {
  char *o = tmp_path("stdout"), *e = tmp_path("stderr");
  int status = wait_rnnc(spawn_in(argv, NULL, in, o, e));
  if (out)
    *out = slurp_or_empty(o);
  if (err)
    *err = slurp_or_empty(e);
  unlink(o);
  unlink(e);
  free(o);
  free(e);
  return status < 0 ? -1 : status;
}

char *rnnc_expect(int want_status, const char *const *argv) {
  char *out, *err;
  int status = run_rnnc(argv, &out, &err);
  if (status != want_status)
    fail_msg("rnnc %s ...: exit %d, want %d\nstdout: %s\nstderr: %s", argv[0] ? argv[0] : "",
             status, want_status, out, err);
  char *all = xasprintf("%s%s", out, err);
  free(out);
  free(err);
  return all;
}

void rnnc_build(const char *graph, const char *ckpt, const char *obj, BuildFlags f) {
  const char *argv[16] = {"build", graph, ckpt, "-o", obj};
  int n = 5;
  const char *const opts[][2] = {{"--prefix", f.prefix}, {"--target", f.target}, {"--cpu", f.cpu},
                                 {"--quantize", f.quantize ? "int8" : NULL}};
  for (size_t i = 0; i < ARRAY_LEN(opts); i++)
    if (opts[i][1]) {
      argv[n++] = opts[i][0];
      argv[n++] = opts[i][1];
    }
  if (f.no_batch)
    argv[n++] = "--no-batch-kernel";
  argv[n] = NULL;
  free(rnnc_expect(0, argv));
}

void assert_contains(const char *text, const char *fragment) {
  if (!strstr(text, fragment))
    fail_msg("output does not contain \"%s\":\n%s", fragment, text);
}

char *make_data_dir(const char *const *langs, const int *per, int n) {
  char *dir = tmp_path("names");
  assert_int_equal(mkdir(dir, 0755), 0);
  for (int i = 0; i < n; i++) {
    char *rel = xasprintf("data/names/%s.txt", langs[i]);
    char *src = src_path(rel);
    Err e;
    char *text = read_file(src, NULL, &e);
    assert_non_null(text);
    char *end = text;
    for (int k = 0; k < per[i] && (end = strchr(end, '\n')); k++)
      end++;
    if (end)
      *end = '\0';
    char *dst = xasprintf("%s/%s.txt", dir, langs[i]);
    write_text(dst, text);
    free(dst);
    free(text);
    free(src);
    free(rel);
  }
  return dir;
}

/* text with its one occurrence of from replaced by to (text is freed). */
static char *replace(char *text, const char *from, const char *to) {
  char *at = strstr(text, from);
  assert_non_null(at);
  char *r = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
  free(text);
  return r;
}

char *make_graph(const char *rel, int H, int C) {
  char *src = src_path(rel);
  Err e;
  char *text = read_file(src, NULL, &e);
  assert_non_null(text);
  free(src);
  char h[32], c[32];
  snprintf(h, sizeof h, "const H = %d", H);
  snprintf(c, sizeof c, "const C = %d", C);
  text = replace(replace(text, "const H = 256", h), "const C = 18", c);
  const char *base = strrchr(rel, '/');
  char *path = tmp_path(base ? base + 1 : rel);
  write_text(path, text);
  free(text);
  return path;
}

char *make_rnn_graph(int H, int C) { return make_graph("graphs/rnn.nn", H, C); }

/* Rewrites the metadata of a safetensors file: key set to value (added
 * when absent; value NULL removes it). */
void st_set_meta(const char *path, const char *key, const char *value) {
  StFile f;
  Err e;
  if (st_load(&f, path, &e))
    fail_msg("%s", e.msg);
  char *keys[32], *vals[32];
  int n = 0;
  bool done = false;
  for (int k = 0; k < f.nmeta && n < 31; k++) {
    if (!strcmp(f.meta_keys[k], key)) {
      done = true;
      if (!value)
        continue;
    }
    keys[n] = f.meta_keys[k];
    vals[n++] = !strcmp(f.meta_keys[k], key) ? (char *)value : f.meta_vals[k];
  }
  if (!done && value) {
    keys[n] = (char *)key;
    vals[n++] = (char *)value;
  }
  if (st_save(path, f.tensors, f.ntensors, keys, vals, n, &e))
    fail_msg("%s", e.msg);
  st_free(&f);
}

bool host_has(const char *flag) {
  Err e;
  char *cpuinfo = read_file("/proc/cpuinfo", NULL, &e);
  char *pat = xasprintf(" %s", flag);
  bool has = false;
  for (const char *p = cpuinfo; p && (p = strstr(p, pat)); p++)
    if (p[strlen(pat)] == ' ' || p[strlen(pat)] == '\n')
      has = true;
  free(pat);
  free(cpuinfo);
  return has;
}

int sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char cmd[8192];
  int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  assert_true(n > 0 && (size_t)n < sizeof cmd);
  int st = system(cmd);
  return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

char *read_text(const char *path) {
  Err e;
  char *s = read_file(path, NULL, &e);
  if (!s)
    fail_msg("%s", e.msg);
  return s;
}

int count_disassembled(const char *objdump, const char *obj, const char *needle) {
  char *out = xasprintf("%s.dis", obj);
  if (sh("%s -d '%s' > '%s'", objdump, obj, out))
    fail_msg("%s -d %s failed", objdump, obj);
  char *text = read_text(out);
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p++)
    n++;
  free(text);
  free(out);
  return n;
}

size_t count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  size_t n = 0;
  int c;
  if (!f)
    return 0;
  while ((c = getc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}

char *graph_variant(const char *rel, ...) {
  char *src = src_path(rel);
  char *text = read_text(src);
  free(src);
  va_list ap;
  va_start(ap, rel);
  for (const char *from; (from = va_arg(ap, const char *));) {
    const char *to = va_arg(ap, const char *);
    char *at = strstr(text, from);
    if (!at)
      fail_msg("%s has no '%s' to replace", rel, from);
    char *r = xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    free(text);
    text = r;
  }
  va_end(ap);
  char *path = tmp_path("variant.nn");
  write_text(path, text);
  free(text);
  return path;
}

NameList name_list_load(const char *ckpt, bool edge_cases) {
  StFile golden;
  Err e;
  char *path = src_path(ckpt);
  if (st_load(&golden, path, &e))
    fail_msg("%s", e.msg);
  free(path);
  NameList ns = {0};
  const char *list = st_meta(&golden, "names");
  assert_non_null(list);
  static const char *const extra[] = {
      "a", "Z", "O'Neill", "Smith-Jones", "de la Cruz", "St. John", "x:y;z,",
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;-'",
      "Wolfeschlegelsteinhausenbergerdorffwelchevoralternwarengewissenhaft"};
  ns.s = xcalloc(64, sizeof *ns.s);
  for (const char *p = list;;) {
    const char *end = strchr(p, '\n');
    ns.s[ns.n++] = end ? xstrndup(p, (size_t)(end - p)) : xstrdup(p);
    if (!end)
      break;
    p = end + 1;
  }
  ns.ngolden = ns.n;
  for (size_t i = 0; edge_cases && i < ARRAY_LEN(extra); i++)
    /* the last is cut to 64 (xstrndup copies n bytes, whatever the length) */
    ns.s[ns.n++] = xstrndup(extra[i], strnlen(extra[i], OBJ_MAX_LEN));
  st_free(&golden);
  return ns;
}

void name_list_free(NameList *ns) {
  for (int i = 0; i < ns->n; i++)
    free(ns->s[i]);
  free(ns->s);
}

/* graph's inference model with ckpt's weights. */
static void load_model(Model *m, const char *graph, const char *ckpt) {
  Err e;
  ModelOptions mo = {.no_train = true};
  char **labels = NULL;
  int nlabels = 0;
  if (model_compile(m, graph, &mo, &e) || ckpt_load(m, ckpt, false, &labels, &nlabels, &e))
    fail_msg("%s", e.msg);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
}

float *jit_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes,
                  bool quantized) {
  Model m;
  load_model(&m, graph, ckpt);
  int C = *classes = model_classes(&m);
  if (quantized)
    quantized_values(m.fwd, m.state, m.state);
  model_reserve(&m, OBJ_MAX_LEN);
  float *zeros = xcalloc(m.fwd_abi.noise + 1, sizeof *zeros);
  int32_t chars[OBJ_MAX_LEN];
  float *out = xmalloc((size_t)ns->n * (size_t)C * sizeof *out);
  for (int i = 0; i < ns->n; i++) {
    int len = (int)strlen(ns->s[i]);
    for (int t = 0; t < len; t++) {
      chars[t] = vocab_index((unsigned char)ns->s[i][t]);
      assert_true(chars[t] >= 0);
    }
    m.fwd_fn(m.state, chars, len, 0, zeros, m.ws[0].scratch, m.tmax, 0, m.ws[0].out);
    memcpy(out + (size_t)i * C, m.ws[0].out, (size_t)C * sizeof *out);
  }
  free(zeros);
  model_free(&m);
  return out;
}

float *interp_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes,
                     bool int8_dot) {
  Model m;
  load_model(&m, graph, ckpt);
  int C = *classes = model_classes(&m);
  Interp *I = interp_new(m.fwd, true);
  double *v = interp_slot(I, SLOT_VALUE);
  for (size_t i = 0; i < m.fwd->nfloats; i++)
    v[i] = m.state[i];
  interp_set_object(I, int8_dot);
  int32_t chars[OBJ_MAX_LEN];
  float *out = xmalloc((size_t)ns->n * (size_t)C * sizeof *out);
  Err e;
  for (int i = 0; i < ns->n; i++) {
    int len = (int)strlen(ns->s[i]);
    for (int t = 0; t < len; t++)
      chars[t] = vocab_index((unsigned char)ns->s[i][t]);
    if (interp_run(I, chars, len, 0, &e))
      fail_msg("%s", e.msg);
    size_t n;
    const double *lg = interp_value(I, m.fwd->output, &n);
    assert_int_equal(n, C);
    for (int k = 0; k < C; k++)
      out[(size_t)i * C + k] = (float)lg[k];
  }
  interp_free(I);
  model_free(&m);
  return out;
}

int check_int8_reference_differs(const char *graph, const char *ckpt, const char *what, double tol) {
  NameList ns = name_list_load(ckpt, false);
  int C, far = 0;
  float *in = interp_logits(graph, ckpt, &ns, &C, true);
  float *jit = jit_logits(graph, ckpt, &ns, &C, true);
  double d = 0;
  for (int i = 0; i < ns.n; i++) {
    double dn = 0;
    for (int k = 0; k < C; k++)
      dn = fmax(dn, fabs((double)in[i * C + k] - jit[i * C + k]) / fmax(1, fabs(jit[i * C + k])));
    d = fmax(d, dn);
    far += dn >= 10 * tol;
  }
  print_message("%s: int8 x int8 against int8 x float logits: max relative difference %.3g, %d of %d "
                "names' more than %g\n",
                what, d, far, ns.n, 10 * tol);
  if (d < 10 * tol)
    fail_msg("%s: the int8 x int8 reference is within %g of the int8 x float logits", what, d);
  free(in);
  free(jit);
  name_list_free(&ns);
  return far;
}

void write_driver_names(const char *dir, const NameList *ns) {
  Buf c = {0}, json = {0};
  buf_printf(&c, "static const char *const names[] = {\n");
  buf_printf(&json, "[");
  for (int i = 0; i < ns->n; i++) {
    buf_printf(&c, "    \"");
    buf_printf(&json, "%s\"", i ? ", " : "");
    for (const char *p = ns->s[i]; *p; p++) { /* ASCII: escape " and \ */
      const char *fmt = *p == '"' || *p == '\\' ? "\\%c" : "%c";
      buf_printf(&c, fmt, *p);
      buf_printf(&json, fmt, *p);
    }
    buf_printf(&c, "\",\n");
    buf_printf(&json, "\"");
  }
  buf_printf(&c, "};\n");
  buf_printf(&json, "]\n");
  char *path = xasprintf("%s/names.h", dir);
  write_text(path, c.data);
  free(path);
  path = xasprintf("%s/names.json", dir);
  write_text(path, json.data);
  free(path);
  buf_free(&c);
  buf_free(&json);
}

const char driver_tail[] = "forward len 0: 1\n"
                           "forward len -1: 1\n"
                           "forward len max+1: 1\n"
                           "forward index 59: 2\n"
                           "forward index -1: 2\n"
                           "forward NULL chars: 3\n"
                           "forward NULL logits: 3\n"
                           "logits untouched: 1\n"
                           "forward len max: 0\n"
                           "batch n 0: 3\n"
                           "batch n -1: 3\n"
                           "batch NULL: 3 3 3\n"
                           "batch len 0: 1\n"
                           "batch len -3: 1\n"
                           "batch len max+1: 1\n"
                           "batch len 100000: 1\n"
                           "batch index 59: 2\n"
                           "batch index -1: 2\n"
                           "batch untouched: 1\n"
                           "batch good: 0\n"
                           "predict \"\": -1\n"
                           "predict a/b: -1\n"
                           "predict NULL: -1\n"
                           "predict non-ASCII: -1\n"
                           "predict max length: 1\n"
                           "predict max length+1: -1\n"
                           "labels: Arabic Vietnamese\n"
                           "done\n";

void check_aot_output(const char *what, const char *graph, const char *ckpt, const NameList *ns,
                      const char *text, const AotCheck *c) {
  int C;
  float *jit = c->int8_dot ? interp_logits(graph, ckpt, ns, &C, true)
                           : jit_logits(graph, ckpt, ns, &C, c->quantized);
  double worst = 0, worst_p = 0, worst_g = 0, worst_loose = 0;
  int same = 0, loose = 0;
  const char *p = text;
  float *fwd = xcalloc((size_t)ns->n * (size_t)C, sizeof *fwd);
  for (int i = 0; i < ns->n; i++) {
    char *end;
    int rc = (int)strtol(p, &end, 10), cls = (int)strtol(end, &end, 10);
    float *a = fwd + (size_t)i * C, pr[256];
    assert_true(C <= 256);
    for (int k = 0; k < 2 * C; k++) {
      uint32_t u = (uint32_t)strtoul(end, &end, 16);
      memcpy(k < C ? &a[k] : &pr[k - C], &u, sizeof u);
    }
    if (rc != 0 || *end != '\n')
      fail_msg("%s: unexpected output for name %d (%s):\n%s", what, i, ns->s[i], text);
    p = end + 1;
    const float *j = jit + (size_t)i * C;
    int best = 0;
    double sum = 0, dn = 0;
    for (int k = 0; k < C; k++) {
      best = a[k] > a[best] ? k : best;
      dn = fmax(dn, fabs((double)a[k] - j[k]) / fmax(1, fabs(j[k])));
      same += !memcmp(&a[k], &j[k], sizeof(float));
      if (c->golden && i < ns->ngolden)
        worst_g = fmax(worst_g, fabs((double)a[k] - c->golden[(size_t)i * C + k]));
    }
    if (c->loose_tol > 0 && dn > c->tol) {
      loose++;
      worst_loose = fmax(worst_loose, dn);
    } else
      worst = fmax(worst, dn);
    if (cls != best)
      fail_msg("%s: P_predict gave class %d for %s, the argmax of P_forward is %d", what, cls,
               ns->s[i], best);
    if (c->same_class && i < ns->ngolden) {
      const float *f = c->same_class + (size_t)i * C;
      int fb = 0;
      for (int k = 0; k < C; k++)
        fb = f[k] > f[fb] ? k : fb;
      if (fb != best)
        fail_msg("%s: class %d for %s, where the float model's is %d", what, best, ns->s[i], fb);
    }
    for (int k = 0; k < C; k++)
      sum += exp((double)a[k] - a[best]);
    for (int k = 0; k < C; k++)
      worst_p = fmax(worst_p, fabs(pr[k] - exp((double)a[k] - a[best]) / sum));
  }
  /* driver.c's P_forward_batch of all the names: P_forward's logits, the
   * sums in another order (GEMMs) */
  double worst_b = -1;
  if (!strncmp(p, "batch: ", 7)) {
    char *end;
    int rc = (int)strtol(p + 7, &end, 10);
    if (rc != 0 || *end != '\n')
      fail_msg("%s: P_forward_batch of all the names returned %d", what, rc);
    worst_b = 0;
    for (int i = 0; i < ns->n; i++) {
      for (int k = 0; k < C; k++) {
        uint32_t u = (uint32_t)strtoul(end, &end, 16);
        float b, a = fwd[(size_t)i * C + k];
        memcpy(&b, &u, sizeof b);
        worst_b = fmax(worst_b, fabs((double)b - a) / fmax(1, fabs(a)));
        if (isnan(b))
          worst_b = INFINITY;
      }
      if (*end != '\n')
        fail_msg("%s: unexpected P_forward_batch output for name %d:\n%s", what, i, text);
    }
    p = end + 1;
  }
  int nl = ns->n * C;
  print_message("%s: %d names, %d of %d logits bit-identical to the %s (zero noise), max "
                "relative difference %.3g; probabilities within %.3g of a double softmax",
                what, ns->n, same, nl, c->int8_dot ? "interpreter's int8 arithmetic" : "JIT's", worst,
                worst_p);
  if (c->loose_tol > 0)
    print_message("; %d names beyond it (a quantized input rounded the other way), within %.3g", loose,
                  worst_loose);
  if (worst_b >= 0)
    print_message("; P_forward_batch within %.3g of P_forward", worst_b);
  if (c->golden)
    print_message("; PyTorch's golden logits within %.3g", worst_g);
  print_message("\n");
  if (c->exact && same != nl)
    fail_msg("%s: the same code on the same CPU, but %d of %d logits differ from the JIT's", what,
             nl - same, nl);
  if (loose > c->max_loose || worst_loose > c->loose_tol)
    fail_msg("%s: %d names' logits differ from the reference by more than %g (at most %d may), up to %g "
             "(at most %g)",
             what, loose, c->tol, c->max_loose, worst_loose, c->loose_tol);
  if (worst > c->tol)
    fail_msg("%s: logits differ from the JIT's by %g (relative), more than %g", what, worst,
             c->tol);
  if (worst_p > 1e-6)
    fail_msg("%s: probabilities differ from the softmax by %g", what, worst_p);
  if (worst_b > 1e-5)
    fail_msg("%s: P_forward_batch's logits differ from P_forward's by %g (relative)", what, worst_b);
  if (c->golden && worst_g > 1e-4)
    fail_msg("%s: logits differ from PyTorch's by %g", what, worst_g);
  assert_string_equal(p, c->tail);
  free(fwd);
  free(jit);
}

char *tails_checkpoint(const char *dir) {
  char *raw = xasprintf("%s/tails0.safetensors", dir), *ck = xasprintf("%s/tails.safetensors", dir);
  free(rnnc_expect(0, (const char *const[]){"train", TAILS_GRAPH, "--epochs", "0", "--no-cache", "--out", raw,
                                            NULL}));
  StFile f, golden;
  Err e;
  if (st_load(&f, raw, &e) || st_load(&golden, "tests/golden/gru_seed42.safetensors", &e))
    fail_msg("%s", e.msg);
  char **keys = xcalloc((size_t)f.nmeta + 1, sizeof *keys), **vals = xcalloc((size_t)f.nmeta + 1, sizeof *vals);
  for (int i = 0; i < f.nmeta; i++) {
    keys[i] = f.meta_keys[i];
    vals[i] = f.meta_vals[i];
  }
  keys[f.nmeta] = "names";
  vals[f.nmeta] = (char *)st_meta(&golden, "names");
  assert_non_null(vals[f.nmeta]);
  if (st_save(ck, f.tensors, f.ntensors, keys, vals, f.nmeta + 1, &e))
    fail_msg("%s", e.msg);
  free(keys);
  free(vals);
  st_free(&f);
  st_free(&golden);
  free(raw);
  return ck;
}
