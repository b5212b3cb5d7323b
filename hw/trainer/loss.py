"""``LossUnit``: the base-2 softmax gradient of one sample, serially, in hardware.

The unit computes, bit for bit, what :func:`ttforge.ir.train.softmax_grad` computes for
one row of logits (``docs/arithmetic.md``, "Loss and output gradient"):

* pass 1 reads the ``C`` logits and keeps their maximum;
* pass 2 reads them again, forms ``t`` (``max - z`` moved to ``F`` fractional bits,
  capped at ``(P+1) 2^F``), looks ``e = T[t mod 2^F] >> (t >> F)`` up in the exponent
  table and accumulates ``S = sum e``;
* a restoring divider forms ``R = floor(2^(P+G) / S)``, one quotient bit per cycle;
* pass 3 reads the logits a third time (recomputing ``e`` costs less than storing ``C``
  values) and writes ``g = rshift_round(e R, P) - 2^G [c == label]``.

There is no handshake inside a sample: the number of cycles from ``start`` to ``done``
is :func:`loss_cycles`, a fixed function of ``C`` for a given ``prob_bits``, which the
training engine's cycle model uses.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from ttforge.ir.train import TrainConfig, exp2_table

from ttforge.errors import ConfigError

__all__ = ["H_RANGE", "LOSS_FAULTS", "LossUnit", "loss_cycles"]

#: Deliberate faults of this unit (for the tests that must fail; never in a product):
#: name -> what it breaks.
LOSS_FAULTS: dict[str, str] = {
    "table_lsb": "bit 0 of exponent table entry 1 (entry 0 when the table has one entry) is flipped",
    "round_floor": "pass 3 truncates e*R >> P instead of rounding it (FLOOR_PLUS_HALF)",
}

#: The shift ``h = e_z + F`` the ``h`` port takes (``signed(8)``).
H_RANGE = range(-64, 64)

# Latency of the datapath, in cycles after a read is issued, of the stage where ``e`` is
# used (accumulated into S in pass 2, multiplied by R in pass 3): 1 the memory returns z
# (registered as it arrives: it comes through the engine's lane multiplexer), 2 the max
# and u, 3 u shifted (both ways), 4 t (the direction chosen and capped), 5 the table
# address, 6 the table entry registered, 7 e, 8 used. Each stage is one short path (a
# shifter, or an adder and a comparison), for the engine's clock. With ``z_delay`` 2 every
# stage comes one cycle later (``z_delay`` 3: two).
_E_STAGE = 8
# Cycles from the issue of the last read of pass 3 to ``done``: e*R registered at stage
# _E_STAGE, g registered at the next and written (g_valid) at the one after, ``done`` one
# cycle later.
_TAIL = _E_STAGE + 3


def loss_cycles(classes: int, prob_bits: int, z_delay: int = 1) -> int:
    """Cycles from the ``start`` pulse to the ``done`` pulse for ``classes`` = C:
    ``3 C + G + 12`` with ``G = prob_bits`` (plus ``z_delay - 1``: see :class:`LossUnit`).

    With ``start`` at cycle 0: the ``C`` reads of pass 1 at cycles ``1 .. C``, the ``C``
    reads of pass 2, ``G + 1`` cycles while the divider forms R's ``G + 1`` bits, the
    ``C`` reads of pass 3 (the last at ``3 C + G + 1``) and the ``11``-cycle tail of the
    pipeline: the last write is at ``3 C + G + 11``, ``done`` one cycle after it.
    """
    for name, v in (("classes", classes), ("prob_bits", prob_bits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"loss_cycles {name}={v!r} must be an integer >= 1")
    if z_delay not in (1, 2, 3):
        raise ConfigError(f"loss_cycles z_delay={z_delay!r} must be 1, 2 or 3")
    return 3 * classes + (prob_bits + 1) + _TAIL + z_delay - 1


class LossUnit(wiring.Component):
    """The integer base-2 softmax gradient of one sample, bit-exact to
    :func:`ttforge.ir.train.softmax_grad`, one class per cycle.

    Parameters
    ----------
    act_bits : int
        Width of the logits ``z`` (signed).
    prob_bits : int
        ``G``: the gradient is in units of ``2^-G``, ``G + 2`` bits signed.
    table_bits, table_frac_bits : int
        ``P`` and ``F`` of the exponent table ``exp2_table(P, F)`` (``2^F`` entries of
        ``P + 1`` bits, a ROM).
    max_classes : int
        Largest number of classes ``C`` a sample may have.
    fault : str or None
        A deliberate fault of :data:`LOSS_FAULTS` (tests only); ``None`` builds the real unit.
    z_delay : int
        Cycles from a read (``z_en``) to its ``z_data``: 1, or 2 or 3 for a memory whose
        output word is registered once or twice before its lane is chosen (the training
        engine: twice). Every later event (writes, ``done``) moves by ``z_delay - 1`` cycles.

    Ports
    -----
    start : In(1)
        One-cycle pulse that starts a sample. ``classes``, ``label``, ``h`` and ``valid``
        are sampled in this cycle and held by the unit. Ignored while ``busy``.
    classes : In(range(max_classes + 1))
        ``C``, the number of classes (1..max_classes; 0 is taken as 1, more than
        ``max_classes`` as ``max_classes``, so no input can hang the unit).
    label : In(range(max_classes))
        The true class ``y`` (0..C-1).
    h : In(signed(8))
        The shift ``e_z + F`` that moves ``max - z`` to ``F`` fractional bits: a left
        shift if ``h >= 0``, else a FLOOR_PLUS_HALF right shift by ``-h``.
    valid : In(1)
        1 for a real sample; 0 for a padding sample, whose gradient is all zero (the
        unit still writes ``C`` zeros in the same number of cycles).
    z_addr : Out(range(max_classes))
        Class whose logit is read.
    z_addr_next : Out(range(max_classes))
        ``z_addr`` of the next cycle (a read address can be formed a cycle ahead and
        registered). ``z_addr`` is the class counter in every cycle, read or not.
    z_step : Out(1)
        ``z_addr_next`` is ``z_addr + 1``; otherwise it is 0 (a user can step a read
        address by a constant stride instead of forming it from ``z_addr_next``).
        Decided from the class counter and the sample's ``C - 1`` alone, never from
        ``start``: the counter is 0 in every cycle outside the three read passes.
    z_en : Out(1)
        Read enable; ``z_data`` must hold the logit ``z[z_addr]`` exactly ``z_delay``
        cycles later (1: a synchronous, non-transparent memory read port).
    z_data : In(signed(act_bits))
        The logit read ``z_delay`` cycles before.
    g_valid : Out(1)
        A gradient write: ``g_value`` is the gradient of class ``g_class``. Exactly C
        writes per sample, classes 0..C-1 in order, on consecutive cycles.
    g_class : Out(range(max_classes))
        Class of the write.
    g_value : Out(signed(prob_bits + 2))
        ``g = rshift_round(e R, P) - 2^G [g_class == label]`` (0 when ``valid`` was 0).
    busy : Out(1)
        High from the cycle after ``start`` to the cycle of the last write.
    done : Out(1)
        One-cycle pulse in the cycle after the last write (``busy`` is low again, and a
        ``start`` in this cycle is taken).

    Notes
    -----
    ``done`` comes :func:`loss_cycles` ``(C, G) = 3 C + G + 12`` cycles after ``start``.
    Reads: pass 1 at cycles ``1 .. C`` after ``start``, pass 2 at ``C+1 .. 2C``, pass 3
    at ``2C+G+2 .. 3C+G+1``; writes at ``2C+G+12 .. 3C+G+11``.
    """

    def __init__(self, *, act_bits: int, prob_bits: int, table_bits: int, table_frac_bits: int,
                 max_classes: int, fault: str | None = None, z_delay: int = 1):
        # the ranges of TrainConfig (so no parameter can ask for an unbounded table)
        for name, v, lo, hi in (("act_bits", act_bits, 2, 16), ("prob_bits", prob_bits, 2, 24),
                                ("table_bits", table_bits, 2, 24),
                                ("table_frac_bits", table_frac_bits, 0, 10),
                                ("max_classes", max_classes, 1, 1 << 16)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                self._refuse(f"LossUnit {name}={v!r} must be an integer in {lo}..{hi}")
        if z_delay not in (1, 2, 3):
            self._refuse(f"LossUnit z_delay={z_delay!r} must be 1, 2 or 3")
        if fault is not None and fault not in LOSS_FAULTS:
            self._refuse(f"fault={fault!r} is not a LossUnit fault; known: {', '.join(LOSS_FAULTS)}")
        self.act_bits, self.prob_bits = act_bits, prob_bits
        self.table_bits, self.table_frac_bits = table_bits, table_frac_bits
        self.max_classes = max_classes
        self.fault = fault
        self.z_delay = z_delay
        super().__init__({
            "start": In(1),
            "classes": In(range(max_classes + 1)),
            "label": In(range(max_classes)),
            "h": In(signed(8)),
            "valid": In(1),
            "z_addr": Out(range(max_classes)),
            "z_addr_next": Out(range(max_classes)),
            "z_step": Out(1),
            "z_en": Out(1),
            "z_data": In(signed(act_bits)),
            "g_valid": Out(1),
            "g_class": Out(range(max_classes)),
            "g_value": Out(signed(prob_bits + 2)),
            "busy": Out(1),
            "done": Out(1),
        })

    def _refuse(self, message: str):
        # a refused unit is never elaborated: mark it used, or Amaranth warns that it was not
        self._MustUse__used = True
        raise ConfigError(message)

    @classmethod
    def for_config(cls, cfg: TrainConfig, max_classes: int, fault: str | None = None) -> LossUnit:
        """The unit for the widths of a :class:`~ttforge.ir.train.TrainConfig`."""
        return cls(act_bits=cfg.act_bits, prob_bits=cfg.prob_bits, table_bits=cfg.table_bits,
                   table_frac_bits=cfg.table_frac_bits, max_classes=max_classes, fault=fault)

    def cycles(self, classes: int) -> int:
        """:func:`loss_cycles` of this unit."""
        return loss_cycles(classes, self.prob_bits, self.z_delay)

    def table(self) -> list[int]:
        """The exponent table the ROM holds (with this unit's fault, if any)."""
        T = [int(v) for v in exp2_table(self.table_bits, self.table_frac_bits)]
        if self.fault == "table_lsb":
            T[1 if len(T) > 1 else 0] ^= 1
        return T

    def elaborate(self, platform):
        m = Module()
        A, G, P, F = self.act_bits, self.prob_bits, self.table_bits, self.table_frac_bits
        Cmax = self.max_classes
        cap = (P + 1) << F              # t is capped here: e = T[0] >> (P + 1) = 0 beyond it
        t_bits = cap.bit_length()
        s_bits = P + 1 + (Cmax - 1).bit_length()   # S <= C 2^P
        cls_shape = range(Cmax)

        # -- the sample, held from `start` ---------------------------------------------
        n_last = Signal(cls_shape)      # C - 1
        label = Signal(cls_shape)
        real = Signal()                 # `valid` of the sample
        left = Signal()                 # h >= 0
        # A left shift by more than t_bits caps any u >= 1 anyway (u << t_bits > cap),
        # so the amount is clamped to t_bits and the shifter stays narrow.
        lsh = Signal(range(t_bits + 1))
        # A right shift by s rounds as ((u >> (s - 1)) + 1) >> 1; for s - 1 >= A the
        # result is 0 for every u < 2^A, so s - 1 is clamped to A.
        rsh_m1 = Signal(range(A + 1))

        # -- the read sequencer --------------------------------------------------------
        PASS_NONE, PASS_MAX, PASS_SUM, PASS_GRAD = 0, 1, 2, 3
        token = data.StructLayout({"pass_": 2, "cls": cls_shape, "last": 1})
        c = Signal(cls_shape)           # class being read
        c_next = Signal(cls_shape)      # its value in the next cycle (z_addr_next)
        m.d.comb += c_next.eq(c)
        m.d.sync += c.eq(c_next)
        wait = Signal(range(G + 2))
        issue = Signal(token)           # the read issued in this cycle (pass 0: none)
        out_last = Signal()             # the write out in this cycle is the sample's last
        S = Signal(s_bits)
        R = Signal(G + 1)               # R <= 2^G since S >= 2^P
        rem = Signal(s_bits + 1)        # partial remainder < S, doubled before compare
        div_steps = Signal(range(G + 2))
        # step (c_next is c + 1, else 0) is decided from two flip-flops: `reading` (a read
        # pass: MAX, SUM or GRAD) and `c_last` (c == C - 1), each set a cycle ahead beside
        # the state and c, so no comparison of c with C - 1 and no state decode stands
        # before a user's read address (the training engine's routed critical paths at
        # 1d044b9, loss.c -> z_step -> the logit address -> the ACT address copies)
        reading, c_last = Signal(name="reading"), Signal(name="c_last")
        step = Signal()
        m.d.comb += step.eq(reading & ~c_last)
        m.d.comb += [self.z_en.eq(issue.pass_ != PASS_NONE), self.z_addr.eq(c),
                     self.z_addr_next.eq(c_next), self.z_step.eq(step)]

        # c is 0 outside the read passes (each pass ends by setting it to 0, and IDLE,
        # DIVIDE and DRAIN hold it), so `start` need not clear it: the read address a user
        # forms from c_next (or steps with z_step) does not wait for the `start` decision
        # (at 5f73007 the label check -> start -> c_next -> the ACT read address was the
        # routed critical path of seed 2, 48 levels, train_hw.json).
        with m.FSM(name="loss_fsm") as fsm:
            with m.State("IDLE"), m.If(self.start):
                C = Mux(self.classes == 0, 1, Mux(self.classes > Cmax, Cmax, self.classes))
                m.d.sync += [n_last.eq(C - 1), reading.eq(1), c_last.eq(C == 1),
                             label.eq(self.label), real.eq(self.valid),
                             left.eq(self.h >= 0),
                             lsh.eq(Mux(self.h > t_bits, t_bits, self.h)),
                             # for h < 0, ~h = -h - 1
                             rsh_m1.eq(Mux((~self.h).as_unsigned() > A, A, ~self.h)),
                             S.eq(0), rem.eq(1 << (P - 1)), R.eq(0), div_steps.eq(0)]
                m.next = "MAX"
            for name, pass_, nxt in (("MAX", PASS_MAX, "SUM"), ("SUM", PASS_SUM, "DIVIDE"),
                                     ("GRAD", PASS_GRAD, "DRAIN")):
                with m.State(name):
                    m.d.comb += [issue.pass_.eq(pass_), issue.cls.eq(c), issue.last.eq(c_last)]
                    m.d.comb += c_next.eq(c + 1)
                    m.d.sync += c_last.eq(c + 1 == n_last)
                    with m.If(c_last):
                        m.d.comb += c_next.eq(0)
                        m.d.sync += [wait.eq(G), c_last.eq(n_last == 0), reading.eq(name == "MAX")]
                        m.next = nxt
            with m.State("DIVIDE"):
                # G + 1 idle read cycles: the divider starts when the last e of pass 2
                # has entered S (stage _E_STAGE + 1) and takes G + 1 cycles; the first e
                # of pass 3 reaches the multiplier at the same stage _E_STAGE, so R is
                # ready exactly in time whatever the pipeline depth.
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += reading.eq(1)
                    m.next = "GRAD"
            with m.State("DRAIN"), m.If(self.g_valid & out_last):  # the last write is out now
                m.next = "IDLE"

        # -- the datapath pipeline (one token per stage) -------------------------------
        E = _E_STAGE
        # a later z (z_delay 2, 3) delays the tokens that go with it: the stages keep their numbers
        tok = [issue]
        for i in range(self.z_delay - 1):
            t = Signal(token, name=f"tok0_d{i}")
            m.d.sync += t.eq(tok[0])
            tok = [t]
        tok += [Signal(token, name=f"tok{i}") for i in range(1, E + 2)]
        for i in range(1, E + 2):
            m.d.sync += tok[i].eq(tok[i - 1])

        # stage 1: z arrives and is registered
        z = Signal(signed(A))
        m.d.sync += z.eq(self.z_data)
        # stage 2: pass 1 keeps the max, passes 2 and 3 form u = max - z >= 0
        zmax = Signal(signed(A))
        u = Signal(A)                   # max - z <= 2^A - 1
        with m.If((tok[2].pass_ == PASS_MAX) & ((tok[2].cls == 0) | (z > zmax))):
            m.d.sync += zmax.eq(z)
        m.d.sync += u.eq(zmax - z)

        # stage 3: u moved to F fractional bits, both ways (the left shift, and the
        # FLOOR_PLUS_HALF right shift); stage 4: the direction, capped: t
        shifted_left = Signal(A + t_bits)
        m.d.sync += shifted_left.eq(u << lsh)
        rounded_right = Signal(A)
        m.d.sync += rounded_right.eq(((u >> rsh_m1) + 1) >> 1)
        t_raw = Signal(A + t_bits)
        m.d.comb += t_raw.eq(Mux(left, shifted_left, rounded_right))
        t = Signal(range(cap + 1))
        m.d.sync += t.eq(Mux(t_raw > cap, cap, t_raw))

        # stage 5: the table address (a synchronous ROM read); t >> F waits beside it
        m.submodules.table = rom = Memory(shape=unsigned(P + 1), depth=1 << F, init=self.table())
        rd = rom.read_port()
        m.d.comb += rd.addr.eq(t[:F])
        t_int = Signal(range(P + 2))
        m.d.sync += t_int.eq(t >> F)

        # stage 6: the entry registered (the ROM's output and the shifter are two paths);
        # stage 7: e = T[t mod 2^F] >> (t >> F)
        entry, t_int6 = Signal(P + 1, name="entry"), Signal.like(t_int, name="t_int6")
        m.d.sync += [entry.eq(rd.data), t_int6.eq(t_int)]
        e = Signal(P + 1)
        m.d.sync += e.eq(entry >> t_int6)

        # stage E: pass 2 accumulates S (the divider starts after its last e), pass 3
        # multiplies by R
        prod = Signal(P + G + 2)
        with m.If(tok[E].pass_ == PASS_SUM):
            m.d.sync += S.eq(S + e)
            with m.If(tok[E].last):
                m.d.sync += div_steps.eq(G + 1)
        m.d.sync += prod.eq(e * R)

        # The restoring divider: 2^(P+G) / S with the quotient known to be < 2^(G+1),
        # so the top P bits of the dividend are taken at once as the first partial
        # remainder 2^(P-1) (< S, as S >= 2^P) and G + 1 steps bring in the zero bits.
        with m.If(div_steps != 0):
            doubled = rem << 1
            fits = doubled >= S
            m.d.sync += [rem.eq(Mux(fits, doubled - S, doubled)), R.eq((R << 1) | fits),
                         div_steps.eq(div_steps - 1)]

        # stage E + 1: g = rshift_round(e R, P) - 2^G [c == y]; registered outputs. One
        # adder: (x >> P) - 2^G = (x - 2^(P+G)) >> P, so the label's 2^G joins the
        # rounding constant (p = (eR + half) >> P <= 2^G fits G + 1 bits, so g is exact)
        half = 0 if self.fault == "round_floor" else 1 << (P - 1)
        hit = tok[E + 1].cls == label
        g = Signal(signed(G + 2))
        m.d.comb += g.eq((prod + Mux(hit, half - (1 << (P + G)), half)) >> P)
        is_out = tok[E + 1].pass_ == PASS_GRAD
        m.d.sync += [self.g_valid.eq(is_out), self.g_class.eq(tok[E + 1].cls),
                     self.g_value.eq(Mux(real, g, 0)), out_last.eq(is_out & tok[E + 1].last),
                     self.done.eq(self.g_valid & out_last)]

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
