"""How many samples a chunk of a batch holds, so that memory is bounded whatever the
batch (``ttforge diverge``, ``export-qonnx --check``): the batch runs a chunk at a time
and the results are combined into exactly what the whole batch gives. The rule itself
is :func:`ttforge.limits.chunk_rows` (torch-free: the integer trainer uses it too)."""

from __future__ import annotations

from ttforge.limits import chunk_rows

__all__ = ["chunk_rows"]
