// LD_PRELOAD shim for tests: every posix_memalign block (oneDNN allocates its primitives' buffers so)
// ends right at a PROT_NONE page, so a kernel writing or reading past one faults at once (SIGSEGV)
// instead of corrupting the heap for a crash later. free() unmaps them; other frees pass through.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_BLOCKS 65536
static void* users[MAX_BLOCKS];
static void* bases[MAX_BLOCKS];
static size_t lens[MAX_BLOCKS];
static int used;  // slots [0, used) may hold a block: free() scans only those
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

int posix_memalign(void** out, size_t align, size_t size) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (align < sizeof(void*) || (align & (align - 1))) return EINVAL;
  const size_t rounded = (size + align - 1) / align * align;
  const size_t total = (rounded + align + page - 1) / page * page + page;
  char* base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return ENOMEM;
  mprotect(base + total - page, page, PROT_NONE);
  // The block's end meets the guard page (size rounded up to the alignment, as the start must be aligned).
  char* user = (char*)((uintptr_t)(base + total - page - rounded) & ~(uintptr_t)(align - 1));
  pthread_mutex_lock(&mu);
  int slot = -1;
  for (int i = 0; i < MAX_BLOCKS && slot < 0; i++) {
    if (!users[i]) slot = i;
  }
  if (slot >= 0) {
    if (slot >= used) used = slot + 1;
    users[slot] = user;
    bases[slot] = base;
    lens[slot] = total;
  }
  pthread_mutex_unlock(&mu);
  if (slot < 0) abort();  // more live blocks than the table holds: the test is misconfigured
  *out = user;
  return 0;
}

void free(void* p) {
  static void (*real_free)(void*);
  if (!real_free) real_free = (void (*)(void*))dlsym(RTLD_NEXT, "free");
  if (p) {
    pthread_mutex_lock(&mu);
    for (int i = 0; i < used; i++) {
      if (users[i] == p) {
        munmap(bases[i], lens[i]);
        users[i] = NULL;
        pthread_mutex_unlock(&mu);
        return;
      }
    }
    pthread_mutex_unlock(&mu);
  }
  real_free(p);
}
