"""``RequantBank``: the requantization units and the write address beside them."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, ResetInserter, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.blocks import Requant, fanout_copies, group_of
from ttforge.hw.engine.fetch import requant_consts_layout
from ttforge.hw.engine.geometry import Geometry

__all__ = ["RequantBank"]


class RequantBank(wiring.Component):
    """``N`` :class:`~ttforge.hw.blocks.Requant` units (1 with ``serial_requant``, else
    ``L``) with the step constants ``rq`` (one copy per lane group, ``Geometry.rq_groups``;
    unit ``l`` reads its group's), and the buffer element address
    (``addr``, ``addr_valid``) delayed alongside them. After ``Requant.LATENCY`` cycles:
    ``y_valid``, ``y_addr``, the lanes written ``y_mask`` (word writes), the results
    ``y`` and ``sat_count`` (valid lanes changed by saturation). ``busy`` while a result
    is in the pipeline; ``flush`` empties it (``flush_g``: its copies per lane group, the
    units' resets); ``y_valid_g``: copies of ``y_valid``, one per lane group, for the
    buffer write's per-lane selects."""

    def __init__(self, geom: Geometry, *, fault: str | None = None):
        self.geom = g = geom
        c = g.config
        self.fault = fault
        self.units = N = g.units
        super().__init__({
            "flush": In(1),
            "flush_g": In(g.rq_groups),
            "rq": In(data.ArrayLayout(requant_consts_layout(g), g.rq_groups)),
            "valid": In(N),
            "acc": In(data.ArrayLayout(signed(c.acc_bits), N)),
            "bias": In(data.ArrayLayout(signed(c.bias_bits), N)),
            "bias_en": In(N),
            "zero": In(N),
            "addr_valid": In(1),
            "addr": In(g.eb),
            "y_valid": Out(1),
            "y_valid_g": Out(g.rq_groups),
            "y_addr": Out(g.eb),
            "y_mask": Out(N),
            "y": Out(data.ArrayLayout(signed(c.inter_bits), N)),
            "sat_count": Out(range(N + 1)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        rq_fault = self.fault if self.fault in ("round_off_by_one", "sat_bound") else None
        # (data flops without reset: the flush and reset nets drive only the valid bits;
        # each unit reads its own registered copy of the step constants, hold_consts:
        # the fetch sets them when the descriptor arrives, cycles before a result). With
        # read_registers = 2 (the build for the highest clock) the saturation check waits
        # for the rounding's register, late_sat: the ULX3S board top's routed seed 1 at
        # 2a13b22 ran u -> the rounding carry -> the check -> sat4 at 10.4 ns
        units = [Requant(acc_bits=c.acc_bits, bias_bits=c.bias_bits, inter_bits=c.inter_bits,
                         fault=rq_fault, reset_less_data=True, hold_consts=True,
                         late_sat=c.read_registers > 1)
                 for _ in range(self.units)]
        G = g.rq_groups
        for l, unit in enumerate(units):
            k = group_of(l, self.units, G)
            rq = self.rq[k]
            m.submodules[f"rq{l}"] = ResetInserter({"sync": self.flush_g[k]})(unit)
            m.d.comb += [unit.shamt.eq(rq.shamt), unit.round.eq(rq.round),
                         unit.relu.eq(rq.relu), unit.hi.eq(rq.hi), unit.lo.eq(rq.lo),
                         unit.in_valid.eq(self.valid[l]), unit.acc.eq(self.acc[l]),
                         unit.bias.eq(self.bias[l]), unit.bias_en.eq(self.bias_en[l]),
                         unit.zero.eq(self.zero[l]),
                         self.y[l].eq(unit.out)]
        # write address alongside the requantization pipeline
        wm_v = [Signal(name=f"wm_v{i}") for i in range(Requant.LATENCY)]
        wm_e = [Signal(g.eb, name=f"wm_e{i}") for i in range(Requant.LATENCY)]
        m.d.sync += [wm_v[0].eq(self.addr_valid), wm_e[0].eq(self.addr)]
        for i in range(1, Requant.LATENCY):
            m.d.sync += [wm_v[i].eq(wm_v[i - 1]), wm_e[i].eq(wm_e[i - 1])]
        # the last stage's valid, one copy per lane group (the same value)
        # (one group: wm_v's last register itself)
        y_vg = fanout_copies(1, G, "y_valid") if G > 1 else []
        m.d.sync += [v.eq(wm_v[-2]) for v in y_vg]
        with m.If(self.flush):
            m.d.sync += [v.eq(0) for v in wm_v + y_vg]
        y_vg = y_vg or [wm_v[-1]]
        m.d.comb += [self.y_valid_g[k].eq(v) for k, v in enumerate(y_vg)]
        m.d.comb += [
            self.y_valid.eq(wm_v[-1]), self.y_addr.eq(wm_e[-1]),
            self.y_mask.eq(Cat(*[u.out_valid for u in units])),    # (word writes only)
            self.sat_count.eq(_popcount([u.sat for u in units])),
            self.busy.eq(Cat(*wm_v).any()),
        ]
        return m


def _popcount(bits):
    """The number of set ``bits``, as a balanced adder tree (``sum`` chains ``N`` adders,
    one bit wider each)."""
    terms = list(bits)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]
