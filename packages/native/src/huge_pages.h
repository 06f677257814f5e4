// Memory on transparent huge pages: 2 MiB-aligned, advised MADV_HUGEPAGE (Linux) before its first
// touch. The system hands anonymous memory huge pages only when asked where its THP setting is
// `madvise` (Debian's); on 4 KiB pages every 4 KiB of a kernel's pass over a buffer is a TLB miss (a
// two-level walk in a VM) and a stop for the hardware prefetchers, which do not cross pages. Where
// the system refuses (`never`), the memory is plain pages and everything works the same.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace svd_huge {

constexpr size_t kPage = size_t(2) << 20;

// `bytes` rounded up to whole 2 MiB pages (the size allocated, into *rounded), advised as huge
// pages; null when the allocation fails. Free with std::free.
inline void* Alloc(size_t bytes, size_t* rounded) {
  *rounded = (bytes + kPage - 1) / kPage * kPage;
  void* p = std::aligned_alloc(kPage, *rounded);
#ifdef __linux__
  if (p) madvise(p, *rounded, MADV_HUGEPAGE);  // a hint: where refused, plain pages
#endif
  return p;
}

// A scratch buffer of floats that grows as asked and is kept (a kernel's per-thread scratch).
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  // At least n floats (contents undefined); throws std::bad_alloc as std::vector would.
  float* Get(size_t n) {
    if (n <= cap_) return p_;
    std::free(p_);
    p_ = nullptr;
    cap_ = 0;
    size_t rounded = 0;
    p_ = static_cast<float*>(Alloc(n * sizeof(float), &rounded));
    if (!p_) throw std::bad_alloc();
    cap_ = rounded / sizeof(float);
    return p_;
  }

 private:
  float* p_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace svd_huge
