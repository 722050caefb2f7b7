"""Keep freed memory in the process, so that large CPU tensors do not page-fault on every allocation.

glibc's ``malloc`` serves a large request (above ``M_MMAP_THRESHOLD``, 128 KiB
at start, adapting up to 32 MiB) with a fresh ``mmap`` and gives it back to
the kernel on ``free``; it also trims the top of the heap once more than
``M_TRIM_THRESHOLD`` is free. A training step allocates and frees many
activations of a few MiB each, so the kernel hands out zeroed pages again and
again: every first touch of a page is a minor page fault. On the 2-core
machine this project is built on, one ViT training step at batch 128 (one
thread) took 456k-564k minor faults with the defaults and 1.4k-8k with
:func:`keep_freed_memory`, and 10.8 s against 9.0-9.5 s (two runs each);
``python -m spreadcon bench`` measures it again (``bench_allocator``).

:func:`keep_freed_memory` raises both thresholds through ``mallopt``, so freed
blocks stay in the heap and are reused. The cost: the resident size of the
process does not shrink after its peak (which a training run reaches every
step anyway). It is process-wide and cannot be undone, so it is called by the
training entry points (:func:`spreadcon.train.loop.train`,
:func:`spreadcon.runs.experiment.run_experiment`) and the benchmark, never at import. On a
platform without glibc it does nothing and says so.

Example:
    >>> keep_freed_memory()["applied"] in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory", "SETTINGS"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

#: What :func:`keep_freed_memory` sets, in bytes.
SETTINGS = {
    "M_MMAP_THRESHOLD": 1 << 30,  # blocks up to 1 GiB come from the heap (glibc < 2.26 caps this at 32 MiB)
    "M_TRIM_THRESHOLD": 1 << 30,  # give memory back to the kernel only when 1 GiB at the top of the heap is free
    "M_TOP_PAD": 64 << 20,  # grow the heap 64 MiB at a time
}

_MMAP_CAP = 32 << 20  # the largest M_MMAP_THRESHOLD older glibc accepts on 64-bit
_state: dict | None = None


def keep_freed_memory() -> dict:
    """Set :data:`SETTINGS` through glibc's ``mallopt`` (once per process; later calls return the first result).

    Returns:
        ``{"applied": bool, "settings": SETTINGS or None, "reason": str or None}``:
        ``applied`` is False, with the reason, off glibc or when ``mallopt``
        refuses a value.
    """
    global _state
    if _state is not None:
        return _state
    if not sys.platform.startswith("linux"):
        _state = {"applied": False, "settings": None, "reason": f"not glibc (platform {sys.platform})"}
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        _state = {"applied": False, "settings": None, "reason": f"no mallopt in the C library: {e}"}
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    numbers = {"M_MMAP_THRESHOLD": _M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD, "M_TOP_PAD": _M_TOP_PAD}
    applied, refused = {}, []
    for name, value in SETTINGS.items():
        ok = mallopt(numbers[name], value) == 1
        if not ok and name == "M_MMAP_THRESHOLD":  # an older glibc: its cap
            value = _MMAP_CAP
            ok = mallopt(numbers[name], value) == 1
        applied[name] = value
        if not ok:
            refused.append(name)
    if refused:
        _state = {"applied": False, "settings": None, "reason": f"mallopt refused {', '.join(refused)}"}
    else:
        _state = {"applied": True, "settings": applied, "reason": None}
    return _state
