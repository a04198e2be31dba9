"""The C heap (glibc malloc): large blocks straight from the system, free pages given back.

glibc serves a block of over 128 KiB from its own mapping, but after such a block is freed it
raises that threshold (up to 32 MiB), so the next image-sized arrays come from its heaps, where
freed memory stays in the process's RSS. An upload's pixels or a response's masks then count as if
every session or request still held them. Elsewhere (not glibc) these calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
# Above a click's largest arrays (8 MiB of decoder activations): mapping those cost 15 ms a click.
LARGE_BLOCK_BYTES = 9 << 20
TRIM_THRESHOLD_BYTES = 256 << 20  # free heap top kept; return_free_memory() trims it after uploads


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> None:
    """Serve blocks of `threshold` bytes and more from their own mappings, returned when freed
    (a fixed threshold: glibc no longer raises it)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        # Fixing that threshold also fixes the heaps' trim threshold at 128 KiB: the heaps would
        # then shrink after every click and fault their pages in again at the next (15 ms a click).
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def return_free_memory() -> None:
    """Give the heaps' free pages back to the system (malloc_trim). Called after each upload and
    each "segment everything", whose transients are tens of MB."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
