"""spreadcon.util.parallel: jobs in spawned processes return what the serial loop returns, in order."""

from __future__ import annotations

import math

import pytest

from spreadcon.util import parallel


def test_results_come_back_in_job_order_from_several_processes():
    jobs = [(x,) for x in (4.0, 9.0, 16.0, 25.0, 36.0)]
    assert parallel.run_jobs(math.sqrt, jobs, workers=2) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert parallel.run_jobs(math.sqrt, jobs, workers=1) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert parallel.run_jobs(math.sqrt, [], workers=2) == []


def test_a_failing_job_raises_its_own_error():
    with pytest.raises(ValueError, match="math domain error"):
        parallel.run_jobs(math.sqrt, [(1.0,), (-1.0,), (4.0,)], workers=2)


def test_workers_run_one_torch_thread_by_default():
    import torch

    assert parallel.run_jobs(torch.get_num_threads, [(), ()], workers=2) == [1, 1]
    assert parallel.run_jobs(torch.get_num_threads, [(), ()], workers=2, threads=2) == [2, 2]


@pytest.mark.parametrize("kw", [{"workers": 0}, {"workers": 1.5}, {"threads": 0}])
def test_bad_counts_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        parallel.run_jobs(math.sqrt, [(1.0,)], **kw)


def test_cores_is_a_positive_count():
    assert isinstance(parallel.cores(), int) and parallel.cores() >= 1


def test_shared_keywords_reach_every_call():
    assert parallel.run_jobs(int, [("11",), ("101",)], shared={"base": 2}, workers=2) == [3, 5]
