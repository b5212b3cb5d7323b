"""How many samples a chunk of a batch holds, so that memory is bounded whatever the
batch (``ttforge diverge``, ``export-qonnx --check``): the batch runs a chunk at a time
and the results are combined into exactly what the whole batch gives."""

from __future__ import annotations

from ttforge.limits import MAX_CHUNK_VALUES

__all__ = ["chunk_rows"]


def chunk_rows(per_sample: int, multiple: int = 1, budget: int | None = None) -> int:
    """Samples of a chunk: as many as fit ``budget`` values (default
    :data:`~ttforge.limits.MAX_CHUNK_VALUES`) at ``per_sample`` values a sample, rounded
    down to a multiple of ``multiple`` (a graph's fixed batch), at least ``multiple``."""
    budget = MAX_CHUNK_VALUES if budget is None else budget
    return max(1, budget // max(1, per_sample) // multiple) * multiple
