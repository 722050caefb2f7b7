"""spreadcon.util.malloc: glibc keeps freed blocks, so a training step stops page-faulting.

Measured in page faults (``ru_minflt``), not time: the count is a property of the
allocator, while times depend on the machine's load.
"""

from __future__ import annotations

import sys

import pytest

from spreadcon import bench
from spreadcon.util.malloc import SETTINGS, keep_freed_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


@linux
def test_keep_freed_memory_applies_once_and_reports_what_it_set():
    first = keep_freed_memory()
    assert first["applied"] is True and first["reason"] is None
    assert set(first["settings"]) == set(SETTINGS)
    assert first["settings"]["M_TRIM_THRESHOLD"] == SETTINGS["M_TRIM_THRESHOLD"]
    assert keep_freed_memory() is first  # once per process


@linux
def test_kept_memory_cuts_the_page_faults_of_a_training_step():
    """A small ViT step in two fresh processes: with the setting, far fewer pages come from the kernel."""
    r = bench.bench_allocator(batch=8, steps=6, rounds=1)
    assert r["allocator_default_minflt_per_step"] > 2000, r  # the default allocator does fault
    assert r["allocator_kept_minflt_per_step"] < 0.5 * r["allocator_default_minflt_per_step"], r
