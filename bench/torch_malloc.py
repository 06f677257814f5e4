"""PyTorch at its best on the CPU: glibc told to keep freed memory.

PyTorch's CPU allocator hands every freed activation back to glibc, which unmaps blocks over its
mmap threshold, so each training step page-faults its activations in again: measured here 1.5-3x
slower at batch 128 than at batch 32, and 0.24-0.34 s per plain batch-128 step on 2 threads against
0.19 s with these settings (what a jemalloc/tcmalloc set-up gives). glibc reads them at start-up
only, so a script calls keep_freed_memory() first, before importing torch: it runs the script again
with them set. A value the caller set wins. Every PyTorch script under bench/ that is timed or trains
calls it, so a benchmark and a user running the script by hand get the same PyTorch.
"""
import os
import sys

MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': '33554432', 'MALLOC_TRIM_THRESHOLD_': '68719476736', 'MALLOC_TOP_PAD_': '1073741824'}


def keep_freed_memory():
    """Re-executes the running script with MALLOC_ENV set, unless every one of them is set already."""
    if any(k not in os.environ for k in MALLOC_ENV):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**MALLOC_ENV, **os.environ})
