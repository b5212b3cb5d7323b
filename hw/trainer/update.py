"""The update path of the training engine: the small units of phase ``update``.

Each unit is bit-exact to a function of the golden trainer (``docs/arithmetic.md``,
"Update (phase `update`) and the order of words" and "Forward (phase `forward`)"):

========================  ==============================================================
:class:`Xorshift32Gen`    the state's xorshift32 generator (``ttforge.ir.rng.Xorshift32``)
:class:`DeriveCore`       the forward core from a master integer
                          (``ttforge.ir.train.forward_core``), combinational
:class:`BiasAlign`        the bias at the accumulator exponent
                          (``ttforge.ir.train.align_bias``), 4 stages
:class:`UpdateUnit`       ``w' = sat(w - round_s(v))`` of one stored element per cycle
                          (``ttforge.ir.train.round_update`` and the clamp), 5 stages
========================  ==============================================================

Every unit takes ``fault=`` (one of :data:`UPDATE_FAULTS`, ``None`` by default) for the
tests that must fail; ``fault=None`` builds the real hardware. These faults are local to
this module (``ttforge.hw.faults`` lists the engine's).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError

__all__ = ["UPDATE_FAULTS", "BiasAlign", "DeriveCore", "UpdateUnit", "Xorshift32Gen"]

#: fault name -> (unit that carries it, one-line description)
UPDATE_FAULTS: dict[str, tuple[str, str]] = {
    "wrong_shift": ("Xorshift32Gen", "the first xorshift step shifts by 12 instead of 13"),
    "floor": ("DeriveCore", "the forward core is floor(master / 2^x) (no rounding constant)"),
    "int64_cap": ("BiasAlign", "the left shift is capped at 62 - bitlen(limit) (the old int64 cap)"),
    "bias_floor": ("BiasAlign", "the right shift floors (no rounding constant)"),
    "drop_word": ("UpdateUnit", "the first stochastic element's draw is skipped (its word is used twice)"),
    "sign": ("UpdateUnit", "the rounded update is added instead of subtracted"),
    "round_tie": ("UpdateUnit", "round to nearest adds 2^(s-1) - 1 (ties toward minus infinity)"),
    "pre_shift": ("UpdateUnit", "for s > 32 the first floor shift is by s - 33 instead of s - 32"),
}


def _check_fault(fault, where: str):
    if fault is None:
        return None
    if fault not in UPDATE_FAULTS or UPDATE_FAULTS[fault][0] != where:
        names = [n for n, (u, _) in UPDATE_FAULTS.items() if u == where]
        raise ConfigError(f"fault={fault!r} is not a fault of {where}; it takes: {', '.join(names)}")
    return fault


def _int_param(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{name}={v!r} must be an integer in {lo}..{hi}")
    return v


def _clip(x, lim):
    """``min(max(x, -lim), lim)`` for a non-negative ``lim`` (any widths). Each bound is the
    sign of one exact sum (``lim - x``, ``x + lim``): one carry chain, not a negation
    followed by a comparison."""
    over = (lim - x)[-1]
    under = (x + lim)[-1]
    return Mux(over, lim, Mux(under, -lim, x))


def _clamp_pow2(x, k):
    """``min(max(x, -2^k), 2^k)`` of a signed ``x`` as a ``signed(k + 2)`` value, with no
    carry chain: ``x`` is beyond the bounds exactly when its bits ``k..`` below the sign
    are not all copies of the sign (an OR or an AND of them)."""
    n = len(x)
    if n <= k + 1:
        return x.as_signed()
    sign, top = x[-1], x[k:n - 1]
    above = ~sign & top.any()              # x >= 2^k
    below = sign & ~top.all()              # x < -2^k
    return Mux(above, Const(1 << k, signed(k + 2)),
               Mux(below, Const(-(1 << k), signed(k + 2)), x[:k + 1].as_signed()))


def _bitlen(x):
    """``bitlen(x)`` of an unsigned value as a balanced tree (log depth, no priority chain)."""
    n = len(x)
    if n == 1:
        return x
    h = 1 << ((n - 1).bit_length() - 1)          # the largest power of two below n
    hi, lo = x[h:], x[:h]
    return Mux(hi.any(), _bitlen(hi) + h, _bitlen(lo))


def xorshift32_word(x):
    """``xorshift32_step(x)`` as an expression: three XOR levels, no register."""
    x1 = x ^ (x << 13)[:32]
    x2 = x1 ^ (x1 >> 17)
    return x2 ^ (x2 << 5)[:32]


# --------------------------------------------------------------------------------------
class Xorshift32Gen(wiring.Component):
    """The xorshift32 generator of the training state (shifts 13, 17, 5).

    Parameters
    ----------
    init : int
        Reset value of the state (the engine loads the real one before any draw).
    fault : str or None
        ``"wrong_shift"`` for the test that must fail.

    Attributes
    ----------
    load, load_value : In(1), In(32)
        ``load`` sets the state to ``load_value`` (it wins over ``draw``).
    draw : In(1)
        Replace the state by ``xorshift32_step(state)``.
    state : Out(32)
        The current state: the last word drawn (the seed before any draw).
    word : Out(32)
        ``xorshift32_step(state)``, combinational: the word a draw this cycle consumes.

    Notes
    -----
    A state of 0 is a fixed point (the software refuses a 0 seed); the unit just holds it.
    """

    def __init__(self, *, init: int = 0, fault=None):
        self.fault = _check_fault(fault, "Xorshift32Gen")
        self.init = _int_param("init", init, 0, 0xFFFFFFFF)
        super().__init__({
            "load": In(1),
            "load_value": In(32),
            "draw": In(1),
            "state": Out(32, init=self.init),
            "word": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.state
        if self.fault == "wrong_shift":    # test hook: 12 instead of 13
            x1 = x ^ (x << 12)[:32]
            x2 = x1 ^ (x1 >> 17)
            m.d.comb += self.word.eq(x2 ^ (x2 << 5)[:32])
        else:
            m.d.comb += self.word.eq(xorshift32_word(x))
        with m.If(self.load):
            m.d.sync += self.state.eq(self.load_value)
        with m.Elif(self.draw):
            m.d.sync += self.state.eq(self.word)
        return m


# --------------------------------------------------------------------------------------
class DeriveCore(wiring.Component):
    """The forward core of a master integer: ``sat_(w_bits),narrow(rshift_round(master, x))``.

    ``x = master_bits - w_bits``; equal to ``ttforge.ir.train.forward_core`` for every
    input (combinational: an adder and a clamp).

    Parameters
    ----------
    master_bits, w_bits : int
        Widths of the master (2..32) and of the forward core (2..``master_bits``).
    fault : str or None
        ``"floor"`` for the test that must fail.

    Attributes
    ----------
    master : In(signed(master_bits))
    core : Out(signed(w_bits))
    """

    def __init__(self, master_bits: int, w_bits: int, *, fault=None):
        self.fault = _check_fault(fault, "DeriveCore")
        self.master_bits = _int_param("master_bits", master_bits, 2, 32)
        self.w_bits = _int_param("w_bits", w_bits, 2, self.master_bits)
        super().__init__({
            "master": In(signed(self.master_bits)),
            "core": Out(signed(self.w_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        x = self.master_bits - self.w_bits
        hi = (1 << (self.w_bits - 1)) - 1
        r = Signal(signed(self.w_bits + 1))     # |rshift_round| <= 2^(w_bits-1): w_bits + 1 bits
        if x == 0:
            m.d.comb += r.eq(self.master)
        else:
            half = 0 if self.fault == "floor" else 1 << (x - 1)
            m.d.comb += r.eq((self.master + half) >> x)
        m.d.comb += self.core.eq(_clip(r, hi))
        return m


# --------------------------------------------------------------------------------------
class BiasAlign(wiring.Component):
    """The bias at the last step's accumulator exponent, clamped to ``+-limit``.

    Equal to ``ttforge.ir.train.align_bias(b, e_b, e_acc, limit)`` with
    ``shift = e_acc - e_b``, for every input (any ``shift`` in -128..127; the golden is
    defined for -64..63):

    * ``shift < 0``: ``clip(b << -shift, +-limit)``, exactly for any amount (as
      docs/arithmetic.md says; ``limit >> k`` decides the saturation, so the shifter
      needs only ``acc_bits`` bits);
    * ``shift >= 0``: ``clip(rshift_round(b, shift), +-limit)``, computed as
      ``((2b >> shift) + 1) >> 1``.

    Four stages, ``LATENCY = 4`` (first clamp and decode; threshold and right shift;
    the comparisons and the left shift; the select), one input per cycle; every input
    travels with its element, so nothing needs to be held.

    Parameters
    ----------
    bias_bits : int
        Width of the stored bias (2..32).
    acc_bits : int
        Width of the accumulator (8..63); ``limit < 2^(acc_bits - 1)``.
    fault : str or None
        ``"int64_cap"`` or ``"bias_floor"`` for the tests that must fail.

    Attributes
    ----------
    in_valid : In(1)
    bias : In(signed(bias_bits))
    shift : In(signed(8))
        ``e_acc - e_b``.
    limit : In(acc_bits - 1)
        The positive clamp limit (``bias_limit``).
    out_valid : Out(1)
        ``in_valid``, ``LATENCY`` cycles later.
    aligned : Out(signed(acc_bits))
    """

    LATENCY = 4

    def __init__(self, bias_bits: int, acc_bits: int, *, fault=None):
        self.fault = _check_fault(fault, "BiasAlign")
        self.bias_bits = _int_param("bias_bits", bias_bits, 2, 32)
        self.acc_bits = _int_param("acc_bits", acc_bits, 8, 63)
        super().__init__({
            "in_valid": In(1),
            "bias": In(signed(self.bias_bits)),
            "shift": In(signed(8)),
            "limit": In(self.acc_bits - 1),
            "out_valid": Out(1),
            "aligned": Out(signed(self.acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        bb, ab = self.bias_bits, self.acc_bits
        lim0 = Signal(signed(ab))
        m.d.comb += lim0.eq(self.limit)
        # stage 1: the first clamp; the amounts: k = min(-shift, acc_bits) (a shift by
        # acc_bits already moves any non-zero value beyond every limit, so the shifters
        # need no more), r = min(shift, bb + 1) for the right shift of 2b (by bb or more
        # only the sign is left).
        neg = Signal(9)
        m.d.comb += neg.eq(-self.shift)         # 1..128 when shift < 0
        v1, l1, left1 = Signal(name="v1"), Signal(signed(ab), name="l1"), Signal(name="left1")
        c1 = Signal(signed(bb))                 # |clip(b, +-limit)| <= |b|: fits bias_bits
        b1 = Signal(signed(bb))
        k1 = Signal(range(ab + 1))
        r1 = Signal(range(bb + 2))
        cap = Signal(range(ab + 1))             # the largest k: acc_bits
        m.d.comb += cap.eq(ab)
        if ab - 1 > 31 and self.fault == "int64_cap":
            # the golden's old int64 cap (below the spec's value once bitlen(limit) > 31)
            blh = Signal(range(ab))                 # bitlen(limit) - 31 when >= 1
            m.d.comb += blh.eq(_bitlen(self.limit[31:]))
            with m.If(blh != 0):
                m.d.comb += cap.eq(31 - blh)        # 62 - bitlen(limit)
        m.d.sync += [
            v1.eq(self.in_valid), l1.eq(lim0), left1.eq(self.shift < 0), b1.eq(self.bias),
            c1.eq(_clip(self.bias, lim0)),
            # min(-shift, cap): one comparison before the register
            k1.eq(Mux(neg < cap, neg, cap)),
            r1.eq(Mux(self.shift > bb + 1, bb + 1, self.shift[:7])),
        ]
        # stage 2: the threshold T = limit >> k: c << k passes the limit exactly when
        # |c| > T, so the left shift itself needs only acc_bits bits. The right shift:
        # rshift_round(b, s) = ((2b >> s) + 1) >> 1.
        k = k1
        v2, l2, left2 = Signal(name="v2"), Signal(signed(ab), name="l2"), Signal(name="left2")
        c2 = Signal(signed(bb))
        k2 = Signal(range(ab + 1))
        t2 = Signal(ab)
        rv2 = Signal(signed(bb))                # rshift_round(b, s) stays in b's range
        t = Signal(signed(bb + 1))
        m.d.comb += t.eq(Cat(Const(0, 1), b1).as_signed() >> r1)
        right = t >> 1 if self.fault == "bias_floor" else (t + 1) >> 1
        m.d.sync += [v2.eq(v1), l2.eq(l1), left2.eq(left1), c2.eq(c1), k2.eq(k),
                     t2.eq(l1.as_unsigned() >> k), rv2.eq(right)]
        # stage 3: the comparisons (c > T, c < -T; the rounded value against the limit)
        # and the shifted value, each registered; stage 4 only selects. (In one stage the
        # comparison's carry chain met the selects before the output register: the
        # training engine's routed seed-2 path at 54b7efe, t2 -> aligned, 54 levels.)
        v3, left3, up3, dn3 = Signal(name="v3"), Signal(name="left3"), Signal(name="up3"), Signal(name="dn3")
        l3, nl3, sh3 = (Signal(signed(ab), name="l3"), Signal(signed(ab), name="nl3"),
                        Signal(signed(ab), name="sh3"))
        rc3 = Signal(signed(ab))
        m.d.sync += [v3.eq(v2), left3.eq(left2), up3.eq((t2 - c2)[-1]), dn3.eq((c2 + t2)[-1]),
                     l3.eq(l2), nl3.eq(-l2), sh3.eq((c2 << k2)[:ab].as_signed()),
                     rc3.eq(_clip(rv2, l2))]
        # stage 4: the shift or the rounded value, clamped
        lv = Mux(up3, l3, Mux(dn3, nl3, sh3))
        m.d.sync += [self.out_valid.eq(v3), self.aligned.eq(Mux(left3, lv, rc3))]
        return m


# --------------------------------------------------------------------------------------
class UpdateUnit(wiring.Component):
    """The integer SGD update ``w' = sat_b,narrow(w - round_s(v))``, one element per cycle.

    ``round_s`` is ``ttforge.ir.train.round_update``:

    * ``s <= 0``: ``clip(clip(v, +-2^(b+1)) << min(-s, 40), +-2^(b+1))`` (the cap 40 never
      changes the result: any non-zero ``v`` shifted by 40 is beyond ``2^(b+1)``; the
      shifter stops at ``stored_bits_max + 2`` for the same reason);
    * ``1 <= s <= 32``: ``(v + (word & (2^s - 1))) >> s`` (``stochastic``) or
      ``(v + 2^(s-1)) >> s``;
    * ``s > 32``: ``v >> (s - 32)`` first, then the rule for ``s = 32``.

    Exact for every input (``rd_data`` any ``signed(stored_bits_max)`` value). The golden
    computes the ``s <= 0`` shift in ``int64`` and wraps where
    ``b + 1 + min(-s, 40) >= 63`` (a 24-bit bias and ``s <= -38``); there the unit
    saturates as ``docs/arithmetic.md`` says, and differs from the golden.

    The unit reads the old ``w`` itself: ``rd_en``/``rd_addr`` are driven in the cycle an
    element is accepted (``in_valid``) and ``rd_data`` must return it one cycle later (a
    non-transparent ``amaranth.lib.memory`` read port). ``wr_en``/``wr_addr``/``wr_data``
    write ``w'`` ``LATENCY`` cycles after ``in_valid``, with ``changed`` (``w' != w``).

    **Assumption:** an address is never read while a write to it is in flight. The
    elements of one operation have distinct addresses; the engine must not start an
    operation that reads an address of the previous one within ``LATENCY`` cycles of its
    last element (there is no read-after-write forwarding).

    The generator is inside: each accepted element draws exactly one word when
    ``stochastic`` (none otherwise), in acceptance order, so the words equal
    ``Xorshift32(seed).draw(...)`` of the golden in row-major order. The per-operation
    constants ``shift``, ``stochastic`` and ``bits`` are sampled with every element and
    travel with it, so they may change between any two elements (the engine holds them
    for a whole operation anyway).

    Stages (``LATENCY = 6``): 1 the word masked (or the rounding constant) and the shift
    amounts decoded from ``s``; 2 the ``s > 32`` floor shift, the first ``s <= 0`` clamp
    and its saturation threshold, ``w`` from ``rd_data``; 3 the sum ``v + add``, the left
    shift and its saturation flags; 3b the right shift, the left shift's saturated
    choice; 4 the one or the other, clamped, ``w -+ hi``; 5 ``w - d`` and the clamp
    (compared against ``w -+ hi`` in parallel), ``changed``.

    Parameters
    ----------
    acc_bits : int
        Width of the gradient sum ``v`` (2..63).
    stored_bits_max : int
        Width of ``rd_data``/``wr_data``: the widest stored tensor (2..32).
    addr_width : int
        Width of ``addr``, ``rd_addr``, ``wr_addr``.
    fault : str or None
        ``"drop_word"``, ``"sign"``, ``"round_tie"`` or ``"pre_shift"`` for the tests
        that must fail.
    held_shift : bool
        ``True``: ``shift`` is registered, and the shift amounts and masks are decoded from
        that copy into registers, so ``shift`` must hold its value from at least two cycles
        before an element (the training engine holds it for a whole operation). Takes the
        decoders (comparisons of ``s``) off the element's first stage and the descriptor's
        fan-out.
    late_read : bool
        ``True``: ``rd_data`` returns the old value two cycles after ``in_valid``, not one
        (the engine registers the block outputs before its CMEM/BMEM select). Same
        ``LATENCY``: the value skips the stage-2 register it would otherwise wait in.

    Attributes
    ----------
    shift : In(signed(8))
        ``s``.
    stochastic : In(1)
        1: stochastic rounding (one word per element); 0: FLOOR_PLUS_HALF (no word).
    bits : In(6)
        The stored width ``b`` (2..``stored_bits_max``; another value acts as
        ``stored_bits_max``).
    in_valid : In(1)
    v : In(signed(acc_bits))
    addr : In(addr_width)
    rd_en, rd_addr : Out(1), Out(addr_width)
    rd_data : In(signed(stored_bits_max))
    wr_en, wr_addr, wr_data : Out(1), Out(addr_width), Out(signed(stored_bits_max))
    changed : Out(1)
        With ``wr_en``: ``w' != w``.
    rng_load, rng_load_value : In(1), In(32)
        Load the generator's state (wins over a draw in the same cycle).
    rng_state : Out(32)
        The generator's state (the last word drawn).
    drew : Out(1)
        A word is drawn this cycle (for the words-drawn counter).
    """

    LATENCY = 6

    def __init__(self, acc_bits: int, stored_bits_max: int, addr_width: int, *, fault=None,
                 held_shift: bool = False, late_read: bool = False):
        self.fault = _check_fault(fault, "UpdateUnit")
        self.held_shift = bool(held_shift)
        self.late_read = bool(late_read)
        self.acc_bits = _int_param("acc_bits", acc_bits, 2, 63)
        self.stored_bits_max = _int_param("stored_bits_max", stored_bits_max, 2, 32)
        self.addr_width = _int_param("addr_width", addr_width, 1, 32)
        B, aw = self.stored_bits_max, self.addr_width
        super().__init__({
            "shift": In(signed(8)),
            "stochastic": In(1),
            "bits": In(6),
            "in_valid": In(1),
            "v": In(signed(self.acc_bits)),
            "addr": In(aw),
            "rd_en": Out(1),
            "rd_addr": Out(aw),
            "rd_data": In(signed(B)),
            "wr_en": Out(1),
            "wr_addr": Out(aw),
            "wr_data": Out(signed(B)),
            "changed": Out(1),
            "rng_load": In(1),
            "rng_load_value": In(32),
            "rng_state": Out(32),
            "drew": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ab, B, aw = self.acc_bits, self.stored_bits_max, self.addr_width
        m.submodules.gen = gen = Xorshift32Gen()

        def stage(name, shape, value):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        def decode_b(b, tag):
            """``(b, 2^(b+1), 2^(b-1) - 1, -2^(b+1))`` of the stored width ``b`` (default
            ``B``): the negative bound decoded too, not negated (no carry chain)."""
            bd = Signal(6, name=f"bd{tag}")
            lim = Signal(B + 2, name=f"lim{tag}")
            hi = Signal(B - 1, name=f"hi{tag}")
            nlim = Signal(signed(B + 3), name=f"nlim{tag}")
            with m.Switch(b):
                for w in range(2, B + 1):
                    with m.Case(w):
                        m.d.comb += [bd.eq(w), lim.eq(1 << (w + 1)), hi.eq((1 << (w - 1)) - 1),
                                     nlim.eq(-(1 << (w + 1)))]
                with m.Default():
                    m.d.comb += [bd.eq(B), lim.eq(1 << (B + 1)), hi.eq((1 << (B - 1)) - 1),
                                 nlim.eq(-(1 << (B + 1)))]
            return bd, lim, hi, nlim

        # ---- acceptance: the read, the word
        acc = self.in_valid
        draw = Signal()
        m.d.comb += draw.eq(acc & self.stochastic)
        adv = draw
        if self.fault == "drop_word":       # test hook: the first stochastic element reuses its word
            dropped = Signal()
            with m.If(draw):
                m.d.sync += dropped.eq(1)
            adv = draw & dropped
        m.d.comb += [
            gen.load.eq(self.rng_load), gen.load_value.eq(self.rng_load_value), gen.draw.eq(adv),
            self.rng_state.eq(gen.state), self.drew.eq(adv),
            self.rd_en.eq(acc), self.rd_addr.eq(self.addr),
        ]
        # held_shift: a local copy of s, so the decoders are not shared with other users of
        # the descriptor field (Yosys shared them with the loss unit's: the routed seed-2
        # critical path at af76131, desc SHIFT -> mask_h, 13.2 ns)
        s0 = stage("s_h", signed(8), self.shift) if self.held_shift else self.shift
        # add: the word's low s bits (stochastic) or 2^(s-1) (nearest), for s' = min(s, 32)
        # (only the s >= 1 path uses it): mask bit i is s > i, the half bit is s' - 1 == i
        mask = Cat(*[s0 > i for i in range(32)])
        if self.fault == "round_tie":      # test hook: 2^(s-1) - 1
            half = Cat(*[s0 > i + 1 for i in range(31)], Const(0, 1))
        else:
            half = Cat(*[s0 == i + 1 for i in range(31)], s0 >= 32)
        # The shift amounts are decoded here, once, and travel with the element (no
        # arithmetic on s in the later stages, which hold the long paths):
        # pre = min(s - 32, acc_bits) for s > 32 (the floor shift; by acc_bits or more only
        # the sign is left), k = min(-s, B + 2) for s <= 0 (the left shift; beyond B + 2 any
        # non-zero value is past 2^(b+1) already), r = min(max(s, 1), 32) - 1 (the right
        # shift after a fixed >> 1)
        first = 33 if self.fault == "pre_shift" else 32
        # (each bound compared with s itself, beside the subtraction or negation, not after
        # it: one carry chain deep, the routed path at 81efef5 was -s then its comparison)
        pre0 = Signal(range(ab + 1))
        m.d.comb += pre0.eq(Mux(s0 > first, Mux(s0 >= first + ab, ab, (s0 - first)[:7]), 0))
        neg0 = Signal(9)
        m.d.comb += neg0.eq(-s0)
        k0 = Signal(range(B + 3))
        m.d.comb += k0.eq(Mux(s0 > 0, 0, Mux(s0 < -(B + 2), B + 2, neg0)))
        r0 = Signal(5)
        m.d.comb += r0.eq(Mux(s0 > 32, 31, Mux(s0 < 1, 0, s0 - 1)))
        left0 = s0 <= 0
        if self.held_shift:          # decoded a cycle ahead from the held shift
            mask, half, pre0, k0, r0, left0 = (stage(f"{n}_h", x.shape(), x) for n, x in (
                ("mask", mask), ("half", half), ("pre0", pre0), ("k0", k0), ("r0", r0),
                ("left0", left0)))
        # stage 1
        v1 = stage("v1", signed(ab), self.v)
        add1 = stage("add1", 32, Mux(self.stochastic, gen.word & mask, half))
        left1 = stage("left1", 1, left0)
        pre1 = stage("pre1", range(ab + 1), pre0)
        k1 = stage("k1", range(B + 3), k0)
        r1 = stage("r1", 5, r0)
        # the stored width decoded a stage before each use (no decoder before a carry chain)
        bd0, lim0, _, _ = decode_b(self.bits, 0)
        b1 = stage("b1", 6, self.bits)
        bd1 = stage("bd1", 6, bd0)
        lim1 = stage("lim1", B + 2, lim0)
        val1 = stage("val1", 1, acc)
        a1 = stage("a1", aw, self.addr)

        # ---- stage 2: s > 32 floor shift; first clamp of s <= 0 and the threshold of the
        # second: clip(v, +-L) << k passes +-L = 2^(b+1) exactly when |clip(v)| > T = L >> k
        e1 = Signal(signed(8))
        m.d.comb += e1.eq(bd1 + 1 - k1)
        vs2 = stage("vs2", signed(ab), v1 >> pre1)
        vc2 = stage("vc2", signed(B + 3), _clip(v1, lim1))     # |.| <= 2^(B+1)
        t2 = stage("t2", B + 2, Cat(*[e1 == i for i in range(B + 2)]))
        add2 = stage("add2", 32, add1)
        # w is not used before stage 4: a read answered a cycle later enters at w3
        w2 = self.rd_data if self.late_read else stage("w2", signed(B), self.rd_data)
        left2 = stage("left2", 1, left1)
        k2 = stage("k2", range(B + 3), k1)
        r2 = stage("r2", 5, r1)
        b2 = stage("b2", 6, b1)
        val2 = stage("val2", 1, val1)
        a2 = stage("a2", aw, a1)

        # ---- stage 3: v + add; the left shift (kept on B + 3 bits: it matters only when
        # it does not saturate) and its saturation flags
        sw = max(ab, 33) + 1
        sum3 = stage("sum3", signed(sw), vs2 + add2)
        left3 = stage("left3", signed(B + 3), (vc2 << k2)[:B + 3].as_signed())
        up3 = stage("up3", 1, vc2 > t2)
        dn3 = stage("dn3", 1, vc2 < -t2)
        w3 = stage("w3", signed(B), w2)
        l3 = stage("l3", 1, left2)
        r3 = stage("r3", 5, r2)
        _, lim2, hi2, nlim2 = decode_b(b2, 2)
        lim3 = stage("lim3", B + 2, lim2)
        # (-lim decoded, not negated in stage 4: lim3's negation, a carry chain before the
        # clamp into d4, was seed 1's routed critical path at ec4a6a4, 88.5 MHz)
        nlim3 = stage("nlim3", signed(B + 3), nlim2)
        hi3 = stage("hi3", B - 1, hi2)
        val3 = stage("val3", 1, val2)
        a3 = stage("a3", aw, a2)

        # ---- stage 3b: the right shift of the sum, and the left shift's choice, registered
        # (with the clamp after it in one stage, sum3 -> the 5-level shifter -> the clamp's
        # OR -> d4 was 9 LUT levels, the routed seed-1 path at 6bf3afb, 97.01 MHz)
        DW = max(sw - 1, B + 3)
        rs3b = stage("rs3b", signed(DW), (sum3 >> 1) >> r3)
        dl3b = stage("dl3b", signed(B + 3), Mux(up3, lim3, Mux(dn3, nlim3, left3)))
        l3b = stage("l3b", 1, l3)
        w3b = stage("w3b", signed(B), w3)
        hi3b = stage("hi3b", B - 1, hi3)
        val3b = stage("val3b", 1, val3)
        a3b = stage("a3b", aw, a3)

        # ---- stage 4: d; w -+ hi for the clamp of stage 5
        # d is clamped to +-2^(b_max + 1) as it is registered (the bits above that, an OR
        # and an AND, no carry): w -+ hi lies within +-2^b_max, so a clamped d compares with
        # them (stage 5) as the full one does, d == 0 as it does, and w - d is used only
        # where d is within both. Stage 5's comparisons are then B + 3 bits wide, not the
        # sum's 48 (a 48-bit carry chain into the clamp's select was seed 3's routed
        # critical path at cf0e5ab, train_hw.json: d4 -> wr_data, 54 levels).
        d_full = Signal(signed(DW), name="d_full")
        m.d.comb += d_full.eq(Mux(l3b, dl3b, rs3b))
        d4 = stage("d4", signed(B + 3), _clamp_pow2(d_full, B + 1))
        w4 = stage("w4", signed(B), w3b)
        hi4 = stage("hi4", signed(B + 1), w3b + hi3b)            # diff < -hi  <=>  d > w + hi
        lo4 = stage("lo4", signed(B + 1), w3b - hi3b)            # diff > hi   <=>  d < w - hi
        h4 = stage("h4", B - 1, hi3b)
        # for changed (w' != w), decided beside the clamp instead of after it: w' = hi
        # equals w iff w = hi, w' = -hi iff w = -hi, w' = w - d iff d = 0
        wh4 = stage("wh4", 1, (w3b - hi3b) == 0)
        wl4 = stage("wl4", 1, (w3b + hi3b) == 0)
        val4 = stage("val4", 1, val3b)
        a4 = stage("a4", aw, a3b)

        # ---- stage 5: w - d (+ d for the "sign" fault) and the narrow clamp
        if self.fault == "sign":           # test hook: w + d
            diff = w4 + d4
            over, under = diff > h4, diff < -Cat(h4, Const(0, 1)).as_signed()
        else:
            diff = w4 - d4
            over, under = d4 < lo4, d4 > hi4
        h4s = Cat(h4, Const(0, 1)).as_signed()
        new = Signal(signed(B))
        m.d.comb += new.eq(Mux(over, h4s, Mux(under, -h4s, diff)))
        m.d.sync += [
            self.wr_en.eq(val4), self.wr_addr.eq(a4), self.wr_data.eq(new),
            self.changed.eq(val4 & ~Mux(over, wh4, Mux(under, wl4, d4 == 0))),
        ]
        return m
