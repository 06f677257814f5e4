// Asking for a store stream's cache lines ahead of the stores.
//
// Why: our kernels write their outputs (a [64,32,32,16] activation is 4 MiB) into buffers that the
// wasm heap hands out cold. Each store to a line not in cache first waits for the line (a read for
// ownership); the hardware prefetchers follow the loads of a kernel but not so well its stores. A
// PREFETCHW kAhead ahead (below) asks for each line in writable state early: a 4 MiB copy into a cold
// buffer took 0.60 ms and 0.29 with it (as fast as into a warm one), on the Intel Xeon of the
// pruning rounds.
#pragma once
#include <cstdint>

namespace svd_prefetch {

// How far ahead, in floats: 8 KiB. It was 16 KiB until the native step's buffers went on huge
// pages; since then 8 KiB measured faster (in-process paired A/B at batch 64: pruned ResNet-20 step
// -0.63 +- 0.29 and -0.87 +- 0.29 ms, full rank -2.1 +- 0.8 ms; 4 KiB no different from 8, 32 and
// 64 KiB slower by 0.4 and 1.6 ms).
constexpr int64_t kAhead = 2048;

// On by default; setPrefetch (addon.cc) switches them, for benchmarks.
inline bool g_write = true;
inline bool g_read = true;

// PREFETCHW of the line kAhead floats past p (a hint: no fault past the buffer's end, and a no-op
// on x86-64 CPUs without the instruction); nothing off x86-64. Inline asm, not
// __builtin_prefetch(p, 1): without -mprfchw (the addon builds for any x86-64) GCC emits that as a
// plain PREFETCHT0, which asks for the line without ownership.
inline void ForWrite(const float* p) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!g_write) return;
  const char* q = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + kAhead * sizeof(float));
  __asm__ volatile("prefetchw %0" : : "m"(*q));
#else
  (void)p;
#endif
}

// The same for a stream of loads (PREFETCHT0).
inline void ForRead(const float* p) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!g_read) return;
  __builtin_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + kAhead * sizeof(float)), 0, 3);
#else
  (void)p;
#endif
}

}  // namespace svd_prefetch
