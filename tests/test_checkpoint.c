/* test_checkpoint.c: a checkpoint is a pair of files (weights, optimizer
 * state) that must stay one pair whatever happens while rnnc train writes
 * it, on a small graph and data set:
 *
 * - kill -9 at random moments during checkpoint writes (fsync slowed by
 *   tests/fault_shim.c), over and over, those of epochs' ends and those of
 *   a training stopped mid-epoch by SIGTERM: every time, the pair on disk
 *   loads as --init loads it, and resuming after every kill ends with the
 *   same bytes as a training never interrupted;
 * - a full disk (ENOSPC) at every write of a save: the old pair stays;
 * - two trainings into one --out: the second is refused while the first
 *   runs; weights and optimizer state of two runs are never taken as one
 *   pair, even at the same step;
 * - a save stopped between its renames resumes from the old pair;
 *   checkpoints written before pair ids still load;
 * - a checkpoint opened (ckpt_open, as predict and eval read one: the
 *   header once, the tensors straight into the parameters) reads what
 *   ckpt_load reads, from the file it opened even when a training renames
 *   a new one over its path; cut short after it was opened, it is an
 *   error naming the tensor. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"

static char *data_dir, *graph;
static Model model; /* the graph compiled for training: loads as --init does */
static size_t ntrain; /* names per epoch: steps = epochs * ntrain */

static int setup(void **state) {
  data_dir = make_data_dir((const char *const[]){"Chinese", "Greek", "Japanese"},
                           (const int[]){30, 30, 30}, 3);
  graph = make_rnn_graph(16, 3);
  Err e;
  ModelOptions mo = {0};
  if (model_compile(&model, graph, &mo, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return -1;
  }
  Dataset ds;
  if (data_load(&ds, data_dir, NULL, 0, VOCAB_NAMES, NULL, &e) || data_split(&ds, 0.1, 42, &e))
    return -1;
  ntrain = ds.ntrain;
  data_free(&ds);
  return 0;
}

static int teardown(void **state) {
  model_free(&model);
  free(data_dir);
  free(graph);
  return 0;
}

static void sleep_ms(double ms) {
  struct timespec ts = {(time_t)(ms / 1e3), (long)(fmod(ms, 1e3) * 1e6)};
  nanosleep(&ts, NULL);
}

static char *slurp(const char *path, size_t *len) {
  Err e;
  char *s = read_file(path, len, &e);
  if (!s)
    fail_msg("%s", e.msg);
  return s;
}

static bool same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  bool same = na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return same;
}

static void copy_file(const char *from, const char *to) {
  size_t n;
  char *s = slurp(from, &n);
  FILE *f = fopen(to, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(s, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
  free(s);
}

/* Loads ckpt as --init does and checks that it is one complete pair: the
 * optimizer state of the weights' own step was found (a training stopped
 * mid-epoch: the steps of its epochs and of its position in the next).
 * Returns the epochs it has done. */
static int load_pair(const char *ckpt) {
  Err e;
  char **labels;
  int n;
  if (ckpt_load(&model, ckpt, true, &labels, &n, &e))
    fail_msg("%s does not load: %s", ckpt, e.msg);
  for (int i = 0; i < n; i++)
    free(labels[i]);
  free(labels);
  StFile f;
  if (st_load_header(&f, ckpt, &e))
    fail_msg("%s", e.msg);
  const char *step = st_meta(&f, "step");
  assert_non_null(step);
  if (model.step != atoll(step) || model.step != (int64_t)ntrain * model.epoch + model.pos.names)
    fail_msg("%s: step %s, loaded with its optimizer state at step %lld, epoch %d and %lld names",
             ckpt, step, (long long)model.step, model.epoch, (long long)model.pos.names);
  st_free(&f);
  return model.epoch;
}

/* Temporaries are hidden .rnnc-* files (today .rnnc-tmp-XXXXXX). */
static bool is_temp(const char *name) { return !strncmp(name, ".rnnc-", 6); }

/* Removes the temporaries a killed process left in dir; returns how many. */
static int remove_temps(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)))
    if (is_temp(de->d_name)) {
      char *p = xasprintf("%s/%s", dir, de->d_name);
      unlink(p);
      free(p);
      n++;
    }
  closedir(d);
  return n;
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Waits until a temporary appears in dir while pid runs (true), or pid
 * ends first (false, with its wait status). */
