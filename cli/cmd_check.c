/* cmd_check.c: rnnc check GRAPH: the compiler's gradients of a user's graph
 * against central finite differences, in float64, with the reference
 * interpreter. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rnnc.h"
#include "runtime.h"

const char check_usage[] =
    "usage: rnnc check GRAPH [--names a,b,c] [--samples N] [--tolerance X] [--seed S]\n"
    "\n"
    "Checks the gradients rnnc derives for GRAPH against central finite\n"
    "differences of the loss (fourth order, step 1e-3), computed in float64 by\n"
    "the reference interpreter, for sampled entries of every parameter, on a\n"
    "few names (each with a different target class). Prints the largest\n"
    "relative error per parameter; exits 1 when one is above the tolerance.\n"
    "A sample whose disagreement a kink of the loss within the step explains\n"
    "(a relu, abs or max switching between w - 2e-3 and w + 2e-3: the third\n"
    "differences of the loss show it) has no derivative to compare: it is\n"
    "skipped and counted.\n"
    "Names are encoded with the names vocabulary; a graph that takes its sizes\n"
    "from the data gets data.vocab = 59 and data.classes = 3.\n"
    "\n"
    "  --names a,b,c    names to check on (default: Dostoevsky,Nakamura,O'Brien)\n"
    "  --samples N      entries per parameter and name (default: 16)\n"
    "  --tolerance X    largest relative error accepted (default: 1e-6)\n"
    "  --seed S         parameter initialization and sampling (default: 42)\n"
    "  -h, --help       this help\n";

static double loss_at(Interp *I, const Graph *g, const int32_t *c, int len, int target,
                      uint64_t noise_seed) {
  Rng r;
  rng_seed(&r, noise_seed); /* the same initial-state noise at every point */
  interp_set_rng(I, &r);
  Err e;
  if (interp_run(I, c, len, target, &e))
    return NAN;
  return interp_value(I, g->loss, NULL)[0];
}

/* Parameter values drawn from each parameter's initializer. */
static void init_values(const Graph *g, double *w, uint64_t seed) {
  Rng r;
  rng_seed(&r, seed);
  for (int p = 0; p < g->nparams; p++) {
    const Param *pa = &g->params[p];
    double b = pa->init == INIT_UNIFORM          ? pa->init_arg
               : pa->init == INIT_LINEAR         ? 1 / sqrt(pa->init_arg)
               : pa->init == INIT_KAIMING_UNIFORM ? sqrt(6 / pa->init_arg)
               : pa->init == INIT_NORMAL          ? pa->init_arg /* its scale */
                                                  : 0.1; /* zeros: check away from 0 */
    for (size_t i = 0; i < type_numel(pa->type); i++)
      w[pa->offset + i] = rng_uniform(&r, (float)-b, (float)b);
  }
}

/* Relative errors below this are the finite difference's own (float64,
 * step 1e-3), never put down to a kink: --tolerance below it still fails. */
#define KINK_FLOOR 1e-7

/* Whether a disagreement d between the finite difference over the loss
 * at w - 2h, w - h, w + h, w + 2h (l[0..3]) and the gradient is what a
 * kink of the loss within those points (a relu, abs or max switching)
 * makes, where the loss has no derivative to compare. With the loss at w
 * too, a kink whose slopes differ by s makes one of the two third
 * differences at least s h / 3 while it moves the difference by at most
 * s / 2; a smooth loss makes them h^3 times its third derivative (1e-9 of
 * it here). So a third difference above h d / 10 is a kink; a wrong
 * gradient on a smooth loss is not. */
static bool kink(Interp *I, const Graph *f, const int32_t *chars, int len, int target,
                 uint64_t noise, const double l[4], double h, double d) {
  double mid = loss_at(I, f, chars, len, target, noise);
  double t1 = l[2] - 3 * mid + 3 * l[1] - l[0], t2 = l[3] - 3 * l[2] + 3 * mid - l[1];
  return fmax(fabs(t1), fabs(t2)) >= 0.1 * h * d;
}

