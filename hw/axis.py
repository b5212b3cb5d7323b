"""AXI4-Stream adapters between bus beats and the engine's element streams.

The engine consumes and produces one element per cycle
(``amaranth.lib.stream`` of ``StructLayout({"data": signed(act_bits), "last": 1})``);
the AXI4-Stream ports carry ``E = stream_elems`` elements per beat:

* a beat's ``tdata`` is ``E`` *lanes* of ``W = ceil(act_bits / 8) * 8`` bits each;
  element ``j`` of the beat sits in lane ``j`` (bits ``j*W .. j*W + W - 1``), element 0
  in the least significant lane; a vector's elements fill beats in order;
* input (``s_axis``): only the low ``act_bits`` bits of each lane are used (two's
  complement); the upper bits of a lane are ignored;
* output (``m_axis``): each lane holds its element sign-extended to ``W`` bits;
* ``tlast`` is set on the last beat of a vector, and only there;
* the last beat of a vector may be partially filled: a vector of ``n`` elements takes
  ``ceil(n / E)`` beats, and its last beat carries ``n - E*(ceil(n/E) - 1)`` elements
  in its low lanes. On output the unused lanes are 0; on input they are ignored (the
  input adapter knows the vector length from ``IN_COUNT``).

There are no ``tkeep``/``tstrb`` ports: every byte of a beat is a data byte (AXI4-Stream
allows omitting them; a master with ``tkeep`` can leave it unconnected).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.config import stream_lane_bits

__all__ = ["lane_bits", "element_layout", "AXISSignature", "AXISToElements", "ElementsToAXIS"]


#: bits per element lane on the stream buses (``act_bits`` rounded up to bytes); its one
#: home is :func:`ttforge.hw.config.stream_lane_bits`
lane_bits = stream_lane_bits


def element_layout(act_bits: int) -> data.StructLayout:
    """The engine's element stream payload."""
    return data.StructLayout({"data": signed(act_bits), "last": 1})


def AXISSignature(width: int) -> wiring.Signature:
    """An AXI4-Stream master (``tdata/tvalid/tready/tlast``); flip it for a slave."""
    return wiring.Signature({
        "tdata": Out(width),
        "tvalid": Out(1),
        "tready": In(1),
        "tlast": Out(1),
    })


def _params(config=None, *, stream_elems=None, act_bits=None, count_bits=None):
    if config is not None:
        stream_elems = config.stream_elems
        act_bits = config.act_bits
        if count_bits is None:
            count_bits = max(1, int(config.buf_depth).bit_length())
    if stream_elems is None or act_bits is None:
        raise TypeError("give a config or stream_elems and act_bits")
    if count_bits is None:
        count_bits = 16
    return int(stream_elems), int(act_bits), int(count_bits)


