/* dist.c: dist.h with MPI (RNNC_HAVE_MPI), or one process alone. */
#include "dist.h"

#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef RNNC_HAVE_MPI
#include <mpi.h>
#endif

#ifdef RNNC_MPI_LIBRARY
/* Open MPI, loaded only when a launcher started this process as one of
 * several (dist_init): linked, libmpi and the six libraries it needs cost
 * every rnnc command ~90 page faults and ~2.7 M instructions of the
 * dynamic loader's relocations at start-up (docs/benchmarks.md,
 * "Start-up"). RNNC_MPI_LIBRARY is its soname (CMakeLists.txt). The
 * calls below go through pointers dlsym finds; Open MPI's handles
 * (MPI_COMM_WORLD, MPI_FLOAT, ...) are the addresses of its globals, which
 * mpi.h's macros take: each global's name becomes the object at the
 * address dlsym found. RNNC_MPI_LIBRARY_DIR: the directory the build
 * found it in, tried when the dynamic loader's search does not find it. */
#include <dlfcn.h>

static struct {
  __typeof__(MPI_Initialized) *Initialized;
  __typeof__(MPI_Init) *Init;
  __typeof__(MPI_Comm_rank) *Comm_rank;
  __typeof__(MPI_Comm_size) *Comm_size;
  __typeof__(MPI_Comm_split_type) *Comm_split_type;
  __typeof__(MPI_Comm_free) *Comm_free;
  __typeof__(MPI_Finalize) *Finalize;
  __typeof__(MPI_Allreduce) *Allreduce;
  __typeof__(MPI_Abort) *Abort;
  char *comm_world, *info_null, *op_sum, *op_min, *t_int, *t_float, *t_double, *t_uint64;
} mpi;

#define MPI_Initialized (*mpi.Initialized)
#define MPI_Init (*mpi.Init)
#define MPI_Comm_rank (*mpi.Comm_rank)
#define MPI_Comm_size (*mpi.Comm_size)
#define MPI_Comm_split_type (*mpi.Comm_split_type)
#define MPI_Comm_free (*mpi.Comm_free)
#define MPI_Finalize (*mpi.Finalize)
#define MPI_Allreduce (*mpi.Allreduce)
#define MPI_Abort (*mpi.Abort)
#define ompi_mpi_comm_world (*mpi.comm_world)
#define ompi_mpi_info_null (*mpi.info_null)
#define ompi_mpi_op_sum (*mpi.op_sum)
#define ompi_mpi_op_min (*mpi.op_min)
#define ompi_mpi_int (*mpi.t_int)
#define ompi_mpi_float (*mpi.t_float)
#define ompi_mpi_double (*mpi.t_double)
#define ompi_mpi_uint64_t (*mpi.t_uint64)

static int load_mpi(Err *e) {
  if (mpi.Init)
    return 0;
  /* RTLD_GLOBAL: Open MPI's own plugins (dlopened by libmpi) resolve
   * libmpi's symbols through the global scope. */
  void *lib = dlopen(RNNC_MPI_LIBRARY, RTLD_NOW | RTLD_GLOBAL);
  if (!lib) /* not in the loader's path: where the build found it */
    lib = dlopen(RNNC_MPI_LIBRARY_DIR "/" RNNC_MPI_LIBRARY, RTLD_NOW | RTLD_GLOBAL);
  if (!lib)
    return errf(e, "started by an MPI launcher, but cannot load Open MPI: %s", dlerror());
  const struct {
    const char *name;
    void **at;
  } syms[] = {
      {"MPI_Initialized", (void **)&mpi.Initialized},
      {"MPI_Init", (void **)&mpi.Init},
      {"MPI_Comm_rank", (void **)&mpi.Comm_rank},
      {"MPI_Comm_size", (void **)&mpi.Comm_size},
      {"MPI_Comm_split_type", (void **)&mpi.Comm_split_type},
      {"MPI_Comm_free", (void **)&mpi.Comm_free},
      {"MPI_Finalize", (void **)&mpi.Finalize},
      {"MPI_Allreduce", (void **)&mpi.Allreduce},
      {"MPI_Abort", (void **)&mpi.Abort},
      {"ompi_mpi_comm_world", (void **)&mpi.comm_world},
      {"ompi_mpi_info_null", (void **)&mpi.info_null},
      {"ompi_mpi_op_sum", (void **)&mpi.op_sum},
      {"ompi_mpi_op_min", (void **)&mpi.op_min},
      {"ompi_mpi_int", (void **)&mpi.t_int},
      {"ompi_mpi_float", (void **)&mpi.t_float},
      {"ompi_mpi_double", (void **)&mpi.t_double},
      {"ompi_mpi_uint64_t", (void **)&mpi.t_uint64},
  };
  void *found[ARRAY_LEN(syms)];
  for (size_t i = 0; i < ARRAY_LEN(syms); i++)
    if (!(found[i] = dlsym(lib, syms[i].name)))
      return errf(e, "%s has no %s: %s", RNNC_MPI_LIBRARY, syms[i].name, dlerror());
  for (size_t i = 0; i < ARRAY_LEN(syms); i++) /* all or none */
    *syms[i].at = found[i];
  return 0;
}
#elif defined(RNNC_HAVE_MPI)
static int load_mpi(Err *e) { return (void)e, 0; } /* linked */
#endif

