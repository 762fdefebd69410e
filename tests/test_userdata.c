/* test_userdata.c: a user's own data set: a TSV and a CSV file of texts in
 * Cyrillic, Greek, CJK and Latin script, with labels that hold commas,
 * quotes and non-ASCII characters, through rnnc train, eval, predict and
 * build with graphs/gru-data.nn (its sizes from the data).
 *
 * Checked against things made independently of the code under test: the
 * data as this file writes it (the labels and characters the checkpoint
 * must list, and that the CSV and TSV forms load to the same records), the
 * unknown slot (two names that differ only in characters the training
 * texts lack get the same logits, bit for bit), the AOT object against
 * rnnc predict, and CSV errors against their hand-counted positions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "runtime.h"
#include "testutil.h"

/* Labels as a user might write them: a comma, quotes, non-Latin scripts. */
static const char *const labels[] = {"Latin, plain", "Ελληνικά \"el\"", "Русский",
                                     "中文, \"CJK\""};
/* Each label's alphabet (UTF-8), texts drawn from it. */
static const char *const alphabets[] = {"abcdefghijklmnop",
                                        "αβγδεζηθικλμνξοπ",
                                        "абвгдежзиклмнопр",
                                        "的一是不了人我在有他这为之大来以"};
enum { PER_LABEL = 40, NLABELS = 4 };

static char *workdir, *tsv, *csv, *ckpt;
static const char *graph = "graphs/gru-data.nn";

/* The k-th character (UTF-8) of alphabet a into out; its length. */
static int nth_char(const char *a, int k, char *out) {
  const unsigned char *p = (const unsigned char *)a;
  for (;;) {
    int len = *p < 0x80 ? 1 : *p < 0xE0 ? 2 : *p < 0xF0 ? 3 : 4;
    if (k-- == 0) {
      memcpy(out, p, (size_t)len);
      return len;
    }
    p += len;
  }
}

/* s as a CSV field: quoted, its quotes doubled. */
static void csv_field(Buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (; *s; s++)
    buf_put(b, *s == '"' ? "\"\"" : s, 1 + (*s == '"'));
  buf_put(b, "\"", 1);
}

static int setup(void **state) {
  (void)state;
  const char *tmp = getenv("RNNC_TMP_DIR");
  workdir = xasprintf("%s/userdata.%d", tmp ? tmp : "/tmp", (int)getpid());
  if (mkdir(workdir, 0777))
    return -1;
  tsv = xasprintf("%s/mixed.tsv", workdir);
  csv = xasprintf("%s/mixed.csv", workdir);
  ckpt = xasprintf("%s/mixed.safetensors", workdir);
  /* Texts of 2 to 7 characters from a fixed generator, label by label
   * interleaved. */
  Rng r;
  rng_seed(&r, 7);
  Buf t = {0}, c = {0};
  for (int i = 0; i < PER_LABEL; i++)
    for (int l = 0; l < NLABELS; l++) {
      char text[64];
      int n = 0, len = 2 + (int)rng_below(&r, 6);
      for (int k = 0; k < len; k++)
        n += nth_char(alphabets[l], (int)rng_below(&r, 16), text + n);
      text[n] = '\0';
      buf_printf(&t, "%s\t%s\n", text, labels[l]);
      buf_printf(&c, "%s,", text);
      csv_field(&c, labels[l]);
      buf_printf(&c, "\r\n");
    }
  buf_put(&t, "", 1);
  buf_put(&c, "", 1);
  write_text(tsv, t.data);
  write_text(csv, c.data);
  buf_free(&t);
  buf_free(&c);
  /* One training for the tests below. */
  char *out = rnnc_expect(0, (const char *const[]){"train", graph, "--data", tsv, "--epochs", "3",
                                                   "--batch", "8", "--lr", "0.005", "--out", ckpt,
                                                   NULL});
  assert_contains(out, "vocabulary (unicode): 64 characters and the unknown slot");
  free(out);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sh("rm -rf '%s'", workdir);
  free(workdir);
  free(tsv);
  free(csv);
  free(ckpt);
  return 0;
}