class AXISToElements(wiring.Component):
    """AXI4-Stream slave (``s``) -> element stream (``out``), one element per cycle.

    ``count`` is the vector length in elements (``IN_COUNT``). A beat without ``tlast``
    carries ``E`` elements; a beat with ``tlast`` carries the rest of the vector
    (``min(E, max(1, count - received))`` elements), the last of which is marked
    ``last``. A ``tlast`` that comes early or late is passed through as it is (the
    engine reports it as an error). ``flush`` drops a held beat and restarts the
    vector count (soft reset). ``open`` low refuses new beats (the engine's
    ``status.in_open``: disabled, in error) from the next cycle on: ``tready`` is
    registered, so a beat may still be taken in the cycle ``open`` falls; it is held
    (like any held beat) until the engine takes it or ``flush`` drops it.

    ``tready`` comes from flops only (no path from the engine's ``ready``): a skid
    register takes a beat that arrives while the element register is still busy, and
    ``tready`` is low while the skid register is full. The element register takes a
    beat (from the skid register first) when it is empty, or in the cycle its previous
    beat's last element leaves, so a stream of beats runs without bubbles.
    ``fault="skid_drop"`` (a test hook) loses the beat that should go to the skid
    register.
    """

    def __init__(self, config=None, *, stream_elems=None, act_bits=None, count_bits=None,
                 fault=None):
        from ttforge.hw.faults import check_fault
        self.fault = check_fault(fault, ("skid_drop",), "AXISToElements")
        self.elems, self.act_bits, self.count_bits = _params(
            config, stream_elems=stream_elems, act_bits=act_bits, count_bits=count_bits)
        self.lane = lane_bits(self.act_bits)
        super().__init__({
            "s": In(AXISSignature(self.elems * self.lane)),
            "out": Out(stream.Signature(element_layout(self.act_bits))),
            "count": In(self.count_bits),
            "flush": In(1),
            "open": In(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        E, W, A = self.elems, self.lane, self.act_bits

        beat = Signal(E * W)
        beat_last = Signal()
        full = Signal()
        idx = Signal(range(max(E, 2)))          # element of the held beat being offered
        # rem = elements of the vector not yet taken in before the held beat. At the start
        # of a vector it follows `count` (software may program IN_COUNT at any time);
        # each beat without tlast takes E; a tlast beat starts the next vector.
        rem = Signal(signed(self.count_bits + 2))
        vec_start = Signal(init=1)

        # index of the held beat's last element: E - 1, or (the rest of the vector) - 1 on a
        # tlast beat. It is worked out for each candidate value of rem from registers and
        # loaded with the beat, so only a 3-way select sits after the handshake.
        lg = (E - 1).bit_length()

        def last_index(r, tlast, name):
            ge_e = ~r[-1] & (r[lg:].any() if lg < len(r) else 0)    # r >= E (E = 2**lg)
            le_0 = r[-1] | ~r.any()                                  # r <= 0
            out = Signal(range(max(E, 2)), name=name)
            with m.If(~tlast | ge_e):
                m.d.comb += out.eq(E - 1)
            with m.Elif(le_0):
                m.d.comb += out.eq(0)
            with m.Else():
                m.d.comb += out.eq(r[:max(lg, 1)] - 1)
            return out

        rem_le_0 = Signal()
        rem_minus = Signal.like(rem)       # rem after a beat without tlast (stays <= 0)
        m.d.comb += [
            rem_le_0.eq(rem[-1] | ~rem.any()),
            rem_minus.eq(Mux(rem_le_0, rem, rem - E)),
        ]
        # the skid register and the beat offered to the element register (the skid
        # register's first; while it is full tready is low)
        skid = Signal(E * W)
        skid_last = Signal()
        skid_full = Signal()
        open_r = Signal()
        m.d.sync += open_r.eq(self.open)
        m.d.comb += self.s.tready.eq(~skid_full & open_r)
        taken = Signal()                    # a bus beat is accepted this cycle
        m.d.comb += taken.eq(self.s.tvalid & self.s.tready)
        in_valid = Signal()
        in_data = Signal(E * W)
        in_last = Signal()
        m.d.comb += [in_valid.eq(skid_full | taken),
                     in_data.eq(Mux(skid_full, skid, self.s.tdata)),
                     in_last.eq(Mux(skid_full, skid_last, self.s.tlast))]

        li_count = last_index(Cat(self.count, Const(0, 2)).as_signed(), in_last, "li_count")
        li_minus = last_index(rem_minus, in_last, "li_minus")
        li_rem = last_index(rem, in_last, "li_rem")
        last_idx = Signal(range(max(E, 2)))     # of the held beat (loaded with it)

        lanes = Array(beat.word_select(j, W)[:A].as_signed() for j in range(E))
        # idx == last_idx, registered with every change of either (the element's `last`
        # and the handshake's decisions then start from flops, not from a comparator)
        end_of_beat = Signal(init=1)
        m.d.comb += [
            self.out.valid.eq(full),
            self.out.p.data.eq(lanes[idx]),
            self.out.p.last.eq(beat_last & end_of_beat),
        ]
        leaving = Signal()   # the held beat's last element is taken this cycle
        m.d.comb += leaving.eq(full & self.out.ready & end_of_beat)
        load = Signal()      # the element register takes the offered beat
        m.d.comb += load.eq(in_valid & (~full | leaving))

        with m.If(leaving & beat_last):
            m.d.sync += [vec_start.eq(1), rem.eq(self.count)]
        with m.Elif(leaving):
            m.d.sync += [vec_start.eq(0), rem.eq(rem_minus)]
        with m.Elif(vec_start):
            m.d.sync += rem.eq(self.count)
        # the incoming beat's last index, for the rem it will have when held
        li_in = Signal.like(last_idx)
        with m.If(leaving):
            m.d.comb += li_in.eq(Mux(beat_last, li_count, li_minus))
        with m.Else():
            m.d.comb += li_in.eq(Mux(vec_start, li_count, li_rem))

        with m.If(full & self.out.ready & ~end_of_beat):
            m.d.sync += [idx.eq(idx + 1), end_of_beat.eq(idx + 1 == last_idx)]
        with m.If(leaving):
            m.d.sync += full.eq(0)
        with m.If(load):
            m.d.sync += [
                beat.eq(in_data),
                beat_last.eq(in_last),
                last_idx.eq(li_in),
                full.eq(1),
                idx.eq(0),
                end_of_beat.eq(li_in == 0),
            ]
        # the skid register: filled by a beat the element register cannot take, emptied
        # when it takes it (tready was low meanwhile, so no beat comes in that cycle)
        with m.If(skid_full & load):
            m.d.sync += skid_full.eq(0)
        with m.If(taken & ~load):
            m.d.sync += [skid.eq(self.s.tdata), skid_last.eq(self.s.tlast)]
            if self.fault != "skid_drop":
                m.d.sync += skid_full.eq(1)
        with m.If(self.flush):
            m.d.sync += [full.eq(0), idx.eq(0), vec_start.eq(1), rem.eq(self.count),
                         skid_full.eq(0), end_of_beat.eq(Mux(load, li_in, last_idx) == 0)]
        return m


class ElementsToAXIS(wiring.Component):
    """Element stream (``inp``) -> AXI4-Stream master (``m``).

    Collects ``E`` elements per beat (element 0 in lane 0), each sign-extended to its
    lane; an element marked ``last`` closes the beat early (unused lanes 0) and sets
    ``tlast``. The beat is registered (``tdata``/``tlast`` stable while ``tvalid`` waits
    for ``tready``; ``tvalid`` never depends on ``tready``). A second register collects
    the next beat meanwhile, so one element per cycle flows without bubbles. A vector's
    last element that arrives while ``tready`` is low is taken from ``inp`` only when
    the port takes its beat (its beat is offered meanwhile), so that the source sees its
    vector end when the port does. ``flush`` drops everything held (soft reset).
    ``fault="extra_beat"`` (a test hook) sends one all-zero beat more after each
    vector's last beat and sets ``tlast`` on it instead (``ceil(n/E) + 1`` beats).
    """

    def __init__(self, config=None, *, stream_elems=None, act_bits=None, fault=None):
        from ttforge.hw.faults import check_fault
        self.fault = check_fault(fault, ("axis_unstable", "extra_beat"), "ElementsToAXIS")
        self.elems, self.act_bits, _ = _params(config, stream_elems=stream_elems,
                                               act_bits=act_bits, count_bits=1)
        self.lane = lane_bits(self.act_bits)
        super().__init__({
            "inp": In(stream.Signature(element_layout(self.act_bits))),
            "m": Out(AXISSignature(self.elems * self.lane)),
            "flush": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        E, W = self.elems, self.lane

        coll = Signal(E * W)                 # beat being collected
        idx = Signal(range(max(E, 2)))
        out_valid = Signal()
        out_data = Signal(E * W)
        out_last = Signal()
        m.d.comb += [
            self.m.tvalid.eq(out_valid),
            self.m.tdata.eq(out_data),
            self.m.tlast.eq(out_last),
        ]
        closes = Signal()                    # the incoming element completes a beat
        m.d.comb += closes.eq(self.inp.p.last | (idx == E - 1))
        out_free = Signal()
        m.d.comb += out_free.eq(~out_valid | self.m.tready)
        # A vector's last element, taken into an empty output register while tready is
        # low, would end the vector for its source (BUSY 0, DONE, VECTORS, irq) with its
        # last beat not taken at the port, and end the source's OUT_STALL and CYCLES too.
        # So that beat is loaded (tvalid rises without waiting for tready, as AXI4-Stream
        # requires) but the element is taken from the source only when the port takes
        # the beat (`owed`): the source waits, and counts that wait as it counts any
        # stall at the port. With tready high the element is taken as it is loaded, as
        # before: the cycle model is unchanged. (A slave that raises tready in that
        # cycle and drops it in the next one still sees the beat wait after the source
        # ended: the register's cycle.)
        owed = Signal()
        defer = Signal()                     # a last element the port cannot take now
        m.d.comb += defer.eq(self.inp.p.last & ~self.m.tready)
        # (test hook extra_beat: a zero beat with tlast is owed after a vector's last beat;
        # nothing else enters the output register until it has gone in)
        tail = Signal()
        free = out_free & ~tail if self.fault == "extra_beat" else out_free
        load = Signal()                      # a finished beat enters the output register
        m.d.comb += load.eq(self.inp.valid & closes & free & ~owed)
        m.d.comb += self.inp.ready.eq(Mux(owed, self.m.tready, ~closes | (free & ~defer)))
        with m.If(load & defer):
            m.d.sync += owed.eq(1)
        # taken at the port; or withdrawn by the source (its abort, the beat goes out)
        with m.If(owed & (self.m.tready | ~self.inp.valid)):
            m.d.sync += owed.eq(0)

        # (test hook axis_unstable: tvalid falls after one cycle, taken or not)
        with m.If(out_valid if self.fault == "axis_unstable" else out_valid & self.m.tready):
            m.d.sync += out_valid.eq(0)

        elem = Signal(W)
        m.d.comb += elem.eq(self.inp.p.data.as_signed())   # sign-extends to the lane
        # the finished beat: collected lanes below idx, the new element at idx, zeros above
        lanes_now = []
        for j in range(E):
            lane = Signal(W, name=f"lane{j}")
            with m.If(idx == j):
                m.d.comb += lane.eq(elem)
            with m.Elif(idx > j):
                m.d.comb += lane.eq(coll.word_select(j, W))
            lanes_now.append(lane)
        with m.If(load):
            m.d.sync += [
                out_data.eq(Cat(*lanes_now)),
                out_last.eq(self.inp.p.last),
                out_valid.eq(1),
                idx.eq(0),
                coll.eq(0),
            ]
            if self.fault == "extra_beat":
                m.d.sync += [out_last.eq(0), tail.eq(self.inp.p.last)]
        with m.Elif(self.inp.valid & self.inp.ready & ~closes):
            m.d.sync += [
                coll.word_select(idx, W).eq(elem),
                idx.eq(idx + 1),
            ]
        if self.fault == "extra_beat":
            with m.If(tail & out_free & ~owed):
                m.d.sync += [out_data.eq(0), out_last.eq(1), out_valid.eq(1), tail.eq(0)]
        with m.If(self.flush):
            m.d.sync += [out_valid.eq(0), idx.eq(0), coll.eq(0), owed.eq(0)]
            if self.fault == "extra_beat":
                m.d.sync += tail.eq(0)
        return m
