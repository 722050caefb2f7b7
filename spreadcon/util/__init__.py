"""Small utilities shared by the layers: atomic writes, allocator, host-sync recorder, timing."""

