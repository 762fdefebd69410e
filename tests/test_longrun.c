/* test_longrun.c: long trainings a person watches, stops and resumes
 * (issue 17), on a small graph and data set:
 *
 * - SIGINT or SIGTERM at a random step (several seeds; batch 1, and
 *   minibatches on two threads): rnnc exits 130 or 143 with a checkpoint
 *   that records the position in the epoch, the command it prints resumes
 *   there, and the resumed training ends with the bytes of one never
 *   stopped, its metrics file with the same lines (but the clock's);
 * - a second SIGINT while the first one's checkpoint is written ends rnnc
 *   at once, leaving the last complete checkpoint and no temporary;
 * - kill -9 at a random step: the metrics file parses line by line, and a
 *   resumed training cuts it back to the checkpoint's step;
 * - --eval-every with --keep-best: the best checkpoint is the evaluation
 *   the metrics file marks best, and rnnc eval of it finds that accuracy;
 * - the progress line: redrawn on a terminal (a pseudo-terminal here),
 *   a line at a time in a log, with names/s, the time left, the running
 *   loss and the last test accuracy;
 * - rnnc plot: librsvg (rsvg-convert) renders its SVG into a PNG that has
 *   the curves' and the heat map's colours (a blank picture fails the same
 *   check); the HTML page refers to nothing outside itself.
 *
 * The steps are slowed with tests/fault_shim.c (a sleep in every write to
 * a file: one metrics line per step), so that a signal sent after the
 * metrics file shows step k arrives a few steps later, however fast the
 * machine. */
#define _XOPEN_SOURCE 700 /* posix_openpt and friends */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "testutil.h"

static char *data_dir, *graph;

enum { EPOCHS = 2 };

static int setup(void **state) {
  data_dir = make_data_dir((const char *const[]){"Arabic", "Chinese", "Greek", "Japanese"},
                           (const int[]){50, 50, 50, 50}, 4);
  graph = make_rnn_graph(16, 4);
  return 0;
}

static int teardown(void **state) {
  free(data_dir);
  free(graph);
  return 0;
}

static void sleep_ms(double ms) {
  struct timespec ts = {(time_t)(ms / 1e3), (long)(fmod(ms, 1e3) * 1e6)};
  nanosleep(&ts, NULL);
}

static bool same_file(const char *a, const char *b) {
  Err e;
  size_t na, nb;
  char *x = read_file(a, &na, &e), *y = read_file(b, &nb, &e);
  bool same = x && y && na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return same;
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* The lines of a metrics file, each parsed (fails the test on a line that
 * is not a JSON object, or a last line without its newline). */
static json_t *read_metrics(const char *path) {
  char *text = read_text(path);
  json_t *lines = json_array();
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    if (!nl)
      fail_msg("%s: the last line has no newline: '%s'", path, p);
    json_error_t jerr;
    json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
    if (!json_is_object(o))
      fail_msg("%s: line %zu is not a JSON object: %s", path, json_array_size(lines) + 1,
               jerr.text);
    json_array_append_new(lines, o);
    p = nl + 1;
  }
  free(text);
  return lines;
}

/* Two runs' metrics agree but for the clock: every line the same. */
static void same_metrics(const char *a, const char *b) {
  json_t *x = read_metrics(a), *y = read_metrics(b);
  assert_int_equal(json_array_size(x), json_array_size(y));
  for (size_t i = 0; i < json_array_size(x); i++) {
    json_t *p = json_array_get(x, i), *q = json_array_get(y, i);
    const char *clock[] = {"time", "names_per_s"};
    for (int k = 0; k < 2; k++) {
      assert_true(json_is_number(json_object_get(p, clock[k])) ==
                  json_is_number(json_object_get(q, clock[k])));
      json_object_del(p, clock[k]);
      json_object_del(q, clock[k]);
    }
    if (!json_equal(p, q)) {
      char *s = json_dumps(p, 0), *t = json_dumps(q, 0);
      fail_msg("line %zu of %s and %s differ:\n%s\n%s", i + 1, a, b, s, t);
    }
  }
  json_decref(x);
  json_decref(y);
}

