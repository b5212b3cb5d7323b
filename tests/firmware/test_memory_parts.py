"""``memory_parts`` (the board fit check of ``ttforge build`` and the flow) counts the
memories the inference engine declares: every ``lib.memory.Memory`` of the elaborated
``TTEngine``, in bits, with and without throughput mode's staging memory (but the output
path's FIFO of ``fifo_depth`` elements, which becomes flip-flops, not block RAM)."""

from __future__ import annotations

import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.lib import memory

from ttforge.firmware.build import memory_parts
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING
from ttforge.hw.engine import TTEngine


@pytest.mark.parametrize("throughput,buf_ports,buf_depth", [(0, 2, 256), (1, 2, 256), (0, 1, 256),
                                                        (0, 2, 96), (0, 1, 96)])
def test_memory_parts_are_the_memories_the_inference_engine_declares(monkeypatch, throughput,
                                                                     buf_ports, buf_depth):
    declared = []
    init = memory.Memory.__init__

    def record(self, *, shape, depth, **kw):
        if depth > ENGINE_TIMING.fifo_depth:       # not the output FIFO
            declared.append(Shape.cast(shape).width * depth)
        init(self, shape=shape, depth=depth, **kw)
    monkeypatch.setattr(memory.Memory, "__init__", record)
    cfg = AccelConfig(lanes=4, buf_depth=buf_depth, core_depth=128, bias_depth=64,
                      throughput=throughput, buf_ports=buf_ports)
    Fragment.get(TTEngine(cfg), None)
    parts = dict(memory_parts(cfg))
    buffers = parts.pop("buffers")
    # two ports: one memory of both halves (24 words of 96 elements: 48 rows); one port:
    # two memories
    halves = [buffers] if buf_ports == 2 else [buffers // 2, buffers // 2]
    assert sorted(declared) == sorted([*parts.values(), *halves])
    assert buffers == 2 * buf_depth * cfg.inter_bits
    assert ("staging" in parts) == bool(throughput)
