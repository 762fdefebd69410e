/* cmd_plot.c: rnnc plot: a training's metrics log (rnnc train --metrics)
 * drawn as one self-contained SVG (or an HTML page holding it): loss and
 * test accuracy against names seen and against time, and the last
 * evaluation's confusion matrix as a heat map. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "files.h"

const char plot_usage[] =
    "usage: rnnc plot METRICS -o FILE\n"
    "\n"
    "Draws the metrics log of rnnc train --metrics as one self-contained\n"
    "file: the training loss (running) and the test loss, and the test\n"
    "accuracy, against names seen and against time; and the confusion matrix\n"
    "of the last evaluation as a heat map (rows: true language, columns:\n"
    "predicted; each row's shade is its share of the row). FILE ending in\n"
    ".html is a web page; anything else is an SVG image. A partial last line\n"
    "(a training killed while writing it) is left out.\n"
    "\n"
    "  -o, --output FILE    the picture to write\n"
    "  -h, --help           this help\n";

/* A series of points to draw. */
typedef struct Series {
  double *x, *y;
  size_t n, cap;
} Series;

static void series_add(Series *s, double x, double y) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->x = xrealloc(s->x, s->cap * sizeof *s->x);
    s->y = xrealloc(s->y, s->cap * sizeof *s->y);
  }
  s->x[s->n] = x;
  s->y[s->n++] = y;
}

static void series_free(Series *s) {
  free(s->x);
  free(s->y);
}

/* What the log holds: by names seen ([0]) and by time ([1]). */
typedef struct Log {
  Series train_loss[2], test_loss[2], accuracy[2];
  json_t *last_eval; /* the last evaluation line, or NULL */
  size_t lines;
} Log;

static bool number(json_t *o, const char *key, double *v) {
  json_t *j = json_object_get(o, key);
  if (!json_is_number(j))
    return false;
  *v = json_number_value(j);
  return isfinite(*v);
}

static int read_log(Log *lg, const char *path, Err *e) {
  size_t len;
  char *text = read_file(path, &len, e);
  if (!text)
    return -1;
  int rc = 0;
  size_t lineno = 0;
  for (char *p = text; p < text + len && rc == 0;) {
    char *nl = memchr(p, '\n', (size_t)(text + len - p));
    if (!nl)
      break; /* a partial last line */
    lineno++;
    json_error_t jerr;
    json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
    p = nl + 1;
    const char *type = json_string_value(json_object_get(o, "type"));
    double seen, t, v;
    if (!type || !number(o, "names_seen", &seen) || !number(o, "time", &t)) {
      rc = errf(e, "%s:%zu: not a line of rnnc train --metrics (%s)", path, lineno,
                o ? "no \"type\", \"names_seen\" or \"time\"" : jerr.text);
      json_decref(o);
      break;
    }
    double xs[2] = {seen, t};
    for (int k = 0; k < 2; k++) {
      if (!strcmp(type, "train") && number(o, "loss", &v))
        series_add(&lg->train_loss[k], xs[k], v);
      if (!strcmp(type, "eval") && number(o, "test_loss", &v))
        series_add(&lg->test_loss[k], xs[k], v);
      if (!strcmp(type, "eval") && number(o, "accuracy", &v))
        series_add(&lg->accuracy[k], xs[k], 100 * v);
    }
    if (!strcmp(type, "eval") && json_is_array(json_object_get(o, "confusion"))) {
      json_decref(lg->last_eval);
      lg->last_eval = o;
    } else {
      json_decref(o);
    }
    lg->lines++;
  }
  free(text);
  if (rc == 0 && lg->lines == 0)
    rc = errf(e, "%s: no metrics (not one complete line): was it written by rnnc train "
                 "--metrics?",
              path);
  return rc;
}

/* Text for an SVG text node: XML's specials escaped, control characters
 * (which XML 1.0 cannot hold) shown as '?'. */
static void put_text(Buf *b, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '&')
      buf_printf(b, "&amp;");
    else if (c == '<')
      buf_printf(b, "&lt;");
    else if (c == '>')
      buf_printf(b, "&gt;");
    else if (c == '"')
      buf_printf(b, "&quot;");
    else if (c < 0x20 || c == 0x7f)
      buf_printf(b, "?");
    else
      buf_put(b, s, 1);
  }
}

/* A tick spacing of 1, 2 or 5 times a power of ten giving about n ticks
 * over span. */