static bool wait_for_temp(const char *dir, pid_t pid, int *status) {
  for (;;) {
    if (waitpid(pid, status, WNOHANG) != 0)
      return false;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    bool found = false;
    while ((de = readdir(d)))
      found |= is_temp(de->d_name);
    closedir(d);
    if (found)
      return true;
    sleep_ms(1);
  }
}

/* Starts rnnc train of `epochs` epochs into out, from out when it exists;
 * with metrics, a metrics line every step. */
static pid_t start_training_metrics(const char *out, int epochs, const char *metrics,
                                    const char *const *env, const char *err) {
  char n[16];
  snprintf(n, sizeof n, "%d", epochs);
  bool resume = file_exists(out);
  const char *argv[20] = {"train", graph, "--data", data_dir, "--epochs", n, "--seed", "7",
                          "--out", out};
  int k = 10;
  if (resume) {
    argv[k++] = "--init";
    argv[k++] = out;
  }
  if (metrics) {
    argv[k++] = "--metrics";
    argv[k++] = metrics;
    argv[k++] = "--metrics-every";
    argv[k++] = "1";
  }
  argv[k] = NULL;
  return spawn_rnnc(argv, env, NULL, err);
}

static pid_t start_training(const char *out, int epochs, const char *const *env,
                            const char *err) {
  return start_training_metrics(out, epochs, NULL, env, err);
}

static const char *shim(void) {
  const char *s = getenv("RNNC_FAULT_SHIM");
  assert_non_null(s);
  return s;
}

enum { EPOCHS = 3, KILLS = 30 };

/* Item 1 of issue 12: kill -9 at random moments of checkpoint writes.
 * Every other run is first stopped by SIGTERM at a random step (issue 17:
 * steps slowed by a metrics line each), so that the kill lands in the
 * writing of a checkpoint with a position in the epoch. */
