"""Memory freed after a burst goes back to the system, not only to the allocator.

After a thousand models are listed, reconciled or deleted, Python has freed the objects, yet
the operator's RSS stayed far above its idle level (1,000 models: 147 MiB a minute after all
were deleted, 73 MiB idle). Where it sat (500 models, read in the live process: malloc_info,
``sys._debugmallocstats``, /proc/<pid>/smaps): the live Python objects were back at their idle
size (30 MB), but CPython's small-object allocator (pymalloc) held 71 arenas of 1 MiB against
30 idle, 2,112 of their 16 KiB pools entirely unused. pymalloc returns an arena only once
every object in it is freed, and a few objects that outlive a burst (an interned string, a
dict grown in a cache) keep a whole arena each; no call gives those pages back.

So the operator runs with ``PYTHONMALLOC=malloc`` (``ALLOCATOR_ENV``: the image sets it, the
e2e and benchmark harness too): every object comes from glibc's malloc, whose
``malloc_trim(0)`` returns each whole free page, wherever it lies, to the system. The trim is
called only once the work queue has been empty for a while after some work
(``handlers.BurstEnd``), so a steady operator pays nothing and a busy one is not slowed by it.
With objects in malloc, each thread that allocates gets an arena of its own (up to 8 per
core), whose free memory no other thread reuses: ``MALLOC_ARENA_MAX=2`` keeps the worker
threads on two (1,000 models: the restart's peak 234 MiB with it, 267 without). Under pymalloc
it had changed nothing (300 models): the objects were not in glibc's arenas then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Mapping

# The operator's environment, set where it is started (Dockerfile; tests/e2e/conftest.py).
ALLOCATOR_ENV: Mapping[str, str] = {"PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "2"}


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    found: Callable[[int], int] = trim
    return found


_TRIM = _malloc_trim()


def object_allocator(environ: Mapping[str, str] = os.environ) -> str:
    """The allocator this interpreter took Python objects from: what ``PYTHONMALLOC`` said at
    its start (``pymalloc`` by default; the environment is ignored under ``-E``/``-I``)."""
    name = "" if sys.flags.ignore_environment else environ.get("PYTHONMALLOC", "")
    base = name.removesuffix("_debug")  # the same allocator with debug hooks
    return "pymalloc" if base in ("", "default", "debug") else base


def trim_reaches_objects(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``release_memory`` can return the pages of freed Python objects: they come from
    glibc's malloc and the trim exists."""
    return _TRIM is not None and object_allocator(environ) == "malloc"


def release_memory() -> bool:
    """Collect cycles, then return free heap pages to the system; whether any were returned
    (always False without glibc)."""
    gc.collect()
    return bool(_TRIM(0)) if _TRIM is not None else False
