"""Handing the C heap's freed memory back to the system after the model's work.

A forward pass allocates and frees tensors of a few MB each. glibc's malloc serves blocks above its mmap threshold
with their own mappings, but it raises that threshold to the size of each such block freed (up to 32 MiB), so from
the first forward on, activations, and at load the weights' temporary copies, come from the heap, and what is freed
there stays resident, scattered between live blocks where the heap's top cannot shrink. Each thread that runs the
model (the daemon's, the search workers', the answer's) has its own arena holding its own share.

Handed back after each forward call, the fast preset in fp32 held 1,282 MiB loaded instead of 1,359-1,370 and peaked
at 1,496-1,501 MiB instead of 1,602-1,634 (``benchmarks/preset_cost.py``, two runs each way, JSON in
benchmarks/heap_release/): 1.28x its weights above the memory after the modelling code's import, was 1.40-1.43x.
The cost falls on the next call, whose pages fault in again: on a 2-core EPYC VM, interleaved on one model
(``benchmarks/heap_release.py``, 16 rounds), photos, passages and reranks within the host's spread; a query 4-8 %
(~17 ms) in that run and a longer throwaway one. Fixing malloc's threshold low instead (every block above 128 KiB
mapped) kept the peak lower still but cost 20-30 % a photo (a throwaway run), since every activation is then mapped
and zeroed afresh.

``release_freed`` calls ``malloc_trim(0)``, which returns every arena's free pages (not only the heap's top). Where
the C library has no such call (macOS, Windows, musl) it does nothing: their allocators behave differently, and
nothing was measured there.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any


@functools.cache
def _trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if os.name != "posix":
        return None
    # The symbols already loaded into this process, the C library's among them (no search for its file).
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed() -> bool:
    """Hand the memory that malloc holds freed back to the system; True if anything was handed back."""
    trim = _trim()
    return bool(trim(0)) if trim is not None else False