typedef struct Config {
  const char *batch, *threads;
} Config;

static const Config configs[] = {{"1", "1"}, {"4", "2"}};

/* Starts a training of EPOCHS epochs (argv ends with extra, NULL-terminated
 * or NULL) into out with a metrics line every step, slowed by the shim
 * when slow. */
static pid_t start(const Config *c, const char *out, const char *metrics, bool slow,
                   const char *const *extra, const char *err) {
  const char *argv[32] = {"train", graph, "--data", data_dir, "--epochs", "2", "--seed", "7",
                          "--batch", c->batch, "--threads", c->threads, "--out", out,
                          "--metrics", metrics, "--metrics-every", "1"};
  int n = 18;
  for (int i = 0; extra && extra[i]; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  static char preload[4096];
  snprintf(preload, sizeof preload, "LD_PRELOAD=%s", getenv("RNNC_FAULT_SHIM"));
  const char *env[] = {preload, "RNNC_SLOW_WRITE_US=1500",
                       "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  return spawn_rnnc(argv, slow ? env : NULL, NULL, err);
}

/* Waits until the metrics file has k lines (the training is at step k or
 * later: one line per step, and one per evaluation). */
static void wait_for_step(const char *metrics, size_t k, pid_t pid) {
  for (int i = 0; count_lines(metrics) < k; i++) {
    if (i > 60000)
      fail_msg("rnnc (pid %d) did not reach step %zu in a minute", (int)pid, k);
    sleep_ms(1);
  }
}

/* The command rnnc printed to resume (after "To resume:"), run: split at
 * spaces (the test's paths have none), its first two words "rnnc train". */
static int run_resume_command(const char *err_file) {
  char *text = read_text(err_file);
  char *at = strstr(text, "To resume:\n  ");
  if (!at)
    fail_msg("no resume command in:\n%s", text);
  at += strlen("To resume:\n  ");
  char *end = strchr(at, '\n');
  assert_non_null(end);
  *end = '\0';
  const char *argv[64];
  int n = 0;
  for (char *w = strtok(at, " "); w && n < 63; w = strtok(NULL, " "))
    argv[n++] = w;
  argv[n] = NULL;
  assert_true(n > 2 && !strcmp(argv[0], "rnnc") && !strcmp(argv[1], "train"));
  char *out = NULL, *err = NULL;
  int rc = run_rnnc(argv + 1, &out, &err);
  if (rc)
    fail_msg("the resume command failed (%d): %s", rc, err);
  free(out);
  free(err);
  free(text);
  return rc;
}

/* Item 3: stop at a random step, resume, compare with a run never
 * stopped. */
static void test_stop_and_resume(void **state) {
  Rng r;
  rng_seed(&r, 17);
  for (size_t c = 0; c < ARRAY_LEN(configs); c++) {
    char *dir = tmp_path("stop");
    assert_int_equal(mkdir(dir, 0755), 0);
    char *ref = xasprintf("%s/ref.safetensors", dir), *ref_m = xasprintf("%s/ref.jsonl", dir);
    assert_int_equal(wait_rnnc(start(&configs[c], ref, ref_m, false, NULL, NULL)), 0);
    char *ref_opt = ckpt_optim_path(ref);
    size_t lines = count_lines(ref_m);
    for (int seed = 0; seed < 3; seed++) {
      int sig = seed % 2 ? SIGTERM : SIGINT;
      char *out = xasprintf("%s/x%d.safetensors", dir, seed);
      char *m = xasprintf("%s/x%d.jsonl", dir, seed), *err = xasprintf("%s/x%d.err", dir, seed);
      /* Stop in the first epoch, or well inside the second. */
      size_t k = 2 + rng_below(&r, (uint32_t)(lines - 40));
      pid_t pid = start(&configs[c], out, m, true, NULL, err);
      wait_for_step(m, k, pid);
      kill(pid, sig);
      int rc = wait_rnnc(pid);
      if (rc != 128 + sig)
        fail_msg("rnnc train stopped by signal %d at line %zu: exit %d, want %d:\n%s", sig, k,
                 rc, 128 + sig, read_text(err));
      StFile f;
      Err e;
      assert_int_equal(st_load_header(&f, out, &e), 0);
      const char *step = st_meta(&f, "step");
      bool mid_epoch = st_meta(&f, "position") != NULL;
      print_message("batch %s: signal %d after metrics line %zu: stopped at step %s%s\n",
                    configs[c].batch, sig, k, step, mid_epoch ? " (mid-epoch)" : "");
      st_free(&f);
      assert_int_equal(run_resume_command(err), 0);
      char *opt = ckpt_optim_path(out);
      assert_true(same_file(out, ref));
      assert_true(same_file(opt, ref_opt));
      same_metrics(m, ref_m);
      free(opt);
      free(out);
      free(m);
      free(err);
    }
    free(ref_opt);
    free(ref);
    free(ref_m);
    free(dir);
  }
}

/* Item 3: a position that cannot be resumed is refused with what to do:
 * another --seed, other data, a damaged "position". */
static void test_resume_refused(void **state) {
  char *dir = tmp_path("refused");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *ck = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  const char *one_epoch[] = {"--epochs", "1", NULL};
  assert_int_equal(wait_rnnc(start(&configs[0], ck, m, false, one_epoch, NULL)), 0);
  const char *rng = "\"rng\":[\"0000000000000001\",\"0000000000000002\",\"0000000000000003\","
                    "\"0000000000000004\"],\"loss_sum\":1.5,\"running_loss\":1.25}";
  struct {
    const char *position, *message;
  } cases[] = {
      {"{\"names\":5,\"seed\":\"0000000000000008\",", "resume it with --seed 8"},
      {"{\"names\":5000,\"seed\":\"0000000000000007\",", "has 180 names to train on"},
      {"{\"names\":-5,\"seed\":\"0000000000000007\",", "metadata \"position\" is"},
      {"{\"names\":5,\"seed\":\"7\",", "a damaged or hand-edited checkpoint"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *position = xasprintf("%s%s", cases[i].position, rng);
    st_set_meta(ck, "position", position);
    const char *argv[] = {"train", graph, "--data", data_dir, "--seed", "7", "--init", ck,
                          "--out", ck, NULL};
    char *err = rnnc_expect(1, argv);
    assert_contains(err, cases[i].message);
    free(err);
    free(position);
  }
  free(ck);
  free(m);
  free(dir);
}

static bool has_temp(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  bool found = false;
  struct dirent *de;
  while ((de = readdir(d)))
    found |= !strncmp(de->d_name, ".rnnc-", 6);
  closedir(d);
  return found;
}

/* Item 3: a second SIGINT while the checkpoint of the first is written
 * ends rnnc at once: the last complete checkpoint stays, no temporary,
 * no lock. */
static void test_second_interrupt(void **state) {
  char *dir = tmp_path("twice");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  char *epoch1 = xasprintf("%s/one.safetensors", dir), *m1 = xasprintf("%s/one.jsonl", dir);
  char *lock = xasprintf("%s.lock", out);
  const char *one_epoch[] = {"--epochs", "1", NULL};
  assert_int_equal(wait_rnnc(start(&configs[0], epoch1, m1, false, one_epoch, NULL)), 0);
  size_t k = count_lines(m1) + 20; /* in epoch 2 */
  char preload[4096];
  snprintf(preload, sizeof preload, "LD_PRELOAD=%s", getenv("RNNC_FAULT_SHIM"));
  const char *env[] = {preload, "RNNC_SLOW_WRITE_US=1500", "RNNC_SLOW_FSYNC_US=300000",
                       "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "2", "--seed", "7",
                        "--out", out, "--metrics", m, "--metrics-every", "1", NULL};
  pid_t pid = spawn_rnnc(argv, env, NULL, NULL);
  wait_for_step(m, k, pid);
  kill(pid, SIGINT);
  while (!has_temp(dir)) /* the stop's checkpoint is being written */
    sleep_ms(1);
  kill(pid, SIGINT);
  assert_int_equal(wait_rnnc(pid), -SIGINT);
  assert_false(has_temp(dir));
  assert_false(file_exists(lock));
  char *opt = ckpt_optim_path(out), *opt1 = ckpt_optim_path(epoch1);
  assert_true(same_file(out, epoch1));
  assert_true(same_file(opt, opt1));
  free(opt);
  free(opt1);
  free(lock);
  free(out);
  free(m);
  free(epoch1);
  free(m1);
  free(dir);
}

/* Item 1: kill -9 at a random step leaves a metrics file that parses
 * line by line; resuming from the checkpoint cuts it back to the
 * checkpoint's step and ends with the lines of a run never killed. */
static void test_metrics_after_kill(void **state) {
  char *dir = tmp_path("metrics");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *ref = xasprintf("%s/ref.safetensors", dir), *ref_m = xasprintf("%s/ref.jsonl", dir);
  char *out = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  assert_int_equal(wait_rnnc(start(&configs[1], ref, ref_m, false, NULL, NULL)), 0);
  size_t lines = count_lines(ref_m);
  Rng r;
  rng_seed(&r, 3);
  for (int i = 0; i < 3; i++) {
    size_t k = lines / 2 + 2 + rng_below(&r, (uint32_t)(lines / 2 - 12)); /* epoch 2 */
    pid_t pid = start(&configs[1], out, m, true, NULL, NULL);
    wait_for_step(m, k, pid);
    kill(pid, SIGKILL);
    assert_int_equal(wait_rnnc(pid), -SIGKILL);
    json_t *got = read_metrics(m); /* every line parses */
    assert_true(json_array_size(got) >= k);
    json_decref(got);
    const char *resume[] = {"--init", out, "--epochs", "1", NULL};
    assert_int_equal(wait_rnnc(start(&configs[1], out, m, false, resume, NULL)), 0);
    same_metrics(m, ref_m);
    assert_true(same_file(out, ref));
    unlink(out);
    unlink(m);
    char *opt = ckpt_optim_path(out);
    unlink(opt);
    free(opt);
  }
  free(ref);
  free(ref_m);
  free(out);
  free(m);
  free(dir);
}

/* Item 4: --eval-every and --keep-best. The best checkpoint holds the
 * evaluation the metrics file marks as the last best; rnnc eval of it
 * finds the same accuracy; the report names its epoch and step. The
 * evaluations leave training as it was: the last checkpoint is that of a
 * training without them. */
static void test_keep_best(void **state) {
  char *dir = tmp_path("best");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  char *best = xasprintf("%s/x.best.safetensors", dir);
  char *plain = xasprintf("%s/plain.safetensors", dir), *plain_m = xasprintf("%s/plain.jsonl", dir);
  assert_int_equal(wait_rnnc(start(&configs[0], plain, plain_m, false, NULL, NULL)), 0);
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "2", "--seed", "7",
                        "--out", out, "--metrics", m, "--eval-every", "25", "--keep-best", NULL};
  char *report = rnnc_expect(0, argv);
  assert_true(same_file(out, plain));
  json_t *lines = read_metrics(m);
  json_t *last_best = NULL;
  int evals = 0;
  double top = -1;
  for (size_t i = 0; i < json_array_size(lines); i++) {
    json_t *o = json_array_get(lines, i);
    if (strcmp(json_string_value(json_object_get(o, "type")), "eval"))
      continue;
    evals++;
    double acc = json_number_value(json_object_get(o, "accuracy"));
    assert_true(json_is_true(json_object_get(o, "best")) == (acc > top));
    if (acc > top) {
      top = acc;
      last_best = o;
    }
  }
  assert_non_null(last_best);
  assert_true(evals > 4);
  long long step = json_integer_value(json_object_get(last_best, "step"));
  long long correct = json_integer_value(json_object_get(last_best, "correct"));
  long long n = json_integer_value(json_object_get(last_best, "n"));
  int epoch = (int)json_integer_value(json_object_get(last_best, "epoch"));
  char want[256];
  snprintf(want, sizeof want, "best checkpoint: %s, test accuracy %.2f%% (%lld/%lld) at epoch %d, step %lld",
           best, 100.0 * correct / n, correct, n, epoch, step);
  assert_contains(report, want);
  const char *eval[] = {"eval", graph, best, "--data", data_dir, "--seed", "7", NULL};
  char *ev = rnnc_expect(0, eval);
  snprintf(want, sizeof want, "(%lld of %lld)", correct, n);
  assert_contains(ev, want);
  print_message("%d evaluations; best %lld/%lld at epoch %d, step %lld\n", evals, correct, n,
                epoch, step);
  json_decref(lines);
  free(ev);
  free(report);
  free(plain);
  free(plain_m);
  free(best);
  free(out);
  free(m);
  free(dir);
}

/* Item 5: the progress line on a terminal and in a log. */
static void test_progress_line(void **state) {
  char *dir = tmp_path("progress");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  char *log = xasprintf("%s/log.txt", dir);
  /* A terminal: stderr on a pseudo-terminal, read here as rnnc runs. */
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  assert_true(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
  pid_t pid = start(&configs[0], out, m, true, NULL, ptsname(master));
  Buf seen = {0};
  int status = 0;
  for (bool done = false; !done;) {
    struct pollfd p = {.fd = master, .events = POLLIN};
    done = waitpid(pid, &status, WNOHANG) == pid;
    while (poll(&p, 1, done ? 0 : 10) > 0 && (p.revents & POLLIN)) {
      char chunk[4096];
      ssize_t got = read(master, chunk, sizeof chunk);
      if (got <= 0)
        break;
      buf_put(&seen, chunk, (size_t)got);
    }
  }
  close(master);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  buf_put(&seen, "", 1);
  /* Redrawn in place; after the first epoch's evaluation, its accuracy. */
  assert_contains(seen.data, "\r\033[Kepoch 1/2 [");
  assert_contains(seen.data, "names/s  loss ");
  assert_contains(seen.data, "ETA ");
  assert_contains(seen.data, "\r\033[Kepoch 2/2 [########################] 100.0% 180/180");
  char *second = strstr(seen.data, "epoch 2/2 [");
  assert_non_null(second);
  assert_contains(second, "  test ");
  buf_free(&seen);
  /* A log: a line per report. */
  unlink(out);
  assert_int_equal(wait_rnnc(start(&configs[0], out, m, false, NULL, log)), 0);
  char *text = read_text(log);
  assert_null(strchr(text, '\r'));
  assert_contains(text, "epoch 1/2: 180/180 names, ");
  char *line = strstr(text, "epoch 2/2: 180/180 names, ");
  assert_non_null(line);
  assert_contains(line, " names/s, running loss ");
  assert_contains(line, ", test ");
  free(text);
  free(log);
  free(out);
  free(m);
  free(dir);
}

/* The pixels of an 8-bit RGB or RGBA PNG (what rsvg-convert writes), as
 * RGBA: w * h * 4 bytes (malloc'd), or NULL with *why. */
static unsigned char *png_rgba(const char *path, int *w, int *h, const char **why) {
  size_t n;
  Err e;
  unsigned char *f = (unsigned char *)read_file(path, &n, &e);
  *why = "not a PNG";
  if (!f || n < 8 || memcmp(f, "\x89PNG\r\n\x1a\n", 8)) {
    free(f);
    return NULL;
  }
  Buf idat = {0};
  bool rgba = false;
  int ch = 4;
  for (size_t p = 8; p + 12 <= n;) {
    size_t len = (size_t)f[p] << 24 | (size_t)f[p + 1] << 16 | (size_t)f[p + 2] << 8 | f[p + 3];
    const unsigned char *type = f + p + 4, *d = f + p + 8;
    if (p + 12 + len > n)
      break;
    if (!memcmp(type, "IHDR", 4)) {
      *w = (int)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
      *h = (int)((uint32_t)d[4] << 24 | (uint32_t)d[5] << 16 | (uint32_t)d[6] << 8 | d[7]);
      /* 8 bits, RGB or RGBA, not interlaced */
      rgba = d[8] == 8 && (d[9] == 2 || d[9] == 6) && d[12] == 0;
      ch = d[9] == 2 ? 3 : 4;
    } else if (!memcmp(type, "IDAT", 4)) {
      buf_put(&idat, d, len);
    }
    p += 12 + len;
  }
  free(f);
  size_t stride = (size_t)*w * (size_t)ch, raw_n = (stride + 1) * (size_t)*h;
  unsigned char *raw = rgba && *w > 0 && *h > 0 ? malloc(raw_n) : NULL;
  uLongf got = (uLongf)raw_n;
  if (!raw || uncompress(raw, &got, (unsigned char *)idat.data, (uLong)idat.len) != Z_OK ||
      got != raw_n) {
    *why = rgba ? "its pixels do not inflate" : "not 8-bit RGB or RGBA";
    free(raw);
    buf_free(&idat);
    return NULL;
  }
  buf_free(&idat);
  /* Undo the rows' filters (PNG spec, section 9). */
  unsigned char *rows = xmalloc(stride * (size_t)*h);
  for (int y = 0; y < *h; y++) {
    const unsigned char *in = raw + (size_t)y * (stride + 1) + 1;
    unsigned char *out = rows + (size_t)y * stride, *up = y ? out - stride : NULL;
    size_t bpp = (size_t)ch;
    for (size_t x = 0; x < stride; x++) {
      int a = x >= bpp ? out[x - bpp] : 0, b = up ? up[x] : 0;
      int c = up && x >= bpp ? up[x - bpp] : 0;
      int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
      int pred = 0;
      switch (in[-1]) {
      case 1: pred = a; break;
      case 2: pred = b; break;
      case 3: pred = (a + b) / 2; break;
      case 4: pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c; break;
      }
      out[x] = (unsigned char)(in[x] + pred);
    }
  }
  free(raw);
  unsigned char *px = xmalloc((size_t)*w * (size_t)*h * 4);
  for (size_t i = 0; i < (size_t)*w * (size_t)*h; i++) {
    memcpy(px + 4 * i, rows + (size_t)ch * i, 3);
    px[4 * i + 3] = ch == 4 ? rows[4 * i + 3] : 255;
  }
  free(rows);
  return px;
}

/* Whether an SVG renders to a picture with ink: rsvg-convert to PNG, then
 * the share of pixels that are not white, and those near each colour of
 * want (0xRRGGBB, n of them), counted into found. */
static double render_ink(const char *svg, const unsigned *want, int n, int *found) {
  char *png = xasprintf("%s.png", svg);
  if (sh("rsvg-convert '%s' -o '%s'", svg, png) != 0)
    fail_msg("rsvg-convert cannot render %s (is librsvg2-bin installed? sh scripts/install-deps "
             "--test)", svg);
  int w = 0, h = 0;
  const char *why;
  unsigned char *px = png_rgba(png, &w, &h, &why);
  if (!px)
    fail_msg("%s: %s", png, why);
  size_t ink = 0;
  for (int k = 0; k < n; k++)
    found[k] = 0;
  for (size_t i = 0; i < (size_t)w * h; i++) {
    const unsigned char *p = px + 4 * i;
    /* over white */
    int rgb[3];
    for (int c = 0; c < 3; c++)
      rgb[c] = (p[c] * p[3] + 255 * (255 - p[3])) / 255;
    ink += rgb[0] < 240 || rgb[1] < 240 || rgb[2] < 240;
    for (int k = 0; k < n; k++) {
      int d = abs(rgb[0] - (int)(want[k] >> 16)) + abs(rgb[1] - (int)(want[k] >> 8 & 255)) +
              abs(rgb[2] - (int)(want[k] & 255));
      found[k] += d < 24;
    }
  }
  free(px);
  free(png);
  return (double)ink / ((double)w * h);
}

/* Item 2: rnnc plot's SVG renders with the curves and the heat map; a
 * blank SVG fails the same check; the HTML page is self-contained. */
static void test_plot(void **state) {
  char *dir = tmp_path("plot");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *m = xasprintf("%s/x.jsonl", dir);
  char *svg = xasprintf("%s/report.svg", dir), *html = xasprintf("%s/report.html", dir);
  const char *train[] = {"train", graph, "--data", data_dir, "--epochs", "2", "--seed", "7",
                         "--out", out, "--metrics", m, "--metrics-every", "5",
                         "--eval-every", "40", NULL};
  free(rnnc_expect(0, train));
  /* A kill inside a write leaves a partial last line: left out. */
  FILE *f = fopen(m, "a");
  assert_non_null(f);
  fputs("{\"type\":\"train\",\"epo", f);
  fclose(f);
  const char *plot[] = {"plot", m, "-o", svg, NULL}, *page[] = {"plot", m, "-o", html, NULL};
  free(rnnc_expect(0, plot));
  free(rnnc_expect(0, page));
  /* The training loss, the test loss, the accuracy; the heat map's
   * diagonal (a full green) and its language names (black text). */
  const unsigned colours[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0x000000};
  const char *what[] = {"training loss", "test loss", "accuracy", "text"};
  int found[4];
  double ink = render_ink(svg, colours, 4, found);
  print_message("rendered: %.1f%% of the pixels inked; %d, %d, %d and %d pixels of the "
                "training loss's, test loss's, accuracy's and the text's colours\n",
                100 * ink, found[0], found[1], found[2], found[3]);
  assert_true(ink > 0.03);
  for (int k = 0; k < 4; k++)
    if (found[k] < 50)
      fail_msg("%s: %d pixels of the %s's colour", svg, found[k], what[k]);
  char *text = read_text(svg);
  for (const char *lang = "Arabic\0Chinese\0Greek\0Japanese\0"; *lang; lang += strlen(lang) + 1)
    assert_contains(text, lang);
  free(text);
  /* The same check fails on a blank picture. */
  char *blank = xasprintf("%s/blank.svg", dir);
  write_text(blank, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"300\">"
                    "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/></svg>\n");
  assert_true(render_ink(blank, colours, 4, found) < 0.001);
  assert_true(found[0] == 0 && found[2] == 0);
  /* Self-contained: no reference to another file or address. */
  char *page_text = read_text(html);
  assert_contains(page_text, "<svg");
  assert_null(strstr(page_text, "href"));
  assert_null(strstr(page_text, "src="));
  assert_null(strstr(page_text, "url("));
  free(page_text);
  /* Errors: no -o; a file that is not a metrics log. */
  const char *no_out[] = {"plot", m, NULL}, *not_log[] = {"plot", graph, "-o", svg, NULL};
  free(rnnc_expect(2, no_out));
  char *err = rnnc_expect(1, not_log);
  assert_contains(err, "not a line of rnnc train --metrics");
  free(err);
  free(blank);
  free(svg);
  free(html);
  free(out);
  free(m);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stop_and_resume),
      cmocka_unit_test(test_resume_refused),
      cmocka_unit_test(test_second_interrupt),
      cmocka_unit_test(test_metrics_after_kill),
      cmocka_unit_test(test_keep_best),
      cmocka_unit_test(test_progress_line),
      cmocka_unit_test(test_plot),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