/* The CSV and the TSV form load to the same records. */
static void test_csv_equals_tsv(void **state) {
  (void)state;
  Dataset a, b;
  Err e;
  if (data_load(&a, tsv, NULL, 0, VOCAB_UNICODE, NULL, &e) ||
      data_load(&b, csv, NULL, 0, VOCAB_UNICODE, NULL, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(a.nnames, NLABELS * PER_LABEL);
  assert_int_equal(b.nnames, a.nnames);
  assert_int_equal(a.nlabels, NLABELS);
  assert_int_equal(b.nlabels, NLABELS);
  for (int l = 0; l < NLABELS; l++) { /* byte order of the labels */
    assert_string_equal(a.labels[l], labels[l]);
    assert_string_equal(b.labels[l], labels[l]);
  }
  for (size_t i = 0; i < a.nnames; i++) {
    assert_string_equal(a.names[i].text, b.names[i].text);
    assert_int_equal(a.names[i].label, b.names[i].label);
    assert_int_equal(a.names[i].label, (int)(i % NLABELS));
  }
  data_free(&a);
  data_free(&b);
}

/* The checkpoint lists the labels and the vocabulary: the unknown slot,
 * then the characters of the training texts in code point order (all 64
 * of the alphabets occur in 144 training texts). */
static void test_checkpoint_metadata(void **state) {
  (void)state;
  CkptMeta meta;
  Err e;
  if (ckpt_read_info(ckpt, &meta, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(meta.nlabels, NLABELS);
  for (int l = 0; l < NLABELS; l++)
    assert_string_equal(meta.labels[l], labels[l]);
  assert_int_equal(meta.vocab.kind, VOCAB_UNICODE);
  assert_int_equal(meta.vocab.n, 65);
  assert_int_equal(meta.vocab.unknown, 0);
  char **list = vocab_to_list(&meta.vocab);
  assert_string_equal(list[0], "");
  assert_string_equal(list[1], "a");
  assert_string_equal(list[17], "α");
  assert_string_equal(list[33], "а"); /* Cyrillic */
  assert_string_equal(list[49], "一"); /* U+4E00, the smallest of the CJK */
  for (int i = 0; i < meta.vocab.n; i++)
    free(list[i]);
  free(list);
  ckpt_meta_free(&meta);
}

/* eval on the CSV form: the accuracy train reported for the TSV form. */
static void test_eval_csv(void **state) {
  (void)state;
  char *out = rnnc_expect(0, (const char *const[]){"eval", graph, ckpt, "--data", csv, NULL});
  assert_contains(out, "test accuracy: ");
  assert_contains(out, "中文, \"CJK\"");
  free(out);
}

/* The logits printed for the one name of a predict --logits (after its
 * first line). */
static char *logits_of(const char *name) {
  char *out = rnnc_expect(0, (const char *const[]){"predict", graph, ckpt, name, "--logits", NULL});
  char *nl = strchr(out, '\n');
  assert_non_null(nl);
  char *rest = xstrdup(nl + 1);
  free(out);
  return rest;
}

/* Characters the training texts lack ('☃', 'Z', 'ω') take the unknown
 * slot: names that differ only in them get the same logits. */
static void test_unknown_slot_at_predict(void **state) {
  (void)state;
  char *a = logits_of("абв☃"), *b = logits_of("абвZ"), *c = logits_of("абвг");
  assert_string_equal(a, b);
  assert_string_not_equal(a, c);
  free(a);
  free(b);
  free(c);
  char *out = rnnc_expect(0, (const char *const[]){"predict", graph, ckpt, "aωω", NULL});
  assert_contains(out, "aωω [2 characters not in the vocabulary]");
  free(out);
  /* NFC: 'е' + U+0308 is 'ё', which the data lacks: one character. */
  out = rnnc_expect(0, (const char *const[]){"predict", graph, ckpt, "е\xCC\x88", NULL});
  assert_contains(out, "(ё) [1 character not in the vocabulary]");
  free(out);
}

/* rnnc build: the header carries the vocabulary and the labels; the
 * object's P_predict agrees with rnnc predict on UTF-8 names. */
static void test_build(void **state) {
  (void)state;
  char *obj = xasprintf("%s/mixed.o", workdir), *hdr = xasprintf("%s/mixed.h", workdir);
  free(rnnc_expect(0, (const char *const[]){"build", graph, ckpt, "-o", obj, NULL}));
  char *h = read_text(hdr);
  assert_contains(h, "#define mixed_VOCAB_SIZE 65\n");
  assert_contains(h, "#define mixed_UNKNOWN_INDEX 0 ");
  assert_contains(h, "#define mixed_NORMALIZATION \"nfc\"");
  assert_contains(h, "\"\\316\\261\""); /* α */
  assert_contains(h, "3 中文, \"CJK\""); /* the labels' comment */
  free(h);
  if (sh("command -v cc >/dev/null 2>&1")) {
    print_message("skipped the object's run: no C compiler 'cc' on PATH\n");
    free(obj);
    free(hdr);
    return;
  }
  static const char *const names[] = {"абвгд", "λμνξ", "的一是", "abcd", "abc☃", "aωω"};
  char *src = xasprintf("%s/run.c", workdir), *exe = xasprintf("%s/run", workdir),
       *got = xasprintf("%s/run.txt", workdir), *in = xasprintf("%s/names.txt", workdir);
  Buf c = {0}, list = {0};
  buf_printf(&c, "#include <stdio.h>\n#include \"mixed.h\"\n"
                 "static const char *const vocab[mixed_VOCAB_SIZE] = mixed_VOCAB_CHARS;\n"
                 "int main(void) {\n"
                 "  static const char *const names[] = {");
  for (size_t i = 0; i < ARRAY_LEN(names); i++) {
    buf_printf(&c, "\"%s\", ", names[i]);
    buf_printf(&list, "%s\n", names[i]);
  }
  buf_printf(&c, "};\n"
                 "  float p[mixed_NUM_CLASSES];\n"
                 "  for (int i = 0; i < %d; i++) {\n"
                 "    int k = mixed_predict(names[i], p);\n"
                 "    printf(\"%%s\\t%%s\\t%%.6f\\n\", names[i], k < 0 ? \"-\" : mixed_labels[k], k < 0 ? 0.0 : p[k]);\n"
                 "  }\n"
                 "  printf(\"bad UTF-8: %%d, vocab[17]: %%s\\n\", mixed_predict(\"ab\\xff\", p), vocab[17]);\n"
                 "  return 0;\n"
                 "}\n",
             (int)ARRAY_LEN(names));
  buf_put(&c, "", 1);
  buf_put(&list, "", 1);
  write_text(src, c.data);
  write_text(in, list.data);
  if (sh("cc -std=c99 -Wall -Wextra -Werror -I'%s' -o '%s' '%s' '%s' && '%s' > '%s'", workdir, exe,
         src, obj, exe, got))
    fail_msg("the object's program did not build or run");
  char *ran = read_text(got);
  /* rnnc predict --input: name, then label and probability. */
  char *out = NULL, *err = NULL;
  assert_int_equal(run_rnnc((const char *const[]){"predict", graph, ckpt, "--input", in, "--top",
                                                  "1", NULL},
                            &out, &err),
                   0);
  char *line = strchr(out, '\n') + 1; /* past the header */
  char *mine = ran;
  for (size_t i = 0; i < ARRAY_LEN(names); i++) {
    char name[64], label[64], name2[64], label2[64];
    double p, p2;
    assert_int_equal(sscanf(line, "%63[^\t]\t%63[^\t]\t%lf", name, label, &p), 3);
    assert_int_equal(sscanf(mine, "%63[^\t]\t%63[^\t]\t%lf", name2, label2, &p2), 3);
    assert_string_equal(name, names[i]);
    assert_string_equal(name2, names[i]);
    assert_string_equal(label, label2);
    assert_true(p - p2 < 1e-4 && p2 - p < 1e-4);
    line = strchr(line, '\n') + 1;
    mine = strchr(mine, '\n') + 1;
  }
  assert_string_equal(mine, "bad UTF-8: -1, vocab[17]: α\n");
  free(out);
  free(err);
  free(ran);
  buf_free(&c);
  buf_free(&list);
  char *fs[] = {obj, hdr, src, exe, got, in};
  for (size_t i = 0; i < ARRAY_LEN(fs); i++)
    free(fs[i]);
}

/* A graph that takes its sizes from the data (data.vocab, data.classes)
 * exports with the checkpoint's: ONNX's checker accepts the model, whose
 * input is the vocabulary's one-hot rows (64 characters and the unknown
 * slot) and whose output has a logit per label. */
static void test_export_data_graph(void **state) {
  (void)state;
  char *model = xasprintf("%s/mixed.onnx", workdir);
  char *out = rnnc_expect(0, (const char *const[]){"export", graph, ckpt, "-o", model, NULL});
  assert_contains(out, "wrote");
  free(out);
  if (sh("/usr/bin/python3 -c 'import onnx, sys; m = onnx.load(sys.argv[1]); "
         "onnx.checker.check_model(m); "
         "x = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]; "
         "y = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]; "
         "sys.exit(0 if x[1:] == [1, 65] and y == [%d] else 1)' '%s'",
         NLABELS, model))
    fail_msg("%s: refused by ONNX's checker, or not [T, 1, 65] -> [%d]", model, NLABELS);
  free(model);
}

/* Texts the vocabulary cannot hold are said: --vocab ascii skips the
 * Cyrillic and Chinese texts of a TSV (no ASCII form), rnnc train counts
 * them and warns of the labels left with none, and rnnc data --vocab
 * ascii lists them, where its default (unicode, for a file) keeps all. */
static void test_vocab_skipped(void **state) {
  (void)state;
  char *path = xasprintf("%s/scripts.tsv", workdir), *out = xasprintf("%s/ascii.safetensors", workdir);
  Buf b = {0};
  for (int i = 0; i < 12; i++)
    buf_printf(&b, "Ив%c\tRussian\n王%c\tChinese\nSm%cth\tEnglish\nDu%cois\tFrench\n", 'a' + i,
               'a' + i, 'a' + i, 'a' + i);
  buf_put(&b, "", 1);
  write_text(path, b.data);
  buf_free(&b);
  char *s = rnnc_expect(0, (const char *const[]){"train", graph, "--data", path, "--vocab", "ascii",
                                                 "--epochs", "1", "--out", out, NULL});
  assert_contains(s, "warning: 24 texts skipped (rnnc data --data ");
  assert_contains(s, "--vocab ascii lists them); no text left of Chinese, Russian");
  free(s);
  s = rnnc_expect(0, (const char *const[]){"data", "--data", path, "--vocab", "ascii", NULL});
  assert_contains(s, "skipped: 24 names");
  assert_contains(s, "has no ASCII form");
  free(s);
  s = rnnc_expect(0, (const char *const[]){"data", "--data", path, NULL});
  assert_contains(s, "skipped: 0 names");
  free(s);
  s = rnnc_expect(2, (const char *const[]){"data", "--data", path, "--vocab", "klingon", NULL});
  assert_contains(s, "--vocab wants names, unicode or ascii");
  free(s);
  free(out);
  free(path);
}

/* A malformed table is an error at its line and column, exit status 1. */
static void test_table_errors(void **state) {
  (void)state;
  static const struct {
    const char *name, *text, *want;
  } cases[] = {
      {"open.csv", "ab,x\n\"cd,y\n", ":2:1: this quoted field has no closing quote"},
      {"inner.csv", "ab,x\ncd\"e,y\n", ":2:3: a quote inside an unquoted field"},
      {"after.csv", "\"é\"x,y\n", ":1:4: 'x' after a closing quote"},
      {"three.csv", "ab,x\r\n\"a\nb\",c,d\n", ":2:1: 3 fields: a record is text,label"},
      {"label.csv", "ab,\n", ":1:4: an empty label"},
      {"notab.tsv", "ab\tx\ncd\n", ":2:1: no tab: a line is text<TAB>label"},
      {"tabs.tsv", "ab\tx\tz\n", ":1:5: a second tab"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *path = xasprintf("%s/%s", workdir, cases[i].name);
    write_text(path, cases[i].text);
    char *out = rnnc_expect(1, (const char *const[]){"train", graph, "--data", path, "--out",
                                                     ckpt, NULL});
    char *want = xasprintf("%s%s", path, cases[i].want);
    assert_contains(out, want);
    free(want);
    free(out);
    free(path);
  }
  /* Quoted commas, quotes and line breaks are data. */
  char *path = xasprintf("%s/ok.csv", workdir);
  write_text(path, "\"a,\"\"b\"\"\nc\",\"x, \"\"y\"\"\"\nd,x, \"\"y\"\"\n");
  Dataset ds;
  Err e;
  assert_int_equal(data_load(&ds, path, NULL, 0, VOCAB_UNICODE, NULL, &e), -1);
  assert_contains(e.msg, ":3:6: a quote inside an unquoted field");
  write_text(path, "\"a,\"\"b\"\"\nc\",\"x, \"\"y\"\"\"\nd,\"x, \"\"y\"\"\"");
  if (data_load(&ds, path, NULL, 0, VOCAB_UNICODE, NULL, &e))
    fail_msg("%s", e.msg);
  assert_int_equal(ds.nnames, 2);
  assert_int_equal(ds.nlabels, 1);
  assert_string_equal(ds.labels[0], "x, \"y\"");
  assert_string_equal(ds.names[0].text, "a,\"b\"\nc");
  assert_string_equal(ds.names[1].text, "d");
  data_free(&ds);
  free(path);
}

/* A text with a NUL in it is skipped, shown as it is (the bytes after the
 * NUL too, escaped, and no byte past them); an empty text is an empty
 * line, in TSV and CSV and whatever the vocabulary (NFC normalization of
 * nothing). */
static void test_table_nul_and_empty(void **state) {
  (void)state;
  static const char nul[] = "A\0zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
                            "\t\xc3\x89tiquette\nfoo\t\xc3\x89tiquette\n";
  char *path = xasprintf("%s/nul.tsv", workdir);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(nul, 1, sizeof nul - 1, f), sizeof nul - 1);
  fclose(f);
  static const VocabKind kinds[] = {VOCAB_UNICODE, VOCAB_ASCII};
  for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
    Dataset ds;
    Err e;
    if (data_load(&ds, path, NULL, 0, kinds[k], NULL, &e))
      fail_msg("%s", e.msg);
    assert_int_equal(ds.nnames, 1);
    assert_int_equal(ds.nskipped, 1);
    assert_int_equal(ds.skipped[0].line, 1);
    const char *why = ds.skipped[0].reason;
    if (!strstr(why, "NUL") && !strstr(why, "U+0000"))
      fail_msg("the NUL's line skipped for: %s", why);
    assert_non_null(strstr(ds.skipped[0].text, "A\\x00zzz"));
    data_free(&ds);
  }
  free(path);
  static const char *const empty[][2] = {{"empty.tsv", "\tX\nSmith\tEnglish\n"},
                                         {"empty.csv", "\"\",X\nfoo,X\n"},
                                         {"blank.tsv", "   \tX\nfoo\tX\n"}};
  for (size_t i = 0; i < ARRAY_LEN(empty); i++)
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
      path = xasprintf("%s/%s", workdir, empty[i][0]);
      write_text(path, empty[i][1]);
      Dataset ds;
      Err e;
      if (data_load(&ds, path, NULL, 0, kinds[k], NULL, &e))
        fail_msg("%s: %s", empty[i][0], e.msg);
      assert_int_equal(ds.nnames, 1);
      assert_int_equal(ds.nempty, 1);
      assert_int_equal(ds.nskipped, 0);
      data_free(&ds);
      free(path);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_csv_equals_tsv),
      cmocka_unit_test(test_checkpoint_metadata),
      cmocka_unit_test(test_eval_csv),
      cmocka_unit_test(test_unknown_slot_at_predict),
      cmocka_unit_test(test_build),
      cmocka_unit_test(test_export_data_graph),
      cmocka_unit_test(test_vocab_skipped),
      cmocka_unit_test(test_table_errors),
      cmocka_unit_test(test_table_nul_and_empty),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