static double tick_step(double span, int n) {
  double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void fmt_tick(char *buf, size_t n, double v) {
  double a = fabs(v);
  if (a >= 1e6)
    snprintf(buf, n, "%gM", v / 1e6);
  else if (a >= 1e4)
    snprintf(buf, n, "%gk", v / 1e3);
  else
    snprintf(buf, n, "%g", v);
}

typedef struct Line {
  const Series *s;
  const char *color, *label;
  bool dots;
} Line;

/* A chart at (x0, y0) of w by h: axes with ticks, grid, the lines and
 * their legend. */
static void chart(Buf *b, double x0, double y0, double w, double h, const char *title,
                  const char *xlabel, const char *ylabel, const Line *lines, int nlines,
                  bool percent) {
  double xmin = 0, xmax = 0, ymin = INFINITY, ymax = -INFINITY;
  for (int l = 0; l < nlines; l++)
    for (size_t i = 0; i < lines[l].s->n; i++) {
      xmax = fmax(xmax, lines[l].s->x[i]);
      ymin = fmin(ymin, lines[l].s->y[i]);
      ymax = fmax(ymax, lines[l].s->y[i]);
    }
  if (!(ymin <= ymax)) /* no points */
    ymin = 0, ymax = 1;
  if (percent)
    ymin = fmin(ymin, 0), ymax = fmax(ymax, 100);
  else
    ymin = fmin(ymin, 0);
  if (xmax <= xmin)
    xmax = xmin + 1;
  if (ymax <= ymin)
    ymax = ymin + 1;
  double L = x0 + 60, R = x0 + w - 10, T = y0 + 30, B = y0 + h - 45;
  buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"title\">", (L + R) / 2, y0 + 18);
  put_text(b, title);
  buf_printf(b, "</text>\n");
  double xs = tick_step(xmax - xmin, 6), ys = tick_step(ymax - ymin, 5);
  /* (At most 20 ticks, whatever the numbers.) */
  for (double v = 0; v <= xmax + xs * 1e-9 && v / xs < 20; v += xs) {
    double px = L + (v - xmin) / (xmax - xmin) * (R - L);
    char t[32];
    fmt_tick(t, sizeof t, v);
    buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\">%s</text>\n",
               px, T, px, B, px, B + 15, t);
  }
  double y_first = ceil(ymin / ys) * ys;
  for (double v = y_first; v <= ymax + ys * 1e-9 && (v - y_first) / ys < 20; v += ys) {
    double py = B - (v - ymin) / (ymax - ymin) * (B - T);
    char t[32];
    fmt_tick(t, sizeof t, fabs(v) < ys * 1e-9 ? 0 : v);
    buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" class=\"ytick\">%s%s</text>\n",
               L, py, R, py, L - 5, py + 4, t, percent ? "%" : "");
  }
  buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
             L, T, R - L, B - T);
  buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"label\">", (L + R) / 2, B + 35);
  put_text(b, xlabel);
  buf_printf(b, "</text><text transform=\"translate(%.1f %.1f) rotate(-90)\" class=\"label\">",
             x0 + 14, (T + B) / 2);
  put_text(b, ylabel);
  buf_printf(b, "</text>\n");
  for (int l = 0; l < nlines; l++) {
    const Series *s = lines[l].s;
    if (s->n) {
      buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                 lines[l].color);
      for (size_t i = 0; i < s->n; i++)
        buf_printf(b, "%.1f,%.1f ", L + (s->x[i] - xmin) / (xmax - xmin) * (R - L),
                   B - (s->y[i] - ymin) / (ymax - ymin) * (B - T));
      buf_printf(b, "\"/>\n");
      for (size_t i = 0; lines[l].dots && i < s->n; i++)
        buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                   L + (s->x[i] - xmin) / (xmax - xmin) * (R - L),
                   B - (s->y[i] - ymin) / (ymax - ymin) * (B - T), lines[l].color);
    }
    double ly = T + 14 + 16 * l;
    buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"4\" fill=\"%s\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" class=\"legend\">",
               R - 150, ly - 6, lines[l].color, R - 132, ly);
    put_text(b, lines[l].label);
    buf_printf(b, "</text>\n");
  }
}

/* The last evaluation's confusion matrix at (x0, y0): a square per cell,
 * shaded by its share of its row, with the count in it. Returns the
 * height it took. */
static double heat_map(Buf *b, double x0, double y0, double w, json_t *ev) {
  json_t *conf = json_object_get(ev, "confusion"), *labels = json_object_get(ev, "labels");
  size_t L = json_array_size(conf);
  if (L == 0)
    return 0;
  double cell = fmin(40, (w - 140) / (double)L);
  double left = x0 + 130, top = y0 + 110;
  char title[160];
  double acc = 0;
  number(ev, "accuracy", &acc);
  snprintf(title, sizeof title,
           "confusion matrix at epoch %lld, step %lld: test accuracy %.2f%% (rows: true "
           "language, columns: predicted)",
           (long long)json_integer_value(json_object_get(ev, "epoch")),
           (long long)json_integer_value(json_object_get(ev, "step")), 100 * acc);
  buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"title\">", x0 + w / 2, y0 + 18);
  put_text(b, title);
  buf_printf(b, "</text>\n");
  for (size_t i = 0; i < L; i++) {
    const char *name = json_string_value(json_array_get(labels, i));
    char num[32];
    snprintf(num, sizeof num, "%zu", i);
    name = name ? name : num;
    buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"ytick\">", left - 6,
               top + (i + 0.5) * cell + 4);
    put_text(b, name);
    buf_printf(b, "</text><text transform=\"translate(%.1f %.1f) rotate(-60)\" class=\"rowname\">",
               left + (i + 0.5) * cell + 4, top - 6);
    put_text(b, name);
    buf_printf(b, "</text>\n");
  }
  for (size_t i = 0; i < L; i++) {
    json_t *row = json_array_get(conf, i);
    double total = 0;
    for (size_t j = 0; j < json_array_size(row); j++)
      total += (double)json_integer_value(json_array_get(row, j));
    for (size_t j = 0; j < L; j++) {
      long long c = (long long)json_integer_value(json_array_get(row, j));
      double share = total > 0 && c > 0 ? fmin(1, c / total) : 0;
      /* white to dark blue; the diagonal green */
      int r = (int)lround(255 - share * (i == j ? 230 : 200));
      int g = (int)lround(255 - share * (i == j ? 90 : 160));
      int bl = (int)lround(255 - share * (i == j ? 200 : 60));
      buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                    "fill=\"rgb(%d,%d,%d)\" stroke=\"#ddd\"/>",
                 left + j * cell, top + i * cell, cell, cell, r, g, bl);
      if (c)
        buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" class=\"count\" fill=\"%s\">%lld</text>",
                   left + (j + 0.5) * cell, top + (i + 0.5) * cell + 4,
                   share > 0.5 ? "#fff" : "#222", c);
      buf_printf(b, "\n");
    }
  }
  return 110 + L * cell + 20;
}