int cmd_check(int argc, char **argv) {
  const char *names = "Dostoevsky,Nakamura,O'Brien";
  int samples = 16;
  double tol = 1e-6;
  uint64_t seed = 42;
  static const struct option opts[] = {{"names", required_argument, 0, 'n'},
                                       {"samples", required_argument, 0, 'k'},
                                       {"tolerance", required_argument, 0, 't'},
                                       {"seed", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 'n':
      names = optarg;
      break;
    case 'k':
      samples = (int)strtol(optarg, &end, 10);
      if (*end || samples < 1 || samples > 100000)
        return cli_usage_error("check", "--samples wants an integer in [1, 100000], not '%s'", optarg);
      break;
    case 't':
      tol = strtod(optarg, &end);
      if (*end || !(tol > 0))
        return cli_usage_error("check", "--tolerance wants a positive number, not '%s'", optarg);
      break;
    case 's':
      if (cli_parse_u64(optarg, &seed))
        return cli_usage_error("check", "--seed wants a non-negative integer, not '%s'", optarg);
      break;
    case 'h':
      fputs(check_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("check", "bad option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage_error("check", optind >= argc ? "missing GRAPH" : "more than one GRAPH");
  const char *path = argv[optind];
  Err e;
  /* A graph that takes its sizes from the data: the names vocabulary's,
   * and three classes (one per default name). */
  DataSizes sizes = {VOCAB_SIZE, 3};
  size_t text_len;
  char *text = read_graph(path, &text_len, &e);
  Graph *f = text ? compile_graph_data(path, text, text_len, &sizes, &e) : NULL;
  Graph *g = f ? compile_graph_data(path, text, text_len, &sizes, &e) : NULL;
  free(text);
  if (!f || !g || graph_passes(g, true, PASSES_GRAD, &e)) {
    cli_error("check", &e);
    graph_free(f);
    graph_free(g);
    return EXIT_BAD_INPUT;
  }
  Interp *If = interp_new(f, false), *Ig = interp_new(g, false);
  double *wf = interp_slot(If, SLOT_VALUE), *wg = interp_slot(Ig, SLOT_VALUE);
  init_values(f, wf, seed);
  double *worst = xcalloc((size_t)f->nparams, sizeof *worst);
  int *kinks = xcalloc((size_t)f->nparams, sizeof *kinks);
  int *tried = xcalloc((size_t)f->nparams, sizeof *tried);
  Rng pick;
  rng_seed(&pick, seed + 1);
  int rc = EXIT_OK, nnames = 0;
  char *list = xstrdup(names);
  Vocab names_vocab;
  vocab_names(&names_vocab);
  for (char *nm = list, *next; nm; nm = next, nnames++) {
    next = strchr(nm, ',');
    if (next)
      *next++ = '\0';
    int32_t *chars = NULL;
    int len = name_encode(nm, strlen(nm), &names_vocab, &chars, NULL, &e);
    if (len < 0) {
      fprintf(stderr, "rnnc check: '%s': %s\n", nm, e.msg);
      rc = EXIT_BAD_INPUT;
      break;
    }
    if (len > 0 && f->vocab != VOCAB_SIZE) {
      fprintf(stderr, "rnnc check: %s: the input has %d characters, not the vocabulary's %d\n",
              path, f->vocab, VOCAB_SIZE);
      free(chars);
      rc = EXIT_BAD_INPUT;
      break;
    }
    int target = nnames % f->classes;
    uint64_t noise = seed * 31 + (uint64_t)nnames;
    memcpy(wg, wf, f->nfloats * sizeof *wg);
    Rng r;
    rng_seed(&r, noise);
    interp_set_rng(Ig, &r);
    if (interp_run(Ig, chars, len, target, &e)) {
      cli_error("check", &e);
      free(chars);
      rc = EXIT_BAD_INPUT;
      break;
    }
    const double *gr = interp_slot(Ig, SLOT_GRAD);
    for (int p = 0; p < f->nparams; p++) {
      const Param *pa = &f->params[p];
      if (!pa->trainable)
        continue;
      size_t n = type_numel(pa->type);
      for (int k = 0; k < samples; k++) {
        size_t i = pa->offset + (n <= (size_t)samples ? (size_t)k % n : rng_below(&pick, (uint32_t)n));
        double w = wf[i], h = 1e-3, l[4];
        static const double at[4] = {-2, -1, 1, 2};
        for (int j = 0; j < 4; j++) {
          wf[i] = w + at[j] * h;
          l[j] = loss_at(If, f, chars, len, target, noise);
        }
        wf[i] = w;
        double fd = (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * h);
        double err = fabs(fd - gr[i]) / fmax(1e-4, fmax(fabs(fd), fabs(gr[i])));
        tried[p]++;
        if (err > tol && err > KINK_FLOOR &&
            kink(If, f, chars, len, target, noise, l, h, fabs(fd - gr[i]))) {
          kinks[p]++;
          continue;
        }
        if (!(err <= worst[p]))
          worst[p] = isnan(err) ? INFINITY : err;
      }
    }
    free(chars);
  }
  free(list);
  vocab_free(&names_vocab);
  if (rc == EXIT_OK) {
    printf("%s: gradients vs finite differences (float64), %d name%s, %d samples each\n", path,
           nnames, nnames == 1 ? "" : "s", samples);
    for (int p = 0; p < f->nparams; p++) {
      if (!f->params[p].trainable)
        continue;
      bool bad = !(worst[p] <= tol);
      printf("  %-28s max relative error %.2e%s", f->params[p].name, worst[p],
             bad ? "  ABOVE TOLERANCE" : "");
      if (kinks[p])
        printf("  (%d of %d samples at a kink: not compared)", kinks[p], tried[p]);
      printf("\n");
      if (bad)
        rc = EXIT_BAD_INPUT;
    }
    printf("%s (tolerance %.0e)\n", rc ? "FAILED" : "ok", tol);
  }
  free(worst);
  free(kinks);
  free(tried);
  interp_free(If);
  interp_free(Ig);
  graph_free(f);
  graph_free(g);
  return rc;
}