int dist_launched_size(void) {
  /* Open MPI's mpirun; MPICH's and Intel MPI's Hydra, and srun with PMI;
   * MVAPICH2 */
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"};
  for (size_t i = 0; i < ARRAY_LEN(vars); i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) {
      long n = strtol(v, NULL, 10);
      if (n >= 1 && n < (1L << 24))
        return (int)n;
    }
  }
  return 1;
}

int dist_init(Dist *d, Err *e) {
  *d = (Dist){.rank = 0, .size = 1, .local = 1};
  int launched = dist_launched_size();
  if (launched <= 1)
    return 0;
#ifdef RNNC_HAVE_MPI
  if (load_mpi(e))
    return -1;
  int already = 0;
  MPI_Initialized(&already);
  if (!already && MPI_Init(NULL, NULL) != MPI_SUCCESS)
    return errf(e, "MPI_Init failed");
  d->mpi = !already;
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->size);
  MPI_Comm node; /* the ranks that share this one's memory: its machine */
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_size(node, &d->local);
  MPI_Comm_free(&node);
  return 0;
#else
  return errf(e, "this rnnc was built without MPI, but it was started as one of %d processes "
                 "(mpirun -np %d): each would train alone. Build rnnc with Open MPI "
                 "(apt-get install libopenmpi-dev openmpi-bin, then run cmake again) or run "
                 "one process",
              launched, launched);
#endif
}

void dist_finalize(Dist *d) {
#ifdef RNNC_HAVE_MPI
  if (d->mpi)
    MPI_Finalize();
#endif
  d->mpi = false;
}

#ifdef RNNC_HAVE_MPI
/* MPI counts are ints: large buffers go in pieces. An MPI error ends the
 * job (MPI_ERRORS_ARE_FATAL, the default): MPI_Allreduce returns. */
static void allreduce(void *x, size_t n, size_t elem, MPI_Datatype t, MPI_Op op) {
  enum { PIECE = 1 << 28 };
  char *p = x;
  while (n > 0) {
    int k = n > PIECE ? PIECE : (int)n;
    MPI_Allreduce(MPI_IN_PLACE, p, k, t, op, MPI_COMM_WORLD);
    p += (size_t)k * elem;
    n -= (size_t)k;
  }
}
#endif

void dist_sum_f32(const Dist *d, float *x, size_t n) {
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    allreduce(x, n, sizeof *x, MPI_FLOAT, MPI_SUM);
#else
  (void)d, (void)x, (void)n;
#endif
}

void dist_sum_u64(const Dist *d, uint64_t *x, size_t n) {
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    allreduce(x, n, sizeof *x, MPI_UINT64_T, MPI_SUM);
#else
  (void)d, (void)x, (void)n;
#endif
}

void dist_sum_f64(const Dist *d, double *x, size_t n) {
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    allreduce(x, n, sizeof *x, MPI_DOUBLE, MPI_SUM);
#else
  (void)d, (void)x, (void)n;
#endif
}

bool dist_same_u64(const Dist *d, uint64_t h) {
  uint64_t lo_nhi[2] = {h, ~h}; /* min h, and min ~h = ~(max h) */
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    allreduce(lo_nhi, 2, sizeof *lo_nhi, MPI_UINT64_T, MPI_MIN);
#else
  (void)d;
#endif
  return lo_nhi[0] == ~lo_nhi[1];
}

int dist_first_failed(const Dist *d, bool failed) {
  int first = failed ? d->rank : d->size;
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    allreduce(&first, 1, sizeof first, MPI_INT, MPI_MIN);
#endif
  return first < d->size ? first : -1;
}

/* The message for SIGTERM: two buffers, so that the handler never reads
 * one that is being written (messages change once an epoch). */
static char term_msg[2][1024];
static atomic_int term_cur = -1;
static struct sigaction term_prev;

static void on_term(int sig) {
  int k = atomic_load(&term_cur);
  if (k >= 0 && write(STDERR_FILENO, term_msg[k], strlen(term_msg[k])) < 0) {
    /* nothing to do: the process ends anyway */
  }
  if (term_prev.sa_handler != SIG_DFL && !(term_prev.sa_flags & SA_SIGINFO)) {
    term_prev.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void dist_term_message(const char *fmt, ...) {
  int k = atomic_load(&term_cur) == 0 ? 1 : 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(term_msg[k], sizeof term_msg[k], fmt, ap);
  va_end(ap);
  if (atomic_exchange(&term_cur, k) < 0 && sigaction(SIGTERM, NULL, &term_prev) == 0 &&
      term_prev.sa_handler != SIG_IGN) { /* an ignored SIGTERM stays ignored */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
  }
}

void dist_abort(const Dist *d, int code) {
  fflush(stdout);
  fflush(stderr);
#ifdef RNNC_HAVE_MPI
  if (d->size > 1)
    MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)d;
#endif
  exit(code);
}