static char *render(const Log *lg, const char *source) {
  Buf body = {0};
  const double W = 1000, CH = 300;
  const char *xl[2] = {"names seen", "seconds of training"};
  for (int k = 0; k < 2; k++) {
    Line loss[] = {{&lg->train_loss[k], "#1f77b4", "training (running)", false},
                   {&lg->test_loss[k], "#ff7f0e", "test", true}};
    Line acc[] = {{&lg->accuracy[k], "#2ca02c", "test accuracy", true}};
    chart(&body, 0, 40 + k * CH, W / 2, CH, k ? "loss over time" : "loss", xl[k],
          "cross entropy", loss, 2, false);
    chart(&body, W / 2, 40 + k * CH, W / 2, CH, k ? "test accuracy over time" : "test accuracy",
          xl[k], "accuracy", acc, 1, true);
  }
  double h = 40 + 2 * CH;
  if (lg->last_eval)
    h += heat_map(&body, 0, h, W, lg->last_eval);
  Buf b = {0};
  buf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                 "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, "
                 "sans-serif\">\n"
                 "<style>.title{font-size:14px;font-weight:bold;text-anchor:middle}"
                 ".tick{font-size:11px;text-anchor:middle}.ytick{font-size:11px;text-anchor:end}"
                 ".rowname{font-size:11px;text-anchor:start}"
                 ".label{font-size:12px;text-anchor:middle}.legend{font-size:11px}"
                 ".count{font-size:10px;text-anchor:middle}"
                 ".grid{stroke:#e4e4e4}.frame{fill:none;stroke:#444}</style>\n"
                 "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n"
                 "<text x=\"%.0f\" y=\"24\" class=\"title\" font-size=\"16\">rnnc training: ",
             W, h, W, h, W / 2);
  put_text(&b, source);
  buf_printf(&b, "</text>\n");
  buf_put(&b, body.data, body.len);
  buf_printf(&b, "</svg>\n");
  buf_put(&b, "", 1);
  buf_free(&body);
  return b.data;
}

int cmd_plot(int argc, char **argv) {
  const char *out = NULL;
  static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      out = optarg;
      break;
    case 'h':
      fputs(plot_usage, stdout);
      return EXIT_OK;
    default:
      return cli_usage_error("plot", "bad option");
    }
  }
  if (optind + 1 != argc)
    return cli_usage_error("plot", optind >= argc ? "missing METRICS" : "more than one METRICS");
  if (!out)
    return cli_usage_error("plot", "missing -o FILE");
  const char *path = argv[optind];
  if (cli_same_file(out, path))
    return cli_usage_error("plot", "-o %s is the metrics log (%s): it would be overwritten", out, path);
  Log lg = {0};
  Err e;
  int rc = EXIT_BAD_INPUT;
  if (read_log(&lg, path, &e) == 0) {
    const char *base = strrchr(path, '/');
    char *svg = render(&lg, base ? base + 1 : path);
    size_t n = strlen(out);
    bool html = n >= 5 && !strcmp(out + n - 5, ".html");
    Buf doc = {0};
    if (html) {
      buf_printf(&doc, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rnnc "
                       "training: ");
      put_text(&doc, path);
      buf_printf(&doc, "</title></head>\n<body style=\"margin:0\">\n%s</body></html>\n", svg);
    } else {
      buf_printf(&doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n%s", svg);
    }
    Staged s = {.fd = -1};
    if (stage_file(&s, out, doc.data, doc.len, &e) == 0 && stage_commit(&s, &e) == 0)
      rc = EXIT_OK;
    stage_discard(&s);
    buf_free(&doc);
    free(svg);
  }
  if (rc)
    cli_error("plot", &e);
  for (int k = 0; k < 2; k++) {
    series_free(&lg.train_loss[k]);
    series_free(&lg.test_loss[k]);
    series_free(&lg.accuracy[k]);
  }
  json_decref(lg.last_eval);
  return rc;
}