static void test_kill_during_saves(void **state) {
  char *dir = tmp_path("kill"), *ref_dir = tmp_path("kill-ref");
  assert_int_equal(mkdir(dir, 0755), 0);
  assert_int_equal(mkdir(ref_dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *ref = xasprintf("%s/x.safetensors", ref_dir);
  char *opt = ckpt_optim_path(out), *ref_opt = ckpt_optim_path(ref);
  assert_int_equal(wait_rnnc(start_training(ref, EPOCHS, NULL, NULL)), 0);

  enum { FSYNC_MS = 15 };
  char *preload = xasprintf("LD_PRELOAD=%s", shim());
  char slow[64];
  snprintf(slow, sizeof slow, "RNNC_SLOW_FSYNC_US=%d", FSYNC_MS * 1000);
  const char *env[] = {preload, slow, "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  const char *slow_steps[] = {preload, slow, "RNNC_SLOW_WRITE_US=500",
                              "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  char *metrics = xasprintf("%s/x.jsonl", dir);
  Rng r;
  rng_seed(&r, 12);
  int kills = 0, in_write = 0, chains = 0, done = 0, runs = 0, positions = 0;
  int stop_writes = 0; /* kills inside the save of a run stopped by SIGTERM */
  while (kills < KILLS || done < EPOCHS) {
    if (done == EPOCHS) { /* a chain ended: check it, start another */
      assert_true(same_file(out, ref));
      assert_true(same_file(opt, ref_opt));
      unlink(out);
      unlink(opt);
      done = 0;
      chains++;
    }
    bool stop = runs++ % 2;
    if (stop)
      unlink(metrics); /* the lines of this run only */
    pid_t pid = stop ? start_training_metrics(out, EPOCHS - done, metrics, slow_steps, NULL)
                     : start_training(out, EPOCHS - done, env, NULL);
    int status;
    bool running = true;
    if (stop) { /* SIGTERM at a random step of the run: after k metrics lines */
      size_t k = 1 + rng_below(&r, (uint32_t)ntrain * (uint32_t)(EPOCHS - done));
      while ((running = waitpid(pid, &status, WNOHANG) == 0) && count_lines(metrics) < k)
        sleep_ms(1);
      if (running)
        kill(pid, SIGTERM);
    }
    /* Wait for a save to begin (a temporary appears), then kill at a
     * random moment of the next ~6 fsyncs: a save takes about 5. After a
     * stop, up to 8: a third of those kills come after the save, and the
     * chain resumes from its position. */
    if (running && wait_for_temp(dir, pid, &status)) {
      sleep_ms(rng_uniform(&r, 0, (stop ? 8 : 6) * FSYNC_MS));
      kill(pid, SIGKILL);
      assert_int_equal(waitpid(pid, &status, 0), pid);
      kills++;
      bool temps = remove_temps(dir) > 0;
      in_write += temps;
      stop_writes += stop && temps;
    }
    assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) == 0 ||
                (stop && WEXITSTATUS(status) == 128 + SIGTERM));
    if (file_exists(out)) { /* stopped mid-epoch: that epoch counts in EPOCHS - done */
      done = load_pair(out);
      positions += model.pos.names > 0;
    }
  }
  /* The last chain: every kill resumed, the end is the uninterrupted run. */
  assert_true(same_file(out, ref));
  assert_true(same_file(opt, ref_opt));
  print_message("%d kills (%d with a temporary on disk, %d of them after a SIGTERM), %d chains "
                "of %d epochs: every pair loaded (%d with a position in the epoch), every chain "
                "ended with the uninterrupted run's bytes\n",
                kills, in_write, stop_writes, chains + 1, EPOCHS, positions);
  assert_true(in_write > KILLS / 2);
  assert_true(stop_writes > 0);
  free(metrics);
  free(preload);
  free(out);
  free(ref);
  free(opt);
  free(ref_opt);
  free(dir);
  free(ref_dir);
}

/* Item 1: the disk full at each write of a save in turn. */
static void test_disk_full(void **state) {
  char *dir = tmp_path("full");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *opt = ckpt_optim_path(out);
  char *w1 = xasprintf("%s/w1", dir), *o1 = xasprintf("%s/o1", dir);
  assert_int_equal(wait_rnnc(start_training(out, 1, NULL, NULL)), 0);
  copy_file(out, w1);
  copy_file(opt, o1);
  char *preload = xasprintf("LD_PRELOAD=%s", shim());
  char *err = tmp_path("stderr");
  /* A save is 16 writes: the optimizer state's length, header and 8
   * tensors, then the weights' length, header and 4 tensors. The disk
   * fills at the first write of each file, in its header, in its data and
   * at its last write; at 17 the save is done. */
  static const int from_write[] = {1, 2, 5, 10, 11, 12, 14, 16, 17};
  int failed = 0;
  for (size_t i = 0; i < ARRAY_LEN(from_write); i++) {
    int k = from_write[i];
    char from[64];
    snprintf(from, sizeof from, "RNNC_ENOSPC_FROM_WRITE=%d", k);
    const char *env[] = {preload, from, "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
    int status = wait_rnnc(start_training(out, 1, env, err));
    if (k == 17) {
      assert_int_equal(status, 0); /* past the last write of a save */
      break;
    }
    failed++;
    size_t n;
    char *msg = slurp(err, &n);
    assert_int_equal(status, 1);
    assert_contains(msg, "No space left on device");
    free(msg);
    /* The old pair, as it was, and nothing else. */
    assert_int_equal(load_pair(out), 1);
    assert_true(same_file(out, w1));
    assert_true(same_file(opt, o1));
    assert_int_equal(remove_temps(dir), 0);
  }
  assert_int_equal(load_pair(out), 2);
  print_message("ENOSPC from %d points of a save: the old pair stayed each time\n", failed);
  free(err);
  free(preload);
  free(w1);
  free(o1);
  free(out);
  free(opt);
  free(dir);
}

/* Items 1 and 5: the rename that puts the new weights in place fails.
 * The old optimizer state goes back, or, when there was no old pair, the
 * new optimizer state goes too: no orphan NAME.optim.safetensors. */
static void test_weights_rename_fails(void **state) {
  char *dir = tmp_path("rename");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *opt = ckpt_optim_path(out);
  char *w1 = xasprintf("%s/w1", dir), *o1 = xasprintf("%s/o1", dir);
  char *preload = xasprintf("LD_PRELOAD=%s", shim());
  /* No pair yet: the save renames the optimizer state (1), the weights (2). */
  const char *first[] = {preload, "RNNC_FAIL_RENAME=2", "ASAN_OPTIONS=verify_asan_link_order=0",
                         NULL};
  assert_int_equal(wait_rnnc(start_training(out, 1, first, NULL)), 1);
  assert_false(file_exists(out));
  assert_false(file_exists(opt));
  assert_int_equal(remove_temps(dir), 0);
  /* A pair: the old optimizer state to .prev (1), the new one (2), the
   * weights (3). */
  assert_int_equal(wait_rnnc(start_training(out, 1, NULL, NULL)), 0);
  copy_file(out, w1);
  copy_file(opt, o1);
  const char *again[] = {preload, "RNNC_FAIL_RENAME=3", "ASAN_OPTIONS=verify_asan_link_order=0",
                         NULL};
  assert_int_equal(wait_rnnc(start_training(out, 1, again, NULL)), 1);
  assert_true(same_file(out, w1));
  assert_true(same_file(opt, o1));
  char *prev = xasprintf("%s.prev", opt);
  assert_false(file_exists(prev));
  assert_int_equal(load_pair(out), 1);
  free(prev);
  free(preload);
  free(w1);
  free(o1);
  free(out);
  free(opt);
  free(dir);
}

/* Item 2: a second training into the same --out is refused while the
 * first one runs, naming it. */
static void test_concurrent_writers(void **state) {
  char *dir = tmp_path("two");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *lock = xasprintf("%s.lock", out);
  char *preload = xasprintf("LD_PRELOAD=%s", shim());
  const char *env[] = {preload, "RNNC_SLOW_FSYNC_US=300000",
                       "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  pid_t first = start_training(out, 3, env, NULL);
  /* Wait until the first one holds the lock (its pid is in the file). */
  char *pid = xasprintf("%ld\n", (long)first);
  for (int i = 0; i < 20000; i++) {
    Err e;
    char *s = read_file(lock, NULL, &e);
    bool held = s && !strcmp(s, pid);
    free(s);
    if (held)
      break;
    sleep_ms(1);
  }
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--out", out, NULL};
  char *s = rnnc_expect(1, argv);
  assert_contains(s, "is being written by another rnnc (pid ");
  char *who = xasprintf("(pid %ld)", (long)first);
  assert_contains(s, who);
  free(who);
  free(s);
  assert_int_equal(wait_rnnc(first), 0);
  assert_false(file_exists(lock)); /* removed as the first one finished */
  assert_int_equal(load_pair(out), 3);
  free(pid);
  free(preload);
  free(lock);
  free(out);
  free(dir);
}

/* A damaged optimizer state beside good weights is refused by --init as
 * damaged, not as the state of another training. */
static void test_damaged_optim_refused(void **state) {
  (void)state;
  char *dir = tmp_path("damaged");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *a = xasprintf("%s/a.safetensors", dir), *b = xasprintf("%s/b.safetensors", dir);
  char *oa = ckpt_optim_path(a);
  const char *ra[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--out", a, NULL};
  free(rnnc_expect(0, ra));
  struct stat st;
  assert_int_equal(stat(oa, &st), 0);
  shrink_file(oa, (size_t)st.st_size / 2); /* cut in its tensors' data */
  const char *resume[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--init", a,
                          "--out", b, NULL};
  char *s = rnnc_expect(1, resume);
  assert_contains(s, "the optimizer state beside");
  assert_contains(s, "cannot be read (");
  assert_null(strstr(s, "not one checkpoint"));
  assert_null(strstr(s, "?)."));
  free(s);
  free(a);
  free(b);
  free(oa);
  free(dir);
}

/* Item 2: weights of one run and optimizer state of another, at the same
 * step, are refused by --init (and eval, which reads the weights only,
 * still works). */
static void test_mixed_pair_refused(void **state) {
  char *dir = tmp_path("mix");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *a = xasprintf("%s/a.safetensors", dir), *b = xasprintf("%s/b.safetensors", dir);
  char *oa = ckpt_optim_path(a), *ob = ckpt_optim_path(b);
  const char *ra[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--seed", "1",
                      "--out", a, NULL};
  const char *rb[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--seed", "2",
                      "--out", b, NULL};
  free(rnnc_expect(0, ra));
  free(rnnc_expect(0, rb));
  copy_file(ob, oa); /* a's weights, b's optimizer state: both at step ntrain */
  const char *resume[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--init", a,
                          "--out", b, NULL};
  char *s = rnnc_expect(1, resume);
  assert_contains(s, "are not one checkpoint");
  assert_contains(s, "pair id");
  free(s);
  free(rnnc_expect(0, (const char *const[]){"eval", graph, a, "--data", data_dir, NULL}));
  free(a);
  free(b);
  free(oa);
  free(ob);
  free(dir);
}

/* A save stopped between renaming the new optimizer state into place and
 * the new weights (steps 3 and 4 in checkpoint.c): the old weights, the
 * new optimizer state, the old one in .prev. --init takes the old pair,
 * and one more epoch gives what an uninterrupted run gives. */
static void test_stopped_between_renames(void **state) {
  char *dir = tmp_path("between");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *one = xasprintf("%s/one.safetensors", dir), *two = xasprintf("%s/two.safetensors", dir);
  char *x = xasprintf("%s/x.safetensors", dir), *y = xasprintf("%s/y.safetensors", dir);
  char *o1 = ckpt_optim_path(one), *o2 = ckpt_optim_path(two), *ox = ckpt_optim_path(x);
  char *px = xasprintf("%s.prev", ox), *oy = ckpt_optim_path(y);
  assert_int_equal(wait_rnnc(start_training(one, 1, NULL, NULL)), 0);
  assert_int_equal(wait_rnnc(start_training(two, 2, NULL, NULL)), 0);
  copy_file(one, x);
  copy_file(o2, ox);
  copy_file(o1, px);
  assert_int_equal(load_pair(x), 1);
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--seed", "7",
                        "--init", x, "--out", y, NULL};
  free(rnnc_expect(0, argv));
  assert_true(same_file(y, two));
  assert_true(same_file(oy, o2));
  /* Saving over x itself: it starts from the same state and cleans up. */
  const char *again[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--seed", "7",
                         "--init", x, "--out", x, NULL};
  free(rnnc_expect(0, again));
  assert_true(same_file(x, two));
  assert_true(same_file(ox, o2));
  assert_false(file_exists(px));
  char *list[] = {one, two, x, y, o1, o2, ox, px, oy};
  for (size_t i = 0; i < ARRAY_LEN(list); i++)
    free(list[i]);
  free(dir);
}

/* Item 10: a step or an epoch that is not a count in range is refused,
 * naming the file ("2147483647" overflowed, "-5" trained as epoch -4,
 * "abc" read as 0). */
static void test_bad_counts(void **state) {
  char *dir = tmp_path("counts");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *good = xasprintf("%s/good.safetensors", dir), *bad = xasprintf("%s/bad.safetensors", dir);
  char *ogood = ckpt_optim_path(good), *obad = ckpt_optim_path(bad);
  assert_int_equal(wait_rnnc(start_training(good, 1, NULL, NULL)), 0);
  struct {
    const char *key, *value;
  } cases[] = {
      {"epoch", "2147483647"}, {"epoch", "-5"}, {"epoch", "abc"},  {"epoch", ""},
      {"epoch", " 1"},         {"epoch", "+1"}, {"epoch", "1e3"},  {"epoch", "0x10"},
      {"step", "-1"},          {"step", "99999999999999999999"},   {"step", "9007199254740993"},
      {"step", "12abc"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    copy_file(good, bad);
    copy_file(ogood, obad);
    st_set_meta(bad, cases[i].key, cases[i].value);
    st_set_meta(obad, cases[i].key, cases[i].value); /* still one pair but for this */
    char *want = xasprintf("%s: metadata \"%s\" is \"%s\", not an integer", bad, cases[i].key,
                           cases[i].value);
    /* As --init reads it (and eval, without the optimizer state). */
    for (int with_optim = 0; with_optim < 2; with_optim++) {
      Err e;
      char **labels;
      int n;
      assert_int_equal(ckpt_load(&model, bad, with_optim, &labels, &n, &e), -1);
      assert_contains(e.msg, want);
    }
    if (i == 1) { /* and once through rnnc train as the user meets it */
      const char *resume[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--init", bad,
                              "--out", good, NULL};
      char *out = rnnc_expect(1, resume);
      assert_contains(out, want);
      free(out);
    }
    free(want);
  }
  /* Files not written by rnnc (no format rnnc-N, as PyTorch's golden
   * files, whose "step" names the optimizer) may use the keys freely. */
  copy_file(good, bad);
  st_set_meta(bad, "format", NULL);
  st_set_meta(bad, "step", "Adam(lr=1e-3) after clip_grad_norm_(1.0)");
  free(rnnc_expect(0, (const char *const[]){"eval", graph, bad, "--data", data_dir, NULL}));
  free(good);
  free(bad);
  free(ogood);
  free(obad);
  free(dir);
}

/* Item 11: labels are a JSON list in the metadata, so any file name is a
 * label that survives: a comma ("Scots,Gaelic" made 19 labels of 18), a
 * quote, a newline. A list with a label twice, or an empty one, is a
 * damaged checkpoint. */
static void test_labels_round_trip(void **state) {
  const char *names[] = {"Greek", "Scots,Gaelic", "Quote\"d", "New\nline"};
  char *d = tmp_path("labels");
  assert_int_equal(mkdir(d, 0755), 0);
  char *src = src_path("data/names/Korean.txt");
  for (int i = 0; i < 4; i++) {
    char *to = xasprintf("%s/%s.txt", d, names[i]);
    copy_file(src, to);
    free(to);
  }
  free(src);
  char *g4 = make_rnn_graph(16, 4), *out = xasprintf("%s.safetensors", d);
  free(rnnc_expect(0, (const char *const[]){"train", g4, "--data", d, "--epochs", "1", "--out",
                                            out, NULL}));
  Model m;
  Err e;
  ModelOptions mo = {.no_train = true};
  if (model_compile(&m, g4, &mo, &e))
    fail_msg("%s", e.msg);
  char **labels;
  int n;
  if (ckpt_load(&m, out, false, &labels, &n, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(n, 4);
  /* data order: by file name bytes */
  const char *want[] = {"Greek", "New\nline", "Quote\"d", "Scots,Gaelic"};
  for (int i = 0; i < 4; i++) {
    assert_string_equal(labels[i], want[i]);
    free(labels[i]);
  }
  free(labels);
  model_free(&m);
  free(rnnc_expect(0, (const char *const[]){"eval", g4, out, "--data", d, NULL}));
  free(rnnc_expect(0, (const char *const[]){"predict", g4, out, "Kim", NULL}));
  /* An rnnc-2 file must have the list as JSON: comma-joined is damage. */
  st_set_meta(out, "labels", "Greek,New\nline,Quote\"d,Scots,Gaelic");
  char *s = rnnc_expect(1, (const char *const[]){"predict", g4, out, "Kim", NULL});
  assert_contains(s, "metadata \"labels\" is ");
  assert_contains(s, "not a JSON list of strings");
  free(s);
  /* A label must name one class: predict would print two classes as one,
   * or an empty language column. */
  st_set_meta(out, "labels", "[\"Greek\",\"Korean\",\"Quote\\\"d\",\"Greek\"]");
  s = rnnc_expect(1, (const char *const[]){"predict", g4, out, "Kim", NULL});
  assert_contains(s, "metadata \"labels\": \"Greek\" names two classes");
  free(s);
  st_set_meta(out, "labels", "[\"Greek\",\"\",\"Quote\\\"d\",\"Scots\"]");
  s = rnnc_expect(1, (const char *const[]){"eval", g4, out, "--data", d, NULL});
  assert_contains(s, "metadata \"labels\": label 2 of 4 is empty");
  free(s);
  free(out);
  free(g4);
  free(d);
}

/* Checkpoints from before pair ids (format rnnc-1): pairs by step. */
static void test_old_checkpoints_load(void **state) {
  char *dir = tmp_path("old");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *opt = ckpt_optim_path(out);
  char *two = xasprintf("%s/two.safetensors", dir), *otwo = ckpt_optim_path(two);
  assert_int_equal(wait_rnnc(start_training(out, 1, NULL, NULL)), 0);
  assert_int_equal(wait_rnnc(start_training(two, 2, NULL, NULL)), 0);
  /* Rewrite both files as rnnc-1 wrote them: no pair id, labels
   * comma-joined. */
  const char *files[] = {out, opt};
  for (int i = 0; i < 2; i++) {
    st_set_meta(files[i], "pair", NULL);
    st_set_meta(files[i], "format", "rnnc-1");
    st_set_meta(files[i], "labels", "Chinese,Greek,Japanese");
  }
  assert_int_equal(load_pair(out), 1);
  /* Resumes to the same bytes as two epochs (the new file has a pair id). */
  const char *argv[] = {"train", graph, "--data", data_dir, "--epochs", "1", "--seed", "7",
                        "--init", out, "--out", out, NULL};
  free(rnnc_expect(0, argv));
  assert_true(same_file(out, two));
  assert_true(same_file(opt, otwo));
  free(out);
  free(opt);
  free(two);
  free(otwo);
  free(dir);
}

/* Item 4: SIGINT, SIGTERM, SIGHUP and SIGPIPE during a write remove the
 * temporaries (and train's lock) and end rnnc as the signal does; train's
 * pair on disk stays one. Train stops at SIGINT and SIGTERM (issue 17):
 * it finishes the save and exits 130 or 143. */
static void test_open_then_read(void **state) {
  char *dir = tmp_path("opened");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *a = xasprintf("%s/a.safetensors", dir), *b = xasprintf("%s/b.safetensors", dir);
  assert_int_equal(wait_rnnc(start_training(a, 1, NULL, NULL)), 0);
  assert_int_equal(wait_rnnc(start_training(b, 2, NULL, NULL)), 0); /* other weights */
  Err e;
  char **labels;
  int n;
  size_t bytes = (size_t)model.nfloats * sizeof(float);
  if (ckpt_load(&model, a, false, &labels, &n, &e))
    fail_msg("%s", e.msg);
  float *want = xmalloc(bytes);
  memcpy(want, model.state, bytes);
  for (int i = 0; i < n; i++)
    free(labels[i]);
  free(labels);

  memset(model.state, 0, bytes);
  CkptFile c;
  if (ckpt_open(&c, a, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(c.meta.nlabels, 3);
  assert_int_equal(rename(b, a), 0); /* as a training's save replaces a */
  if (ckpt_read_params(&model, &c, a, &labels, &n, &e))
    fail_msg("%s", e.msg);
  assert_memory_equal(model.state, want, bytes);
  assert_int_equal(n, 3);
  assert_string_equal(labels[1], "Greek");
  assert_null(c.meta.labels); /* moved to labels */
  for (int i = 0; i < n; i++)
    free(labels[i]);
  free(labels);
  ckpt_close(&c);

  /* a is now b's weights: cut short after it is opened. */
  if (ckpt_open(&c, a, &e))
    fail_msg("%s", e.msg);
  shrink_file(a, 4);
  assert_int_equal(ckpt_read_params(&model, &c, a, &labels, &n, &e), -1);
  assert_contains(e.msg, a);
  assert_contains(e.msg, "ended early");
  assert_null(labels);
  ckpt_close(&c);
  ckpt_close(&c); /* harmless twice */
  char *oa = ckpt_optim_path(a), *ob = ckpt_optim_path(b);
  unlink(a);
  unlink(oa);
  unlink(ob);
  rmdir(dir);
  free(oa);
  free(ob);
  free(want);
  free(a);
  free(b);
  free(dir);
}

static void test_signals_remove_temporaries(void **state) {
  char *dir = tmp_path("sig");
  assert_int_equal(mkdir(dir, 0755), 0);
  char *out = xasprintf("%s/x.safetensors", dir), *lock = xasprintf("%s.lock", out);
  char *obj = xasprintf("%s/x.o", dir), *ir = xasprintf("%s/x.ir", dir);
  char *metrics = xasprintf("%s/x.jsonl", dir);
  assert_int_equal(wait_rnnc(start_training(out, 1, NULL, NULL)), 0);
  char *preload = xasprintf("LD_PRELOAD=%s", shim());
  const char *env[] = {preload, "RNNC_SLOW_FSYNC_US=200000",
                       "ASAN_OPTIONS=verify_asan_link_order=0", NULL};
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
  const char *build[] = {"build", graph, out, "-o", obj, NULL};
  const char *compile[] = {"compile", graph, "-o", ir, NULL};
  for (int i = 0; i < (int)ARRAY_LEN(sigs); i++) {
    for (int what = 0; what < 3; what++) {
      unlink(metrics);
      pid_t pid = what == 0   ? start_training_metrics(out, 2, metrics, env, NULL)
                  : what == 1 ? spawn_rnnc(build, env, NULL, NULL)
                              : spawn_rnnc(compile, env, NULL, NULL);
      int status;
      /* Training: past the check of --out (which makes a temporary). */
      while (what == 0 && count_lines(metrics) < 1)
        sleep_ms(1);
      assert_true(wait_for_temp(dir, pid, &status));
      kill(pid, sigs[i]);
      bool stops = sigs[i] == SIGINT || sigs[i] == SIGTERM; /* train finishes its save */
      int want = what == 0 && stops ? 128 + sigs[i] : -sigs[i], got = wait_rnnc(pid);
      if (got != want)
        fail_msg("rnnc %s at signal %d: %d, want %d (negative: ended by that signal)",
                 what ? "build" : "train", sigs[i], got, want);
      assert_int_equal(remove_temps(dir), 0);
      assert_false(file_exists(lock));
      assert_false(file_exists(obj));
      assert_false(file_exists(ir));
      assert_true(load_pair(out) >= 1);
    }
  }
  free(preload);
  free(metrics);
  free(ir);
  free(obj);
  free(lock);
  free(out);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mixed_pair_refused),
      cmocka_unit_test(test_stopped_between_renames),
      cmocka_unit_test(test_old_checkpoints_load),
      cmocka_unit_test(test_bad_counts),
      cmocka_unit_test(test_labels_round_trip),
      cmocka_unit_test(test_open_then_read),
      cmocka_unit_test(test_concurrent_writers),
      cmocka_unit_test(test_damaged_optim_refused),
      cmocka_unit_test(test_signals_remove_temporaries),
      cmocka_unit_test(test_disk_full),
      cmocka_unit_test(test_weights_rename_fails),
      cmocka_unit_test(test_kill_during_saves),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
