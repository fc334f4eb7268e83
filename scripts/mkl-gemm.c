// Intel MKL's sgemm on the runner's GEMM shapes, y[m, n] = x[m, k] · w[n, k]^T, f32, row-major,
// 2 threads, best of 3 timings: the comparison issue 18 asks for ("a well-kept BLAS where it
// is faster than our own"). MKL is loaded with dlopen from the path given, so nothing links
// it. Modes:
//   omp     MKL's own threading (the Intel OpenMP layer, OMP_NUM_THREADS threads)
//   blocks  MKL sequential, each of 2 pthreads on its own 16-aligned block of output columns
//           (how the runner splits a GEMM between threads, `Threads::ColumnBlocks`)
//   packed  as blocks, with each block's weights packed once beforehand
//           (cblas_sgemm_pack, then cblas_sgemm_compute per call)
// Built and run by scripts/mkl-gemm.sh.
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162 };
enum { LAYER_INTEL = 0, LAYER_SEQUENTIAL = 1 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                         const float *, int, float, float *, int);
typedef size_t (*pack_size_fn)(int, int, int, int);
typedef void (*pack_fn)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_fn)(int, int, int, int, int, int, const float *, int, const float *,
                           int, float, float *, int);
typedef int (*layer_fn)(int);
static sgemm_fn sgemm;
static pack_size_fn pack_size;
static pack_fn pack;
static compute_fn compute;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
  int m, k, n0, n, ldy;
  const float *x, *w;
  float *y, *packed;
} block;

static void *run_block(void *p) {
  block *b = p;
  if (b->packed)
    compute(ROW_MAJOR, NO_TRANS, PACKED, b->m, b->n, b->k, b->x, b->k, b->packed, b->k, 0.f,
            b->y + b->n0, b->ldy);
  else
    sgemm(ROW_MAJOR, NO_TRANS, TRANS, b->m, b->n, b->k, 1.f, b->x, b->k,
          b->w + (size_t)b->n0 * b->k, b->k, 0.f, b->y + b->n0, b->ldy);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[2], "omp") && strcmp(argv[2], "blocks") &&
                    strcmp(argv[2], "packed"))) {
    fprintf(stderr, "usage: %s /path/to/libmkl_rt.so.N omp|blocks|packed\n", argv[0]);
    return 2;
  }
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    fprintf(stderr, "%s\n", dlerror());
    return 1;
  }
  const char *mode = argv[2];
  int omp = !strcmp(mode, "omp"), use_packed = !strcmp(mode, "packed");
  ((layer_fn)dlsym(h, "MKL_Set_Threading_Layer"))(omp ? LAYER_INTEL : LAYER_SEQUENTIAL);
  sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
  pack_size = (pack_size_fn)dlsym(h, "cblas_sgemm_pack_get_size");
  pack = (pack_fn)dlsym(h, "cblas_sgemm_pack");
  compute = (compute_fn)dlsym(h, "cblas_sgemm_compute");
  if (!sgemm || !pack_size || !pack || !compute) {
    fprintf(stderr, "%s lacks the cblas_sgemm symbols\n", argv[1]);
    return 1;
  }
  // m x k x n: q|k|v, o, gate|up, down and the LM head of SmolLM2-135M at 1024 rows (an 8x128
  // forward), then 200 and 100 rows (evaluation passes) and 256 rows of the LM head.
  static const int shapes[][3] = {
      {1024, 576, 960}, {1024, 576, 576}, {1024, 576, 3072}, {1024, 1536, 576},
      {1024, 576, 49152}, {200, 576, 960}, {200, 1536, 576}, {100, 576, 576}, {256, 576, 49152}};
  printf("MKL %s, GFLOP/s (best of 3)\n", mode);
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    int m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
    float *x = malloc(sizeof(float) * m * k), *w = malloc(sizeof(float) * n * k),
          *y = malloc(sizeof(float) * m * n);
    for (long i = 0; i < (long)m * k; i++) x[i] = (i % 97) * 0.01f;
    for (long i = 0; i < (long)n * k; i++) w[i] = (i % 89) * 0.01f;
    int half = ((n / 2 + 15) / 16) * 16;
    block blocks[2] = {{m, k, 0, half, n, x, w, y, NULL}, {m, k, half, n - half, n, x, w, y, NULL}};
    for (int t = 0; use_packed && t < 2; t++) {
      blocks[t].packed = malloc(pack_size(B_MATRIX, m, blocks[t].n, k));
      pack(ROW_MAJOR, B_MATRIX, TRANS, m, blocks[t].n, k, 1.f, w + (size_t)blocks[t].n0 * k, k,
           blocks[t].packed);
    }
    double flop = 2.0 * m * n * k, best = 1e30;
    int reps = (int)(2e10 / flop) + 1;
    for (int r = 0; r < 3; r++) {
      double t0 = now();
      for (int i = 0; i < reps; i++) {
        if (omp) {
          sgemm(ROW_MAJOR, NO_TRANS, TRANS, m, n, k, 1.f, x, k, w, k, 0.f, y, n);
        } else {
          pthread_t other;
          pthread_create(&other, NULL, run_block, &blocks[1]);
          run_block(&blocks[0]);
          pthread_join(other, NULL);
        }
      }
      double dt = (now() - t0) / reps;
      if (dt < best) best = dt;
    }
    printf("%10dx%dx%d %6.1f\n", m, k, n, flop / best / 1e9);
    free(x), free(w), free(y), free(blocks[0].packed), free(blocks[1].packed);
  }
  return 0;
}
