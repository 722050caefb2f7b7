"""Find the calls that make the host wait for the device, on any machine.

A training step on a GPU runs at full speed only when Python can queue the
next kernels while the GPU is still busy. Any call that needs a value or a
shape that the device computes stops the queue until the device catches up:
``.item()``, ``bool(tensor)``, ``.tolist()``, ``nonzero``, ``unique``,
``bincount``, boolean-mask indexing, and building a tensor from Python data
on the device (``torch.tensor(list, device="cuda")`` copies from pageable
host memory and waits).

``torch.cuda.set_sync_debug_mode`` reports these only on a GPU. ``HostSyncs``
records the same calls through a :class:`torch.overrides.TorchFunctionMode`,
so a test on the CPU can assert that a step would not synchronise on a GPU::

    with HostSyncs() as syncs:
        step()
    assert not syncs.calls, syncs.calls

It sees calls that go through the torch Python API; it does not see a sync
hidden inside a C++ kernel, so on a GPU also run with
``torch.cuda.set_sync_debug_mode("warn")``.
"""

from __future__ import annotations

import traceback

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["HostSyncs", "SYNCING"]

#: Calls that read a device value or a data-dependent size on the host.
SYNCING = {
    Tensor.item, Tensor.tolist, Tensor.numpy, Tensor.__bool__, Tensor.__int__, Tensor.__float__,
    Tensor.__index__, Tensor.nonzero, torch.nonzero, Tensor.unique, torch.unique,
    Tensor.unique_consecutive, torch.unique_consecutive, torch.bincount, Tensor.bincount,
    torch.masked_select, Tensor.masked_select, torch.argwhere, Tensor.argwhere,
    torch.tensor, torch.as_tensor,
}


def _is_bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts)


class HostSyncs(TorchFunctionMode):
    """Record every call in :data:`SYNCING`, boolean-mask indexing, one-argument
    ``torch.where`` and ``repeat_interleave`` with tensor repeats.

    Attributes:
        calls: ``"name at file:line"`` for each such call, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def _record(self, func) -> None:
        if func is torch.unique:  # a Python wrapper whose qualname says nothing
            name = "torch.unique"
        else:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            name = name.replace("TensorBase.", "Tensor.").replace("_VariableFunctionsClass.", "torch.")
        frame = next((f for f in reversed(traceback.extract_stack()[:-2]) if "torch/" not in f.filename), None)
        where = f" at {frame.filename}:{frame.lineno}" if frame is not None else ""
        self.calls.append(f"{name}{where}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        syncs = func in SYNCING
        if func is Tensor.__getitem__ and len(args) > 1:
            syncs = _is_bool_index(args[1])
        elif func is torch.where and len(args) + len(kwargs) == 1:
            syncs = True
        elif func in (torch.repeat_interleave, Tensor.repeat_interleave):
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            syncs = isinstance(repeats, Tensor) and repeats.numel() > 1 and kwargs.get("output_size") is None
        if syncs:
            self._record(func)
        return func(*args, **kwargs)
