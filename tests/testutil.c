#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "util.h"

char *src_path(const char *rel) {
  const char *root = getenv("RNNC_SOURCE_DIR");
  return xasprintf("%s/%s", root ? root : ".", rel);
}

char *tmp_path(const char *stem) {
  static int counter;
  const char *dir = getenv("RNNC_TMP_DIR");
  return xasprintf("%s/%s.%d.%d", dir ? dir : "/tmp", stem, (int)getpid(), counter++);
}

void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static char *slurp_or_empty(const char *path) {
  Err e;
  char *s = read_file(path, NULL, &e);
  return s ? s : xstrdup("");
}

int run_rnnc(const char *const *argv, char **out, char **err) {
  return run_rnnc_in(argv, NULL, out, err);
}

int run_rnnc_in(const char *const *argv, const char *in, char **out, char **err) {
  const char *bin = getenv("RNNC_BIN");
  assert_non_null(bin);
  char *o = tmp_path("stdout"), *e = tmp_path("stderr");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (!freopen(o, "wb", stdout) || !freopen(e, "wb", stderr) || (in && !freopen(in, "rb", stdin)))
      _exit(127);
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
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (out)
    *out = slurp_or_empty(o);
  if (err)
    *err = slurp_or_empty(e);
  unlink(o);
  unlink(e);
  free(o);
  free(e);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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

void assert_contains(const char *text, const char *fragment) {
  if (!strstr(text, fragment))
    fail_msg("output does not contain \"%s\":\n%s", fragment, text);
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

float *jit_logits(const char *graph, const char *ckpt, const NameList *ns, int *classes) {
  Model m;
  Err e;
  ModelOptions mo = {.no_train = true};
  char **labels = NULL;
  int nlabels = 0;
  if (model_compile(&m, graph, &mo, &e) || ckpt_load(&m, ckpt, false, &labels, &nlabels, &e))
    fail_msg("%s", e.msg);
  for (int i = 0; i < nlabels; i++)
    free(labels[i]);
  free(labels);
  int C = *classes = model_classes(&m);
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
                           "logits untouched: 1\n"
                           "forward len max: 0\n"
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
  float *jit = jit_logits(graph, ckpt, ns, &C);
  double worst = 0, worst_p = 0, worst_g = 0;
  int same = 0;
  const char *p = text;
  for (int i = 0; i < ns->n; i++) {
    char *end;
    int rc = (int)strtol(p, &end, 10), cls = (int)strtol(end, &end, 10);
    float a[256], pr[256];
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
    double sum = 0;
    for (int k = 0; k < C; k++) {
      best = a[k] > a[best] ? k : best;
      worst = fmax(worst, fabs((double)a[k] - j[k]) / fmax(1, fabs(j[k])));
      same += !memcmp(&a[k], &j[k], sizeof(float));
      if (c->golden && i < ns->ngolden)
        worst_g = fmax(worst_g, fabs((double)a[k] - c->golden[(size_t)i * C + k]));
    }
    if (cls != best)
      fail_msg("%s: P_predict gave class %d for %s, the argmax of P_forward is %d", what, cls,
               ns->s[i], best);
    for (int k = 0; k < C; k++)
      sum += exp((double)a[k] - a[best]);
    for (int k = 0; k < C; k++)
      worst_p = fmax(worst_p, fabs(pr[k] - exp((double)a[k] - a[best]) / sum));
  }
  int nl = ns->n * C;
  print_message("%s: %d names, %d of %d logits bit-identical to the JIT's (zero noise), max "
                "relative difference %.3g; probabilities within %.3g of a double softmax",
                what, ns->n, same, nl, worst, worst_p);
  if (c->golden)
    print_message("; PyTorch's golden logits within %.3g", worst_g);
  print_message("\n");
  if (c->exact && same != nl)
    fail_msg("%s: the same code on the same CPU, but %d of %d logits differ from the JIT's", what,
             nl - same, nl);
  if (worst > c->tol)
    fail_msg("%s: logits differ from the JIT's by %g (relative), more than %g", what, worst,
             c->tol);
  if (worst_p > 1e-6)
    fail_msg("%s: probabilities differ from the softmax by %g", what, worst_p);
  if (c->golden && worst_g > 1e-4)
    fail_msg("%s: logits differ from PyTorch's by %g", what, worst_g);
  assert_string_equal(p, c->tail);
  free(jit);
}
