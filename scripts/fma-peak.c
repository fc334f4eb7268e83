// The cores' f32 FMA peak: N threads (default 2), each running 24 independent AVX-512 FMA
// chains. docs/RESULTS.md compares the GEMMs against it.
//   gcc -O2 -mavx512f -pthread scripts/fma-peak.c -o /tmp/fma-peak && /tmp/fma-peak 2
#include <stdlib.h>
// Peak f32 FMA throughput: 2 threads, 24 independent AVX-512 FMA chains each.
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#define ITERS 4000000000L
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void* run(void* out){
  __m512 a[24]; __m512 b=_mm512_set1_ps(0.999999f), c=_mm512_set1_ps(1e-7f);
  for(int i=0;i<24;i++) a[i]=_mm512_set1_ps((float)i);
  for(long it=0;it<ITERS/24;it++){
    #pragma GCC unroll 24
    for(int i=0;i<24;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
  }
  float s=0; for(int i=0;i<24;i++) s+=_mm512_reduce_add_ps(a[i]);
  *(float*)out=s; return 0;
}
int main(int argc,char**argv){
  int n=argc>1?atoi(argv[1]):2; pthread_t th[64]; float o[64];
  double t=now(); for(int i=0;i<n;i++) pthread_create(&th[i],0,run,&o[i]); for(int i=0;i<n;i++) pthread_join(th[i],0);
  double dt=now()-t; double flops=(double)n*(ITERS/24)*24*16*2;
  printf("%d threads: %.1f GFLOP/s f32 FMA (%.2f s) [%g]\n",n,flops/dt/1e9,dt,o[0]);
}
