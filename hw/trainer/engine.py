"""``TrainEngine``: the training engine of ``docs/hardware.md`` ("Training engine").

One :class:`amaranth.lib.wiring.Component` around the memories it owns (ACT, GRAD word
memories of ``L`` lanes; CMEM, BMEM element memories; DMEM, the label memory, MAXACC):

* the input writer puts ``BATCH`` labelled samples from ``inp`` into ACT (sample ``b``
  in lane ``b mod L``) and the label memory;
* the sequencer fetches each operation descriptor from DMEM and runs it: ``CONTRACT``
  and ``WGRAD`` through one address generator
  (:class:`~ttforge.hw.blocks.AddressGen`) and one row of ``L`` MAC lanes
  (:class:`~ttforge.hw.blocks.MacLanes`); a ``CONTRACT`` result goes through the bias
  alignment, a requantization unit per lane (:class:`~ttforge.hw.blocks.Requant`), the
  ReLU mask and a word write, a ``WGRAD`` result through an adder tree over the lanes
  into the update unit (:class:`~ttforge.hw.trainer.update.UpdateUnit`, with the
  xorshift32 generator), ``LOSS`` runs the loss unit
  (:class:`~ttforge.hw.trainer.loss.LossUnit`) once per batch slot, ``ZFILL`` writes
  zero words;
* every operation waits for its pipeline to drain before the next is fetched, so an
  operation always sees the results of the ones before it.

The host reaches every memory through ``host`` while the engine is idle (``sel`` picks
the memory). The timing is fixed by the descriptors alone: :func:`op_cycles` is exact.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.errors import ConfigError
from ttforge.hw.blocks import (FANOUT_ATTR, AddressGen, MacLanes, Requant, RequantDecode, fanout_copies,
                               group_of, onehot_select, read_port, write_port)
from ttforge.hw.ecp5_bram import dp16kd_depth
from ttforge.hw.engine.banks import RegisteredBanks
from ttforge.hw.faults import TRAIN_ENGINE_FAULTS, check_fault
from ttforge.hw.trainer.loss import LossUnit, loss_cycles
from ttforge.hw.trainer.program import (OP_FIELDS, TRAIN_DESC_WORDS, Op, TrainEngineConfig,
                                        TrainOp)
from ttforge.hw.trainer.update import BiasAlign, DeriveCore, UpdateUnit

__all__ = ["TrainEngine", "HostSel", "TrainError", "op_cycles", "DESC_FIELDS", "FETCH_WORDS"]

#: descriptor words in order (the encoding of :func:`~ttforge.hw.trainer.program.encode_op`)
DESC_FIELDS = ("FLAGS", "N0", "N1", "N2", "N3", "U_BASE", "U_S0", "U_S1", "U_S2", "U_S3", "V_BASE",
               "V_S0", "V_S1", "V_S2", "V_S3", "O_BASE", "O_S0", "O_S1", "O_S2", "B_BASE",
               "BIAS_SHIFT", "BIAS_LIMIT_LO", "BIAS_LIMIT_HI", "M_BASE", "OUT_VALID")
#: words the sequencer reads of each descriptor (the rest are reserved)
FETCH_WORDS = len(DESC_FIELDS)


class HostSel(enum.Enum, shape=3):
    """What ``host.sel`` addresses (element addresses; ``MAXACC``: ``2*op + half``)."""
    DMEM = 0
    CMEM = 1
    BMEM = 2
    MAXACC = 3
    ACT = 4
    GRAD = 5
    LABEL = 6


class TrainError(enum.Enum, shape=4):
    """Error codes of the training engine (``status.error_code``)."""
    NONE = 0
    BAD_DESC = 1       #: a loop bound of 0, SAT_BITS outside 2..store width, classes outside 1..max
    ACT_RANGE = 2      #: an ACT address at or beyond act_depth
    GRAD_RANGE = 3     #: a GRAD address at or beyond grad_depth
    CMEM_RANGE = 4     #: a CMEM address at or beyond core_depth
    BMEM_RANGE = 5     #: a BMEM address at or beyond bias_depth
    DESC_RANGE = 6     #: no LAST before the end of DMEM
    BAD_LABEL = 7      #: a label that is no class (at or beyond the number of classes, or negative)
    BAD_PROGRAM = 8    #: BATCH outside 1..slots, IN_COUNT 0, or the input beyond act_depth


class _State(enum.Enum, shape=4):
    IDLE = 0
    INPUT = 1
    FETCH = 2
    DECODE = 3
    RUN = 4
    DRAIN = 5
    LOSS = 6
    ZFILL = 7
    DONE = 8


def _flags_layout() -> data.StructLayout:
    fields = {}
    pos = 0
    for name, (lsb, width, sgn) in sorted(OP_FIELDS.items(), key=lambda kv: kv[1][0]):
        if lsb > pos:
            fields[f"_pad{pos}"] = lsb - pos
        fields[name.lower()] = signed(width) if sgn else width
        pos = lsb + width
    if pos < 32:
        fields["_pad_top"] = 32 - pos
    return data.StructLayout(fields)


def _desc_layout() -> data.StructLayout:
    return data.StructLayout({n.lower(): (_flags_layout() if n == "FLAGS" else 32) for n in DESC_FIELDS})


# pipeline depths (cycles from an iteration's issue to the write of its result)
_ISSUE_TO_RES = 6            # issue, memory data, block output register, s2, s3, MacLanes (2)
#: stages of the MAXACC maximum after v (|v|, the max levels): within the Requant latency,
#: so the maximum is complete when the drain writes it
MAXACC_STAGES = Requant.LATENCY


def _tree_latency(lanes: int) -> int:
    return max(1, ceil_log2(lanes))


def contract_drain() -> int:
    """Cycles after the last ``CONTRACT`` iteration until its last word is written."""
    return _ISSUE_TO_RES + 1 + BiasAlign.LATENCY + 1 + Requant.LATENCY + 1


def wgrad_drain(lanes: int) -> int:
    """Cycles after the last ``WGRAD`` iteration until its last update is written."""
    return _ISSUE_TO_RES + 1 + _tree_latency(lanes) + UpdateUnit.LATENCY + 1


#: ACT is this many memories (at most; one per lane when there are fewer lanes), each
#: holding ``L / ACT_GROUPS`` lanes of every word and addressed by its own read- and
#: write-address registers: one register drove the address pins of all of ACT's blocks
#: (116 DP16KD at L = 16), and that fan-out's routing was the critical path of two of
#: three seeds at cf0e5ab (train_hw.json: gen.u_addr / v_addr -> the ACT blocks' ADB)
ACT_GROUPS = 4
#: cycles from a ``host`` read (``re``) to ``host_rvalid``: the ACT and GRAD read addresses
#: are registers (loaded from ``host.addr`` in the cycle of ``re``), their block outputs
#: are registered twice (act_o, act_q), the lane of ACT's and GRAD's word and the small
#: memories' word are picked into registers, then one of those three into ``host_rdata``
HOST_READ_LATENCY = 6


def act_groups(lanes: int) -> int:
    """How many memories ACT is split into at ``lanes`` lanes (:data:`ACT_GROUPS`)."""
    return min(lanes, ACT_GROUPS)


#: the loss unit's read latency: the ACT word is registered twice (act_o, act_q) before
#: the logit's lane is chosen (a block output through a 16-way multiplexer does not fit
#: the clock, nor does a block output routed across the die)
LOSS_Z_DELAY = 3
_FETCH_CYCLES = FETCH_WORDS + 2     # one word per cycle, the read latency, the decode


def inc_eq(x, y):
    """``x + 1 == y`` (unsigned, no wrap) without the increment's carry chain.

    The carry into bit ``i`` of ``x + 1`` must be ``x_i ^ y_i`` for the sum to equal ``y``,
    and the carry out of bit ``i`` is then known from bit ``i`` alone: bit 0 needs
    ``y_0 = ~x_0`` (its carry out ``x_0``), bit ``i > 0`` needs ``x_i ^ y_i`` equal to the
    carry from below, ``x_{i-1} & ~y_{i-1}`` (``x_0`` from bit 0). Each bit's check reads
    four bits: one LUT level per bit and an AND of them, where ``x + 1 == y`` was an
    adder's carry chain and then the comparison.
    """
    n = max(len(x), len(y)) + 1
    x, y = x.as_unsigned(), y.as_unsigned()
    xs = [x[i] if i < len(x) else Const(0, 1) for i in range(n)]
    ys = [y[i] if i < len(y) else Const(0, 1) for i in range(n)]
    ok = [ys[0] == ~xs[0]]
    carry = xs[0]
    for i in range(1, n):
        ok.append((xs[i] ^ ys[i]) == carry)
        carry = xs[i] & ~ys[i]
    return Cat(*ok).all()


def op_cycles(op: TrainOp, config: TrainEngineConfig, slots: int) -> int:
    """Cycles of one operation, fetch included (exact: the engine never stalls)."""
    n = op.N[0] * op.N[1] * op.N[2] * op.N[3]
    if op.OP == Op.CONTRACT:
        return _FETCH_CYCLES + n + contract_drain() + 1
    if op.OP == Op.WGRAD:
        return _FETCH_CYCLES + n + wgrad_drain(config.lanes) + 1
    if op.OP == Op.LOSS:
        return _FETCH_CYCLES + slots * (2 + loss_cycles(op.N[0], config.train.prob_bits, LOSS_Z_DELAY)) + 1
    return _FETCH_CYCLES + op.N[0] + 1


class TrainEngine(wiring.Component):
    """The training engine (module docstring; ``docs/hardware.md``, "Training engine").

    Ports
    -----
    inp : stream In, payload ``signed(act_bits)``
        ``BATCH`` samples, each ``IN_COUNT`` features then its label.
    host : ``sel`` (:class:`HostSel`), ``addr``, ``wdata`` (32), ``we``, ``re`` in;
        ``rdata`` (32), ``rvalid`` out (:data:`HOST_READ_LATENCY` cycles after ``re``). Only while idle.
    program : ``batch``, ``bw_log``, ``in_count``, ``in_base``, ``stoch`` in; ``rng_load``
        and ``rng_value`` load the generator.
    control : ``enable`` (level: take a batch and run a step), ``clear_error``, ``soft_reset``.
    status : ``busy``, ``done_pulse``, ``error``, ``error_code``, ``error_op``, ``op``,
        ``rng`` (the generator state), ``steps``, ``cycles``, ``mac_cycles`` (valid
        lanes of every issued iteration), ``changed`` (updates that changed a value).

    ``fault`` names a deliberate fault of :data:`ttforge.hw.faults.TRAIN_FAULTS` (tests
    only); ``None`` builds the real engine.
    """

    #: deliberate faults for the tests that must fail (never set in generated hardware)
    FAULTS = TRAIN_ENGINE_FAULTS

    def __init__(self, config: TrainEngineConfig, *, fault: str | None = None):
        if not isinstance(config, TrainEngineConfig):
            raise ConfigError(f"TrainEngine needs a TrainEngineConfig, got {type(config).__name__}")
        self.fault = check_fault(fault, self.FAULTS, "TrainEngine")
        # a config may lay programs out or run the interpreter at any size; hardware is bounded
        config.check_memory_bits()
        self.config = c = config
        tc = c.train
        self.L = c.lanes
        self.lg = ceil_log2(c.lanes)
        self.aw = max(ceil_log2(max(c.act_depth, c.grad_depth, c.core_depth, c.bias_depth,
                                    c.desc_depth * TRAIN_DESC_WORDS) + 1), 1)
        self.sb = max(c.act_store_bits, c.grad_store_bits)     # requantization width
        self.bwl = max(1, ceil_log2(ceil_log2(c.max_batch) + 1))  # width of BW_LOG
        super().__init__({
            "inp": In(stream.Signature(signed(tc.act_bits))),
            "host": In(data.StructLayout({"sel": HostSel, "addr": 32, "wdata": 32, "we": 1, "re": 1})),
            "host_rdata": Out(32),
            "host_rvalid": Out(1),
            "program": In(data.StructLayout({"batch": 16, "bw_log": self.bwl, "in_count": 16,
                                             "in_base": 32,
                                             "stoch": 1, "rng_load": 1, "rng_value": 32})),
            "control": In(data.StructLayout({"enable": 1, "clear_error": 1, "soft_reset": 1})),
            "status": Out(data.StructLayout({
                "busy": 1, "done_pulse": 1, "error": 1, "error_code": TrainError, "error_op": 16,
                "op": 16, "rng": 32, "steps": 32, "cycles": 48, "mac_cycles": 48, "changed": 32})),
        })

    # ------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        c, tc = self.config, self.config.train
        L, lg, aw, SB = self.L, self.lg, self.aw, self.sb
        AB = c.acc_bits
        AS, GS = c.act_store_bits, c.grad_store_bits
        host, prog, ctl, st = self.host, self.program, self.control, self.status
        fault = self.fault

        # ------------------------------------------------------------ memories
        # no_rw_check: no word read in a cycle that writes its address is used (an
        # operation reads and writes disjoint regions: compile_training refuses one that
        # does not, read_write_overlap; the update writes an element LATENCY cycles after
        # reading it, the elements distinct; the drain separates operations; the host
        # reads or writes, never both). Without it Yosys emulates Amaranth's read-old-data
        # ports on the DP16KD (a write delayed a cycle, and at every block a comparison of
        # the read address with it and a bypass of the read word): the routed critical path
        # at af76131 (train_hw.json). ttforge.hw.emit keeps the attribute in the Verilog
        # (KEPT_ATTRIBUTES), so synthesis from the emitted text sees it.
        rw = {"no_rw_check": 1}
        G = act_groups(L)
        acts = [Memory(shape=data.ArrayLayout(signed(AS), L // G), depth=c.act_depth, init=[], attrs=rw)
                for _ in range(G)]
        grad = Memory(shape=data.ArrayLayout(signed(GS), L), depth=c.grad_depth, init=[], attrs=rw)
        # CMEM in banks of one block RAM each, each bank's word registered by itself (the
        # DP16KD's own output register where the netlist is folded), the bank chosen a
        # cycle later: its word arrives two cycles after the address, when the register
        # after one memory had it (q_cm), but no register sits behind a multiplexer of 16
        # block RAMs spread over the die (6bf3afb's routed seed 2, a CMEM DP16KD -> the
        # depth multiplexer -> q_cm, 5.83 + 4.42 ns)
        # (one write enable for the word: per-bit enables would split each bank into 1-bit
        # wide blocks, 8 DP16KD a bank: 3de5848 took 292 of the 85F's 208)
        cmem = RegisteredBanks(signed(tc.master_bits), c.core_depth, dp16kd_depth(tc.master_bits),
                               granularity=None)
        bmem = Memory(shape=signed(tc.bias_bits), depth=c.bias_depth, init=[], attrs=rw)
        dmem = Memory(shape=32, depth=c.desc_depth * TRAIN_DESC_WORDS, init=[], attrs=rw)
        lmem = Memory(shape=16, depth=c.max_batch, init=[], attrs=rw)
        maxm = Memory(shape=AB, depth=c.desc_depth, init=[], attrs=rw)
        for g, a in enumerate(acts):
            m.submodules[f"act{g}" if G > 1 else "act"] = a
        m.submodules.grad = grad
        m.submodules.cmem, m.submodules.bmem, m.submodules.dmem = cmem, bmem, dmem
        m.submodules.lmem, m.submodules.maxm = lmem, maxm
        act_rs = [read_port(a, f"act_r{g}") for g, a in enumerate(acts)]
        act_ws = [write_port(a, f"act_w{g}", granularity=1) for g, a in enumerate(acts)]
        # the ACT word as the G memories give it (lanes in order)
        act_rdata = Signal(data.ArrayLayout(signed(AS), L), name="act_rdata")
        m.d.comb += act_rdata.eq(Cat(*[r.data.as_value() for r in act_rs]))
        grad_r, grad_w = read_port(grad, "grad_r"), write_port(grad, "grad_w", granularity=1)
        cm_r, cm_w = cmem.read, cmem.write          # (cm_r.data: two cycles after the address)
        bm_r, bm_w = read_port(bmem, "bm_r"), write_port(bmem, "bm_w")
        dm_r, dm_w = read_port(dmem, "dm_r"), write_port(dmem, "dm_w")
        lm_r, lm_w = read_port(lmem, "lm_r"), write_port(lmem, "lm_w")
        mx_r, mx_w = read_port(maxm, "mx_r"), write_port(maxm, "mx_w")

        # ------------------------------------------------------------ sequencer state
        # One-hot: a flip-flop per state (IDLE's set at reset), exactly one of them set.
        # A transition clears the flag of the state it leaves and sets the one it enters
        # (go), so each flag's next value and load enable see only the transitions into
        # and out of its own state, each condition ANDed with one flag: with a binary state
        # every transition's condition met a state decoder and all of them met in the load
        # enable of the state register (b1c92e0's routed paths all ended at the state or
        # error registers' CE). The flags also steer the memory ports' multiplexers
        # (st_idle, st_input, st_loss, st_zfill) and every address register (running = RUN)
        # with no decoder before that fan-out.
        st_idle = Signal(init=1, name="st_idle")
        st_input, st_fetch = Signal(name="st_input"), Signal(name="st_fetch")
        st_decode, running = Signal(name="st_decode"), Signal(name="running")
        st_drain, st_loss = Signal(name="st_drain"), Signal(name="st_loss")
        st_zfill, st_done = Signal(name="st_zfill"), Signal(name="st_done")
        flag = {_State.IDLE: st_idle, _State.INPUT: st_input, _State.FETCH: st_fetch,
                _State.DECODE: st_decode, _State.RUN: running, _State.DRAIN: st_drain,
                _State.LOSS: st_loss, _State.ZFILL: st_zfill, _State.DONE: st_done}

        def go(frm, to):
            """Leave state ``frm`` for ``to`` (the same state: stay)."""
            return [flag[frm].eq(0), flag[to].eq(1)]

        desc = Signal(_desc_layout())
        flags = desc.flags
        op_idx = Signal(16)
        fw = Signal(range(FETCH_WORDS + 2))        # fetch word counter
        drain = Signal(range(max(contract_drain(), wgrad_drain(L)) + 2))
        err = Signal(TrainError)
        err_op = Signal(16)
        error = Signal()
        # The program as the step uses it (prog_q): taken from ``program`` in every idle
        # cycle but the one that decides a start (start_step), and held through the step.
        # The program check below judges this copy, and the start decision reads only
        # registers (prog_settled: its comparisons with ``program`` registered), not a
        # comparison of the 68 bits of ``program`` in its own cycle (that comparison into the
        # state flags was the routed critical path of two of three seeds at 9e8840b,
        # train_hw.json: prog -> prog_same -> inp_ready). STOCH and the RNG load are read
        # from ``program`` directly.
        prog_q = Signal.like(prog, name="prog_q")
        start_step = Signal()
        with m.If(st_idle & ~start_step):
            m.d.sync += prog_q.eq(prog)
        slots_m1 = Signal(16)
        bwm1 = Signal(16)
        m.d.comb += [bwm1.eq((Const(1, 16) << prog_q.bw_log) - 1),
                     slots_m1.eq((Const(1, 24) << (prog_q.bw_log + lg)) - 1)]
        # The operation's decodes and its loop bounds less one, registered: the descriptor
        # is held from its fetch (FLAGS is its first word, N0..N3 the next) and read from
        # DECODE on, so the decoders and the bound subtractions are off every cycle of the
        # run (they steered the address generator's restarts and the memory ports' selects).
        is_contract = Signal()
        is_wgrad = Signal()
        is_loss = Signal()
        # ACT reads the logits (LOSS, is_loss) or the mask word (CONTRACT with the ReLU
        # mask, mask_op) at loss_rplus / loss_rbase or mask_prev below, else an
        # address-generator stream (V for WGRAD, U otherwise: u_op)
        n_m1 = [Signal(32, name=f"n{j}_m1") for j in range(4)]
        mask_op, u_op = Signal(name="mask_op"), Signal(name="u_op")
        m.d.sync += [is_contract.eq(flags.op == Op.CONTRACT), is_wgrad.eq(flags.op == Op.WGRAD),
                     is_loss.eq(flags.op == Op.LOSS),
                     mask_op.eq((flags.op == Op.CONTRACT) & flags.mask),
                     u_op.eq((flags.op != Op.LOSS) & (flags.op != Op.WGRAD)
                             & ~((flags.op == Op.CONTRACT) & flags.mask))]
        m.d.sync += [n_m1[j].eq(desc[f"n{j}"] - 1) for j in range(4)]

        # ------------------------------------------------------------ address generator
        m.submodules.gen = gen = AddressGen(bound_width=32, addr_width=aw,
                                            streams=(("u", 4), ("v", 4), ("o", 3)), slab=(), i2_first=True,
                                            next_streams=("u", "v"))
        gen_start = Signal()
        gen_go = Signal(name="gen_go")      # (the start, a flip-flop: set below)
        m.d.comb += [gen.start.eq(gen_start), gen.u_base.eq(desc.u_base), gen.v_base.eq(desc.v_base),
                     gen.o_base.eq(desc.o_base)]
        for j in range(4):
            m.d.comb += [gen.bound_m1[j].eq(n_m1[j]), gen.u_stride[j].eq(desc[f"u_s{j}"])]
            if fault == "wrong_transpose" and j in (1, 3):   # test hook: input gradients swap
                m.d.comb += gen.v_stride[j].eq(Mux(is_contract & flags.src, desc[f"v_s{4 - j}"],
                                                   desc[f"v_s{j}"]))
            else:
                m.d.comb += gen.v_stride[j].eq(desc[f"v_s{j}"])
        for j in range(3):
            m.d.comb += gen.o_stride[j].eq(desc[f"o_s{j}"])
        # running (the RUN flag) enables every address register
        m.d.comb += gen.en.eq(running)
        issue = Signal()
        m.d.comb += issue.eq(running & gen.valid)

        # range checks at issue. Each address is compared with a constant depth (a power of
        # two: an OR of its high bits, no carry chain), and the operation's choice between two
        # depths is made after the comparisons by a register (u_grad, the FLAGS bits: held
        # from the fetch), not before them by a multiplexer of constants: a comparison with a
        # selected limit (a carry chain) stood before the state and error registers' load
        # enables, b1c92e0's routed seed-2 path (is_wgrad -> u_addr >= u_lim -> state CE).
        def beyond(addr, depth):
            if depth & (depth - 1) == 0:
                k = depth.bit_length() - 1
                return addr[k:].any() if k < len(addr) else Const(0, 1)
            return addr >= depth

        u_grad = Signal()
        m.d.sync += u_grad.eq(flags.src | (flags.op == Op.WGRAD))
        u_bad = Mux(u_grad, beyond(gen.u_addr, c.grad_depth), beyond(gen.u_addr, c.act_depth))
        o_bad_c = Mux(flags.dst, beyond(gen.o_addr, c.grad_depth), beyond(gen.o_addr, c.act_depth))
        o_bad_w = Mux(flags.dst, beyond(gen.o_addr, c.bias_depth), beyond(gen.o_addr, c.core_depth))
        range_err = Signal(TrainError)
        with m.If(issue):
            with m.If(u_bad):
                m.d.comb += range_err.eq(Mux(u_grad, TrainError.GRAD_RANGE, TrainError.ACT_RANGE))
            with m.Elif(is_contract & beyond(gen.v_addr, c.core_depth)):
                m.d.comb += range_err.eq(TrainError.CMEM_RANGE)
            with m.Elif(is_wgrad & ~flags.ones & beyond(gen.v_addr, c.act_depth)):
                m.d.comb += range_err.eq(TrainError.ACT_RANGE)
            with m.Elif(is_contract & o_bad_c):
                m.d.comb += range_err.eq(Mux(flags.dst, TrainError.GRAD_RANGE, TrainError.ACT_RANGE))
            with m.Elif(is_wgrad & o_bad_w):
                m.d.comb += range_err.eq(Mux(flags.dst, TrainError.BMEM_RANGE, TrainError.CMEM_RANGE))

        # ------------------------------------------------------------ operands
        # stage 0: memory data; stage 1: the words registered as they leave the blocks
        # (act_o, grad_o; CMEM's bank registers); stage 2: registered again (act_q,
        # q_grad, s2_master); stage 3: selected into the lanes' operands, registered
        s0_v, s0_first, s0_last = Signal(name="s0_v"), Signal(name="s0_first"), Signal(name="s0_last")
        s0_o = Signal(aw + 1)
        m.d.sync += [s0_v.eq(issue),
                     s0_first.eq(gen.first & (gen.i2_first | is_contract)),
                     s0_last.eq(gen.last & (gen.i2_last | is_contract)),
                     s0_o.eq(gen.o_addr)]
        s1_v, s1_first, s1_last = Signal(name="s1_v"), Signal(name="s1_first"), Signal(name="s1_last")
        s1_o = Signal(aw + 1)
        m.d.sync += [s1_v.eq(s0_v), s1_first.eq(s0_first), s1_last.eq(s0_last), s1_o.eq(s0_o)]
        # The forward core is derived from the registered master (after s2, before the
        # MAC lanes' operand register), not from the block RAM's output: the RAM's
        # clock-to-out, an adder and a clamp do not fit one cycle with the operand mux.
        m.submodules.derive = derive = DeriveCore(tc.master_bits, tc.w_bits)
        XB = max(AS, GS)
        CB = max(tc.w_bits, AS) + 1
        s2_v, s2_first, s2_last = Signal(name="s2_v"), Signal(name="s2_first"), Signal(name="s2_last")
        s2_o = Signal(aw + 1)
        # the ACT and GRAD words registered as they leave the blocks (act_q, q_grad: also the
        # mask's, the loss's and the host's); the operand selects follow these registers
        # into the MAC lanes' operand register, not the block outputs (a DP16KD output
        # through its depth multiplexer and a select does not fit the clock)
        # (Measured after 6f1c35f and not kept, log only in docs/benchmarks.md: act_q in two
        # kept copies, the lanes' and the loss's and host's, b5ae4db, 94.05 / 96.70 / 96.53
        # MHz, two seeds at a block RAM -> a copy; the MAC lanes in the ECP5 DSP form,
        # cfe7765, 78.83 / 78.75, act_q alone then spanning the block RAMs to the DSP row;
        # the host's read as one AND-OR under a registered one-hot pick and a copy of
        # `running` for the ACT address's selects, 6f9b7c6, 94.46 / 100.56 / 103.32, seed 1
        # at a MAC lane; the DSP's product register only, MacLanes(dsp_inputs=False),
        # a23ba43, 99.97 / 94.61 / 97.32. None beat 6f1c35f's minimum, 98.95.)
        # Two registers after ACT's and GRAD's blocks: act_o / grad_o, whose only load is
        # act_q / q_grad, sit by the blocks (or are the DP16KD's own output register where
        # the netlist is folded, hw/ecp5_bram.py), and act_q / q_grad sit by their
        # readers, so no path is a block's 5.83 ns clock-to-out plus a route across the
        # die (act_q alone was at 6f1c35f: a block -> act_q with 4.5-4.7 ns of routing
        # ended seeds at a23ba43 and cfe7765). Every ACT and GRAD read takes a cycle
        # more: the operands (stage 1), the mask (its address a cycle earlier), the
        # loss's logits (LOSS_Z_DELAY) and the host's (HOST_READ_LATENCY).
        act_o = Signal.like(act_rdata, name="act_o", reset_less=True)
        grad_o = Signal.like(grad_r.data, name="grad_o", reset_less=True)
        m.d.sync += [act_o.eq(act_rdata), grad_o.eq(grad_r.data)]
        act_q = Signal.like(act_rdata, name="act_q")
        q_grad = Signal.like(grad_r.data, name="q_grad")
        m.d.sync += [act_q.eq(act_o), q_grad.eq(grad_o)]
        s2_master = Signal(signed(tc.master_bits))
        m.d.sync += [s2_v.eq(s1_v), s2_first.eq(s1_first), s2_last.eq(s1_last), s2_o.eq(s1_o),
                     s2_master.eq(cm_r.data)]
        m.d.comb += derive.master.eq(s2_master)
        # (data registers without reset, read only with their valid bits: elaborated for
        # the ECP5, each lane's operand and product registers are a MULT18X18D's own, so
        # nextpnr need not place the multiplier between fabric registers: at fce8aea with
        # the blocks' output registers folded, seed 1 ended at op_x -> the multiplier 25
        # rows away -> pr, 10.14 ns; the operands come from the stage-3 registers, not
        # from the block RAMs across the die, cfe7765's 78.8 MHz path)
        m.submodules.mac = mac = MacLanes(lanes=L, x_bits=XB, c_bits=CB, acc_bits=AB, tag_width=aw + 1,
                                          reset_less_data=True)
        # stage 3: the operands registered once more before the MAC lanes' operand
        # registers (the MULT18X18D's own on the ECP5), the derived core in copies, one a
        # group of four lanes: the master -> DeriveCore's adder and clamp -> the B inputs
        # of 16 DSPs along the DSP row was seeds 1 and 2's routed path at cf54c7d (10.6 and
        # 10.9 ns, 7.8 ns of it routing)
        NC = min(L, 4)
        s3_core = fanout_copies(derive.core.shape(), NC, "s3_core", reset_less=True)
        # (the lanes' words selected from the registered block words as they are registered)
        s3_x = Signal(data.ArrayLayout(signed(XB), L), name="s3_x", reset_less=True)
        s3_c = Signal(data.ArrayLayout(signed(CB), L), name="s3_c", reset_less=True)
        s3_v, s3_first, s3_last = Signal(name="s3_v"), Signal(name="s3_first"), Signal(name="s3_last")
        s3_o = Signal(aw + 1, name="s3_o")
        # (the C operand's select has a name of its own, AS bits a lane, widened as it is
        # registered: left to Yosys, the lanes' sign-extended selects were one temporary
        # whose extension bits it wrote as copies of that temporary's own bits, which
        # Verilator takes for a combinational loop (UNOPTFLAT, from 16 lanes); there is no loop)
        s3_c_in = Signal(data.ArrayLayout(signed(AS), L), name="s3_c_in")
        for l in range(L):
            m.d.comb += s3_c_in[l].eq(Mux(flags.ones, 1, act_q[l]))
            m.d.sync += [s3_x[l].eq(Mux(is_wgrad | flags.src, q_grad[l], act_q[l])),
                         s3_c[l].eq(s3_c_in[l])]
        m.d.sync += [*(k.eq(derive.core) for k in s3_core),
                     s3_v.eq(s2_v), s3_first.eq(s2_first), s3_last.eq(s2_last), s3_o.eq(s2_o)]
        m.d.comb += [mac.en.eq(1), mac.in_valid.eq(s3_v), mac.in_first.eq(s3_first),
                     mac.in_last.eq(s3_last), mac.in_tag.eq(s3_o)]
        for l in range(L):
            m.d.comb += [mac.x[l].eq(s3_x[l]),
                         mac.c[l].eq(Mux(is_contract, s3_core[group_of(l, L, NC)], s3_c[l]))]

        # Per-step constants, registered: they are set before a step starts (the program)
        # or while its descriptor is fetched, and read only from the FETCH state on (at
        # least one cycle later), so the variable shifts and decoders that form them are
        # off every datapath cycle.
        bwl_r = Signal.like(prog_q.bw_log)
        bwm1_r = Signal(16)
        batch_hi = Signal(16)                 # BATCH >> lg: output words whose lanes are all valid
        batch_lo = Signal(L)                  # lane l is valid in word BATCH >> lg iff batch_lo[l]
        slots_m1_r = Signal(16)               # slots - 1 (the last LOSS slot): no shift, no
        m.d.sync += slots_m1_r.eq(slots_m1)   # decrement before the loss's last-slot compare
        m.d.sync += [bwl_r.eq(prog_q.bw_log), bwm1_r.eq(bwm1), batch_hi.eq(prog_q.batch >> lg),
                     batch_lo.eq(Cat(*[prog_q.batch[:lg] > l for l in range(L)]) if lg else 0)]

        # valid lanes of an output word: sample ((rel mod BW) * L + l) < BATCH, i.e. all
        # lanes below word BATCH >> lg, the lanes below BATCH mod L in that word, none above
        # (one comparison of q, not L comparisons of q * L + l)
        def lane_valid(rel):
            q = rel & bwm1_r
            return Mux(q < batch_hi, (1 << L) - 1, Mux(q == batch_hi, batch_lo, 0))

        # ------------------------------------------------------------ CONTRACT results
        # r0: the sums (and the raw bias, read from BMEM when the result was announced)
        def delay(sig, n, name):
            out = sig
            for i in range(n):
                r = Signal.like(sig, name=f"{name}_d{i}")
                m.d.sync += r.eq(out)
                out = r
            return out

        # An iteration's output position relative to O_BASE (rel), formed once at s2 and
        # carried along: the bias address (read two cycles before the result appears, its
        # element registered as it leaves the block: bias_q), the lane mask, the inside
        # flag and the mask word's address are each one short path from registers.
        s2_rel = Signal(aw + 1)
        m.d.sync += s2_rel.eq(s1_o - desc.o_base)
        s3_rel = delay(s2_rel, 1, "s3_rel")
        bias_addr = Signal(aw + 1)          # the result's (MAC lanes: operands + 3) less 2
        m.d.sync += bias_addr.eq(desc.b_base + (s3_rel >> bwl_r))
        s5_rel = delay(s3_rel, 2, "s5_rel")
        r_v = Signal()
        r_o = Signal(aw + 1)
        r_rel = Signal(aw + 1)
        # The sums are registered in every cycle, not only with res_valid: they are read only
        # with the valid bit that travels beside them (r_v, tv), and res_valid (a LUT of
        # the MAC lanes' pr_v and pr_last) was the load enable of these 2 x L x acc_bits
        # flip-flops (1,536 at L = 16), the engine's widest net. No reset: data.
        r_acc = Signal(data.ArrayLayout(signed(AB), L), reset_less=True)
        m.d.sync += [r_v.eq(mac.res_valid & is_contract), r_o.eq(mac.res_tag), r_rel.eq(s5_rel)]
        m.d.sync += r_acc.eq(mac.res)
        # the bias element read at bias_addr, registered, arrives with r_acc
        bias_q = Signal.like(bm_r.data, name="bias_q")
        m.d.sync += bias_q.eq(bm_r.data)
        m.submodules.balign = balign = BiasAlign(tc.bias_bits, AB)
        b_shift = (desc.bias_shift[:8] + 1)[:8] if fault == "bias_shift_off" else desc.bias_shift[:8]  # test hook
        m.d.comb += [balign.in_valid.eq(r_v), balign.bias.eq(bias_q), balign.shift.eq(b_shift),
                     balign.limit.eq(Cat(desc.bias_limit_lo, desc.bias_limit_hi)[:AB - 1])]

        ba_v = delay(r_v, BiasAlign.LATENCY, "ba_v")
        ba_o = delay(r_o, BiasAlign.LATENCY, "ba_o")
        ba_acc = delay(r_acc, BiasAlign.LATENCY, "ba_acc")
        # the inside flag and the lane mask, decided a cycle after rel and carried to v
        q_inside, q_valid = Signal(name="q_inside"), Signal(L, name="q_valid")
        m.d.sync += [q_inside.eq(r_rel < desc.out_valid), q_valid.eq(lane_valid(r_rel))]
        ba_inside = delay(q_inside, BiasAlign.LATENCY - 1, "ba_inside")
        ba_valid = delay(q_valid, BiasAlign.LATENCY - 1, "ba_valid")
        # v: the sum plus the aligned bias (inside the layer's outputs), registered
        v_v = Signal()
        v_o = Signal(aw + 1)
        v_inside = Signal()
        v_valid = Signal(L)
        v = Signal(data.ArrayLayout(signed(AB), L))
        m.d.sync += [v_v.eq(ba_v), v_o.eq(ba_o), v_inside.eq(ba_inside), v_valid.eq(ba_valid)]
        b_add = Signal(signed(AB))
        m.d.comb += b_add.eq(Mux(flags.bias & ba_inside, balign.aligned, 0))
        for l in range(L):
            m.d.sync += v[l].eq(ba_acc[l] + b_add)
        # MAXACC: the largest |v| over the valid lanes of the operation, pipelined: a key
        # registered, then one max level per stage (several when L > 16), then the running
        # maximum. The MAXACC_STAGES stages end before the write of MAXACC at the end of
        # the drain (they take the Requant unit's latency, which the drain covers).
        # The key of v (AB bits, wrapping) is Cat(n, k) with n = v < 0 and k = v XOR n
        # (k = -v - 1 for a negative v): |v| mod 2^AB = k + n, and 2k + n orders the keys
        # as |v| orders them, so no negation (a carry chain) precedes the comparisons;
        # the one addition k + n is made when MAXACC is written.
        KB = AB + 1
        vmax = Signal(KB)
        mags = []
        for l in range(L):
            a = Signal(KB, name=f"key{l}")
            n = v[l][-1]
            m.d.sync += a.eq(Mux(v_valid[l], Cat(n, v[l].as_unsigned() ^ n.replicate(AB)), 0))
            mags.append(a)
        mv = delay(v_v, 1, "mx_v")
        levels = ceil_log2(L)
        per_stage = -(-levels // (MAXACC_STAGES - 1)) if levels else 1
        stage = 0
        while len(mags) > 1 or stage < MAXACC_STAGES - 1:
            for _ in range(per_stage):
                if len(mags) == 1:
                    break
                nxt = []
                for i in range(0, len(mags), 2):
                    if i + 1 == len(mags):
                        nxt.append(mags[i])
                        continue
                    t = Signal(KB, name=f"mx{len(mags)}_{i}")
                    m.d.comb += t.eq(Mux(mags[i] > mags[i + 1], mags[i], mags[i + 1]))
                    nxt.append(t)
                mags = nxt
            regs = []
            for i, x in enumerate(mags):
                r = Signal(KB, name=f"mxs{stage}_{i}")
                m.d.sync += r.eq(x)
                regs.append(r)
            mags = regs
            mv = delay(mv, 1, f"mx_v{stage}")
            stage += 1
        assert stage == MAXACC_STAGES - 1 and len(mags) == 1
        with m.If(mv & (mags[0] > vmax)):
            m.d.sync += vmax.eq(mags[0])
        # requantization, one unit per lane; its per-operation constants registered (the
        # flags are fetched many cycles before the first result)
        # (pipelined: its sums and comparisons registered a cycle ahead of rq_shamt, whose
        # input is then one multiplexer; 3a09814's routed seed 2 ended at rq_shift_h ->
        # rq_shamt through 12 levels, a carry chain among them)
        m.submodules.rqdec = rqd = RequantDecode(acc_bits=AB, bias_bits=AB, inter_bits=SB,
                                                 pipelined=True)
        # decoded from copies of SHIFT and SAT_BITS of their own (a cycle after the fetch
        # stores them): the descriptor's flip-flops, spread over the die, met the decode's
        # carry chain in one cycle (the routed seed-2 path at 49f37c7, desc -> rq_shamt)
        # (stored from the DMEM word with FLAGS itself, below: a copy registered from FLAGS
        # every cycle was merged by Yosys with the update unit's own, s_h, and the one
        # register then fed both decoders, 81efef5's routed seed-1 path)
        # (kept apart, FANOUT_ATTR: the same D and enable as the descriptor's own FLAGS
        # flops, and Yosys merged them into those again: 6ec3d41's routed seeds 1 and 2,
        # desc -> rq_shamt, had no rq_shift_h left in the netlist)
        rq_shift_h = Signal.like(flags.shift, name="rq_shift_h", attrs={FANOUT_ATTR: 1})
        rq_sat_h = Signal.like(flags.sat_bits, name="rq_sat_h", attrs={FANOUT_ATTR: 1})
        m.d.comb += [rqd.shift.eq(rq_shift_h), rqd.sat_bits.eq(rq_sat_h)]
        # (no lo: Requant's masked saturation check implies lo = -hi - 1 and reads its lo
        # port only under its sat_bound fault, which this engine never builds; a register
        # for it would be read by nothing)
        rq_shamt, rq_round = Signal.like(rqd.shamt, name="rq_shamt"), Signal(name="rq_round")
        rq_hi = Signal.like(rqd.hi, name="rq_hi")
        m.d.sync += [rq_shamt.eq(rqd.shamt), rq_round.eq(rqd.round), rq_hi.eq(rqd.hi)]
        ys = []
        for l in range(L):
            # (late_sat: the saturation check after the rounding's register, not after its
            # carry chain: the same values, and stage 4 the rounding alone)
            u = Requant(acc_bits=AB, bias_bits=AB, inter_bits=SB, late_sat=True)
            m.submodules[f"rq{l}"] = u
            m.d.comb += [u.in_valid.eq(v_v), u.acc.eq(v[l]), u.bias.eq(0), u.bias_en.eq(0),
                         u.zero.eq(~v_inside), u.shamt.eq(rq_shamt), u.round.eq(rq_round),
                         u.relu.eq(flags.relu), u.hi.eq(rq_hi)]
            ys.append(u)
        y_o = delay(v_o, Requant.LATENCY, "y_o")
        y_v = ys[0].out_valid
        # the mask word is read from ACT four cycles before the write (M_BASE + rel), the
        # word registered twice as it leaves the blocks (act_o, act_q) and its lanes' "> 0" registered
        # (keep, below): a block output meets only the blocks' own output multiplexer
        # (a comparison after it was the routed critical path at 516f95c); the address is
        # formed from rel beside v and carried
        ba_rel = delay(r_rel, BiasAlign.LATENCY, "ba_rel")
        v_maddr = Signal(aw + 2)
        m.d.sync += v_maddr.eq(desc.m_base + ba_rel)
        assert Requant.LATENCY - 5 >= 0
        mask_prev = delay(v_maddr, Requant.LATENCY - 5, "mask_addr")   # (act_ra_next's address)

        # ------------------------------------------------------------ WGRAD results
        tv = Signal()
        TB = AB // 2 if fault == "acc_width" else AB     # test hook: the tree wraps at AB // 2
        tsum = [Signal(signed(TB), name=f"t0_{l}", reset_less=True) for l in range(L)]
        t_o = Signal(aw + 1)
        m.d.sync += [tv.eq(mac.res_valid & is_wgrad), t_o.eq(mac.res_tag)]
        m.d.sync += [tsum[l].eq(mac.res[l]) for l in range(L)]     # every cycle: see r_acc
        lvl = tsum
        lv_v, lv_o = tv, t_o
        depth = 0
        while len(lvl) > 1 or depth == 0:
            nxt = []
            if len(lvl) == 1:
                r = Signal(signed(TB), name=f"t{depth + 1}_0")
                m.d.sync += r.eq(lvl[0])
                nxt = [r]
            for i in range(0, len(lvl) - 1, 2):
                r = Signal(signed(TB), name=f"t{depth + 1}_{i // 2}")
                m.d.sync += r.eq(lvl[i] + lvl[i + 1])
                nxt.append(r)
            nv, no = Signal(name=f"tv{depth + 1}"), Signal(aw + 1, name=f"to{depth + 1}")
            m.d.sync += [nv.eq(lv_v), no.eq(lv_o)]
            lvl, lv_v, lv_o = nxt, nv, no
            depth += 1
        assert depth == _tree_latency(L)
        upd_fault = {"drop_word": "drop_word", "update_sign": "sign"}.get(fault)
        # the shift is held from the fetch: its decoders are registered in the unit
        # the old value is read from the block outputs registered as they leave (q_cm,
        # q_bm), then selected: late_read
        m.submodules.update = upd = UpdateUnit(AB, max(tc.master_bits, tc.bias_bits), aw, fault=upd_fault,
                                               held_shift=True, late_read=True)
        m.d.comb += [upd.shift.eq(flags.shift), upd.stochastic.eq(prog.stoch),
                     upd.bits.eq(Mux(flags.dst, tc.bias_bits, tc.master_bits)),
                     upd.in_valid.eq(lv_v), upd.v.eq(lvl[0]), upd.addr.eq(lv_o),
                     upd.rng_load.eq(prog.rng_load & st_idle),
                     upd.rng_load_value.eq(prog.rng_value)]

        # ------------------------------------------------------------ loss unit
        m.submodules.loss = loss = LossUnit(act_bits=tc.act_bits, prob_bits=tc.prob_bits,
                                            table_bits=tc.table_bits, table_frac_bits=tc.table_frac_bits,
                                            max_classes=c.max_classes,
                                            fault="table_lsb" if fault == "loss_table" else None,
                                            z_delay=LOSS_Z_DELAY)
        slot = Signal(16)
        loss_phase = Signal(2)          # 0: read the label, 1: start, 2: wait for done
        slot_word = Signal(aw + 1)
        m.d.comb += slot_word.eq(slot >> lg)
        # U_BASE + slot word and O_BASE + slot word, registered: the slot changes at a
        # sample's done, two cycles before its next read (label read, start)
        loss_rbase, loss_wbase = Signal(aw + 2, name="loss_rbase"), Signal(aw + 2, name="loss_wbase")
        m.d.sync += [loss_rbase.eq(desc.u_base + slot_word), loss_wbase.eq(desc.o_base + slot_word)]
        # the logit's ACT address (loss_rbase + class * BW), registered: the read address of
        # the ACT blocks leaves a register. It is stepped by BW (registered) as the class
        # advances and reloaded from loss_rbase when the class returns to 0 (z_step: the
        # loss unit's class counter and C - 1 only), so no shift, and no adder of the class,
        # stands after the next-class decision (at 5f73007 that compare -> << BW_LOG -> the
        # U_BASE adder was seed 2's routed critical path, 48 levels). loss_rbase is set by
        # the start cycle, the cycle before the first read, and holds during the sample.
        # The next class's address is kept ready (loss_rplus = the address + BW, added
        # beside it as it is registered), so the choice is a multiplexer of registers: at
        # ec4a6a4 the adder after the register stood before the ACT address copies (seeds
        # 2 and 3's routed critical paths, loss_raddr's carry chain -> act_ra_next, 93.3 /
        # 96.5 MHz). BW is the one being registered, so loss_rplus is always loss_raddr +
        # BW, also in the cycle after BW_LOG changes.
        loss_rplus = Signal(aw + 2)
        loss_rnext = Mux(loss.z_step, loss_rplus, loss_rbase)
        m.d.sync += loss_rplus.eq(loss_rnext + (Const(1, aw + 2) << bwl_r))
        slot_lane = Signal(range(L), name="slot_lane") if L > 1 else Signal(1, name="slot_lane")
        m.d.comb += slot_lane.eq(slot[:lg] if lg else 0)
        z_lane = Signal.like(slot_lane)
        m.d.sync += z_lane.eq(slot_lane)
        # The label of a slot is read ahead (lab_addr: 0 from the FETCH on, slot + 1 from a
        # sample's start), so it is out of the label memory in the slot's phase 0, where its
        # check (label >= C, a real slot) is registered: phase 1's start (the load enable of
        # the loss unit's sample registers) follows a flip-flop, not the memory and two
        # comparisons. The label and `valid` are held by the unit from the start.
        lab_addr = Signal(range(c.max_batch))
        lab_bad, lab_valid = Signal(name="lab_bad"), Signal(name="lab_valid")
        # the logit from the ACT word as it left the blocks, registered (act_q)
        m.d.comb += [loss.classes.eq(desc.n0), loss.h.eq(flags.shift), loss.valid.eq(lab_valid),
                     loss.label.eq(lm_r.data), loss.z_data.eq(act_q[z_lane] if L > 1 else act_q[0])]

        # ------------------------------------------------------------ input writer
        in_f = Signal(16)
        # in_f == IN_COUNT (the sample's label is next), kept beside in_f: set from in_f's
        # increment compared without its carry chain (inc_eq), cleared with in_f (IN_COUNT
        # >= 1: the program check refuses 0), so no 16-bit comparison stands between the
        # counter and the ACT write enables, the label write and the state (the routed
        # seed-3 path at 49f37c7, inp_ready -> in_f < IN_COUNT -> fw)
        f_last = Signal()
        in_b = Signal(16)
        in_addr = Signal(aw + 2)      # IN_BASE + f*BW + b // L
        in_row = Signal(aw + 2)       # IN_BASE + b // L
        bw = Signal(17)
        m.d.comb += bw.eq(Const(1, 17) << prog_q.bw_log)
        zf = Signal(32)               # ZFILL counter
        zf_addr = Signal(33)          # O_BASE + zf, kept beside it (no adder before the write)
        # ZFILL's range check (zf_addr >= the depth) and its end (zf == N0 - 1), each decided
        # a cycle ahead into a flip-flop (zf_addr and zf step by one a cycle; at DECODE from
        # O_BASE and N0 - 1): a 33-bit and a 32-bit comparison no longer stand before the
        # state and error registers' load enables (the shape of b1c92e0's seed-1 path, a
        # counter's comparison -> err CE). Same cycles, same errors.
        zf_over, zf_done = Signal(name="zf_over"), Signal(name="zf_done")
        zf_lim = Signal(range(max(c.act_depth, c.grad_depth) + 1))     # the depth, and less 1
        zf_lim_m1 = Signal.like(zf_lim)
        n0_m2 = Signal(32)
        m.d.sync += [zf_lim.eq(Mux(flags.dst, c.grad_depth, c.act_depth)),
                     zf_lim_m1.eq(Mux(flags.dst, c.grad_depth - 1, c.act_depth - 1)), n0_m2.eq(desc.n0 - 2)]

        # ------------------------------------------------------------ memory ports
        host_idle = Signal()
        m.d.comb += host_idle.eq(st_idle)
        # ACT read: the U word (CONTRACT from ACT), the V word (WGRAD), the mask or the
        # logits (is_loss, mask_op: outside the LOSS state and the masked CONTRACT's run the word read
        # is not used, so the selects are FLAGS decodes held for the operation), the host's
        # in IDLE. The address pins of each ACT memory and of GRAD leave registers (act_ra,
        # grad_ra: no multiplexer between them and the blocks), loaded with the choice made
        # from next values: the generator's candidates under its selects are what v_addr
        # and u_addr hold in the next cycle, the logit address steps (loss_rplus, z_step)
        # or restarts (loss_rbase), and mask_op, u_op, is_loss and is_wgrad are held from the
        # FETCH, so the registers equal a multiplexer of the current addresses in every
        # cycle the engine reads ACT. The host's address is taken in the cycle of its read (re)
        # and read in the next: HOST_READ_LATENCY.
        act_ra = fanout_copies(len(act_rs[0].addr), G, "act_ra")
        grad_ra = Signal.like(grad_r.addr, name="grad_ra")
        # The choice is one AND-OR under exclusive selects, each of at most four flip-flops,
        # over every register the next address can be (the host's; the logit address's
        # next and base, the mask's; the generator's base and stepped candidates of V or
        # U), not a choice among choices: at 1d044b9 the two-tier choice (the logit
        # address's multiplexer under z_step, the generator's own AND-OR) was 7 LUT levels
        # before the copies on all three seeds' routed critical paths (train_hw.json). A
        # stream's address is read only in RUN, where the generator advances in every
        # cycle (no stall: issue = running & valid) and `start` (gen_go, the DECODE cycle)
        # is low, so its base is chosen under gen_go, loop j's candidate under running &
        # lvl_valid[j] (= the generator's own adv & lvl[j]), and its held address, never
        # read, not at all (the register then takes 0).
        act_ra_next = Signal.like(act_ra[0], name="act_ra_next")
        a_items = [host.addr >> lg, loss_rplus, loss_rbase, mask_prev]
        a_sel = [st_idle, ~st_idle & is_loss & loss.z_step, ~st_idle & is_loss & ~loss.z_step,
                 ~st_idle & mask_op]
        for op, cand in ((is_wgrad, gen.v_next_cand), (u_op, gen.u_next_cand)):
            # cand: base, the steps of loops 3, 2, 1, nxt0 (loop 0), held
            a_items += [cand[0], cand[1], cand[2], cand[3], cand[4]]
            a_sel += [gen_go & op, *(running & op & gen.lvl_valid[j] for j in (3, 2, 1, 0))]
        m.d.comb += act_ra_next.eq(onehot_select(a_items, Cat(*a_sel)))
        m.d.sync += [r.eq(act_ra_next) for r in act_ra]
        m.d.sync += grad_ra.eq(Mux(st_idle, host.addr >> lg, gen.u_addr_next))
        m.d.comb += [r.addr.eq(a) for r, a in zip(act_rs, act_ra)]
        m.d.comb += grad_r.addr.eq(grad_ra)
        # CMEM / BMEM reads: the core element or the update's old value; the bias
        with m.If(host_idle):
            m.d.comb += [cm_r.addr.eq(host.addr), bm_r.addr.eq(host.addr)]
        with m.Elif(is_wgrad):
            m.d.comb += [cm_r.addr.eq(upd.rd_addr), bm_r.addr.eq(upd.rd_addr)]
        with m.Else():
            m.d.comb += [cm_r.addr.eq(gen.v_addr), bm_r.addr.eq(bias_addr)]
        # CMEM / BMEM writes: the host, or the update
        hw_cm = host_idle & host.we & (host.sel == HostSel.CMEM)
        hw_bm = host_idle & host.we & (host.sel == HostSel.BMEM)
        m.d.comb += [
            cm_w.addr.eq(Mux(hw_cm, host.addr, upd.wr_addr)),
            cm_w.data.eq(Mux(hw_cm, host.wdata, upd.wr_data)),
            cm_w.en.eq(hw_cm | (upd.wr_en & ~flags.dst & ~host_idle)),
            bm_w.addr.eq(Mux(hw_bm, host.addr, upd.wr_addr)),
            bm_w.data.eq(Mux(hw_bm, host.wdata, upd.wr_data)),
            bm_w.en.eq(hw_bm | (upd.wr_en & flags.dst & ~host_idle)),
            dm_w.addr.eq(host.addr), dm_w.data.eq(host.wdata),
            dm_w.en.eq(host_idle & host.we & (host.sel == HostSel.DMEM)),
        ]
        # the word write of a CONTRACT result, masked
        y_word = Signal(data.ArrayLayout(signed(SB), L))
        keep_q = Signal(L)
        m.d.sync += keep_q.eq(Cat(act_q[l] > 0 for l in range(L)))
        for l in range(L):
            keep = 1 if fault == "no_mask" else Mux(flags.mask, keep_q[l], 1)   # test hook
            m.d.comb += y_word[l].eq(Mux(keep, ys[l].out, 0))
        onehot_in = Signal(L)
        m.d.comb += onehot_in.eq(Const(1, L) << (in_b[:lg] if lg else 0))
        # the loss gradient's write (address, lane enable, value) registered: a cycle after
        # g_valid, the last one in the done cycle, still in LOSS (the address's shift and
        # adder no longer stand before the GRAD blocks' address fan-out)
        loss_word = Signal(aw + 2)
        m.d.sync += loss_word.eq(loss_wbase + (loss.g_class << bwl_r))
        lane_hot = Signal(L)
        m.d.sync += lane_hot.eq(Mux(loss.g_valid, Const(1, L) << (slot_lane if lg else 0), 0))
        loss_g = Signal.like(loss.g_value)
        m.d.sync += loss_g.eq(loss.g_value)
        # The ACT and GRAD writes (address, lane enables, word) are chosen here and written
        # a cycle later from registers (aw_*, gw_*), so the blocks' write pins (60 and more
        # blocks each, spread over the die) are driven by flip-flops, not by the state
        # decode and this multiplexer (the routed seed-1 path at af76131 ran st_zfill ->
        # the multiplexer -> WEA). Exact, and the same cycles: no word is read within a
        # cycle of its write (an operation reads regions it does not write, which
        # compile_training checks; its last write is at the latest in its last DRAIN,
        # ZFILL or LOSS cycle, so the delayed one lands in DONE, before the next FETCH and
        # before the host can read in IDLE).
        a_addr = Signal.like(act_ws[0].addr)
        a_en = Signal(L)
        a_data = Signal.like(act_rdata)
        g_addr, g_en = Signal.like(grad_w.addr, name="g_addr"), Signal.like(grad_w.en, name="g_en")
        g_data = Signal.like(grad_w.data)
        with m.If(st_input):
            m.d.comb += [a_addr.eq(in_addr), a_en.eq(Mux(self.inp.valid & ~f_last,
                                                         onehot_in, 0))]
            m.d.comb += [a_data[l].eq(self.inp.payload) for l in range(L)]
        with m.Elif(st_zfill):
            m.d.comb += [a_addr.eq(zf_addr), a_en.eq(Mux(~flags.dst, (1 << L) - 1, 0)),
                         g_addr.eq(zf_addr), g_en.eq(Mux(flags.dst, (1 << L) - 1, 0))]
        with m.Elif(st_loss):
            m.d.comb += [g_addr.eq(loss_word), g_en.eq(lane_hot)]
            m.d.comb += [g_data[l].eq(loss_g) for l in range(L)]
        with m.Else():
            m.d.comb += [a_addr.eq(y_o), g_addr.eq(y_o),
                         a_en.eq(Mux(y_v & ~flags.dst & is_contract, (1 << L) - 1, 0)),
                         g_en.eq(Mux(y_v & flags.dst & is_contract, (1 << L) - 1, 0))]
            m.d.comb += [a_data[l].eq(y_word[l]) for l in range(L)]
            m.d.comb += [g_data[l].eq(y_word[l]) for l in range(L)]
        # addresses and words without a reset (only the enables need one); ACT's address in
        # one copy per ACT memory (fanout_copies)
        aw_addr = fanout_copies(len(a_addr), G, "aw_addr", reset_less=True)
        aw_data = Signal.like(a_data, name="aw_data", reset_less=True)
        gw_addr = Signal.like(g_addr, name="gw_addr", reset_less=True)
        gw_data = Signal.like(g_data, name="gw_data", reset_less=True)
        aw_en, gw_en = Signal.like(a_en, name="aw_en"), Signal.like(g_en, name="gw_en")
        m.d.sync += [r.eq(a_addr) for r in aw_addr]
        m.d.sync += [aw_data.eq(a_data), aw_en.eq(a_en),
                     gw_addr.eq(g_addr), gw_data.eq(g_data), gw_en.eq(g_en)]
        GL = L // G                     # lanes of one ACT memory
        for g, (w, a) in enumerate(zip(act_ws, aw_addr)):
            m.d.comb += [w.addr.eq(a), w.en.eq(aw_en[g * GL:(g + 1) * GL]),
                         w.data.eq(aw_data.as_value()[g * GL * AS:(g + 1) * GL * AS])]
        m.d.comb += [grad_w.addr.eq(gw_addr), grad_w.data.eq(gw_data), grad_w.en.eq(gw_en)]
        # labels
        m.d.comb += [lm_w.addr.eq(in_b), lm_w.data.eq(self.inp.payload),
                     lm_w.en.eq(st_input & self.inp.valid & f_last),
                     lm_r.addr.eq(Mux(host_idle, host.addr, lab_addr))]
        # MAXACC: written at the end of each CONTRACT; read by the host
        m.d.comb += [mx_w.addr.eq(op_idx), mx_w.data.eq(vmax[1:] + vmax[0]), mx_r.addr.eq(host.addr >> 1)]
        # DMEM: the fetch, or the host
        m.d.comb += dm_r.addr.eq(Mux(host_idle, host.addr, op_idx * TRAIN_DESC_WORDS + fw))

        # ------------------------------------------------------------ host reads
        # HOST_READ_LATENCY = 6 cycles: CMEM, BMEM, DMEM, MAXACC and the labels are read in
        # the cycle of re, ACT and GRAD in the next (their address registers are loaded in
        # the cycle of re, above); every block output is registered as it leaves (a
        # DP16KD's unregistered output takes ~6 ns before any logic: no mux after it),
        # ACT's and GRAD's twice (act_o, act_q), the small memories' twice more to wait
        # for ACT's, then the lanes and the memory are chosen in two registered stages.
        h_sel = Signal(HostSel)
        h_lane = Signal(range(L), name="h_lane") if L > 1 else Signal(1, name="h_lane")
        h_half = Signal()
        h_v = Signal()
        m.d.sync += [h_v.eq(host.re & host_idle), h_sel.eq(host.sel), h_half.eq(host.addr[0]),
                     h_lane.eq(host.addr[:lg] if lg else 0)]
        q_sel = Signal.like(h_sel, name="q_sel")
        q_lane = Signal.like(h_lane, name="q_lane")
        q_half = Signal(name="q_half")
        q_v = Signal(name="q_v")
        q_dm = Signal.like(dm_r.data, name="q_dm")
        q_cm = Signal.like(cm_r.data, name="q_cm")
        q_bm = Signal.like(bm_r.data, name="q_bm")
        q_mx = Signal.like(mx_r.data, name="q_mx")
        q_lm = Signal.like(lm_r.data, name="q_lm")
        m.d.sync += [q_v.eq(h_v), q_sel.eq(h_sel), q_lane.eq(h_lane), q_half.eq(h_half),
                     q_dm.eq(dm_r.data),
                     q_bm.eq(bm_r.data), q_mx.eq(mx_r.data), q_lm.eq(lm_r.data)]
        m.d.comb += q_cm.eq(cm_r.data)        # (CMEM's banks register it: RegisteredBanks)
        # the update's old value, a cycle after the read (UpdateUnit(late_read=True)): a
        # block output through the select to the unit did not fit the clock
        m.d.comb += upd.rd_data.eq(Mux(flags.dst, q_bm, q_cm))
        # the third and fourth stages: the read's controls and the small memories' words
        # twice more (hq_*, hr_*), beside ACT's and GRAD's words (act_o, act_q; grad_o, q_grad)
        hq, hr = {}, {}
        for name, sig in (("v", q_v), ("sel", q_sel), ("lane", q_lane), ("half", q_half), ("dm", q_dm),
                          ("cm", q_cm), ("bm", q_bm), ("mx", q_mx), ("lm", q_lm)):
            hq[name] = Signal.like(sig, name=f"hq_{name}")
            hr[name] = Signal.like(sig, name=f"hr_{name}")
            m.d.sync += [hq[name].eq(sig), hr[name].eq(hq[name])]
        # the fifth stage: ACT's and GRAD's lanes picked (a 16-way choice each) and the
        # small memories' word chosen, each into a register; the sixth chooses one of the
        # three into host_rdata. (One stage for both was 7 LUT levels from act_q and the
        # routed critical path of seed 2 at 6f1c35f, 98.95 MHz; a host read is rare, the
        # extra cycle costs nothing.)
        small = Signal(32)
        with m.Switch(hr["sel"]):
            with m.Case(HostSel.DMEM):
                m.d.comb += small.eq(hr["dm"])
            with m.Case(HostSel.CMEM):
                m.d.comb += small.eq(hr["cm"].as_signed())
            with m.Case(HostSel.BMEM):
                m.d.comb += small.eq(hr["bm"].as_signed())
            with m.Case(HostSel.MAXACC):
                m.d.comb += small.eq(Mux(hr["half"], hr["mx"] >> 32, hr["mx"][:32]))
            with m.Case(HostSel.LABEL):
                m.d.comb += small.eq(hr["lm"])
        hp_small = Signal(32, name="hp_small")
        hp_act = Signal(32, name="hp_act")
        hp_grad = Signal(32, name="hp_grad")
        hp_sel = Signal.like(hr["sel"], name="hp_sel")
        hp_v = Signal(name="hp_v")
        m.d.sync += [hp_small.eq(small), hp_sel.eq(hr["sel"]), hp_v.eq(hr["v"]),
                     hp_act.eq(act_q[hr["lane"]] if L > 1 else act_q[0]),
                     hp_grad.eq(q_grad[hr["lane"]] if L > 1 else q_grad[0])]
        h_data = Signal(32)
        m.d.comb += h_data.eq(Mux(hp_sel == HostSel.ACT, hp_act,
                                  Mux(hp_sel == HostSel.GRAD, hp_grad, hp_small)))
        m.d.sync += [self.host_rvalid.eq(hp_v), self.host_rdata.eq(h_data)]

        # ------------------------------------------------------------ the sequencer
        m.d.comb += [self.inp.ready.eq(st_input), loss.start.eq(0), mx_w.en.eq(0)]
        # The address generator's start (the load enable of all its registers) leaves a
        # flip-flop: DECODE's decision to run, made in the FETCH's last cycle, the cycle
        # before DECODE (its operands, the registered descriptor checks and decodes, are
        # set from the FETCH's eighth cycle on and hold through DECODE; DECODE is entered
        # only from there). Same cycle, same verdict as deciding in DECODE.
        m.d.sync += gen_go.eq(0)
        m.d.comb += gen_start.eq(gen_go)
        done_pulse = Signal()
        m.d.comb += done_pulse.eq(0)

        # The program check, in three registered stages: the simple checks and the input's
        # extent IN_COUNT << BW_LOG, then IN_BASE + that extent, then its comparison with
        # the ACT depth (IN_BASE + ((IN_COUNT - 1) << BW_LOG) + BW - 1 >= depth is, for
        # IN_COUNT >= 1, IN_BASE + (IN_COUNT << BW_LOG) > depth). In one stage (a shift
        # and three adders) it was seed 3's routed critical path at 5f73007 (36 levels).
        # It judges prog_q of three cycles before, and a step starts only when prog_q has
        # not changed in those cycles (prog_settled: prog_same of the last three cycles,
        # registered; prog_same(t) is prog(t) == prog_q(t), i.e. prog_q(t + 1) == prog_q(t)
        # in an idle cycle), so a program set together with ``enable`` waits four idle
        # cycles (not counted: the cycle counter counts busy cycles only). A bad program is
        # refused in IDLE, as before: no new state can hang.
        prog_same = Signal()
        prog_same_d = Signal(3)
        prog_settled = Signal()
        m.d.comb += prog_same.eq((prog_q.batch == prog.batch) & (prog_q.bw_log == prog.bw_log)
                                 & (prog_q.in_count == prog.in_count) & (prog_q.in_base == prog.in_base))
        m.d.sync += prog_same_d.eq(Cat(prog_same, prog_same_d[:2]))
        m.d.comb += prog_settled.eq(prog_same_d.all())
        ab = c.act_depth.bit_length()          # IN_BASE <= act_depth fits these bits
        pb1, pb2, prog_bad = Signal(name="pb1"), Signal(name="pb2"), Signal(name="prog_bad")
        base1 = Signal(ab)
        ext1 = Signal(len(prog.in_count) + (1 << len(prog.bw_log)) - 1)
        sum2 = Signal(max(ab, len(ext1)) + 1)
        m.d.sync += [pb1.eq((prog_q.batch == 0) | (prog_q.batch > slots_m1 + 1) | (prog_q.in_count == 0)
                            | (prog_q.in_base > c.act_depth) | (slots_m1 + 1 > c.max_batch)),
                     base1.eq(prog_q.in_base[:ab]), ext1.eq(prog_q.in_count << prog_q.bw_log),
                     pb2.eq(pb1), sum2.eq(base1 + ext1),
                     prog_bad.eq(pb2 | (sum2 > c.act_depth))]

        # The descriptor's checks, registered: FLAGS and N0..N3 are its first words, stored
        # by the FETCH's seventh cycle (through dq), 19 cycles before DECODE reads the
        # verdict (the 32-bit comparisons stood before gen_start, the load enable of every
        # address register: the routed seed-1 path at 5f73007, desc -> the checks ->
        # gen_start -> gen.u_p1 CE).
        # In two stages: the fields' tests, registered, then their combination with the
        # operation (one stage was the routed seed-1 path at 49f37c7, desc -> bad_desc).
        bad_desc = Signal()
        d_contract, d_wgrad = flags.op == Op.CONTRACT, flags.op == Op.WGRAD
        bd_n0_zero, bd_n123_zero, bd_sat, bd_classes = (Signal(name=f"bd_{n}") for n in
                                                        ("n0_zero", "n123_zero", "sat", "classes"))
        m.d.sync += [bd_n0_zero.eq(desc.n0 == 0),
                     bd_n123_zero.eq((desc.n1 == 0) | (desc.n2 == 0) | (desc.n3 == 0)),
                     bd_sat.eq((flags.sat_bits < 2) | (flags.sat_bits > SB)),
                     bd_classes.eq(desc.n0 > c.max_classes)]
        m.d.sync += bad_desc.eq(bd_n0_zero | ((d_contract | d_wgrad) & bd_n123_zero) | (d_contract & bd_sat)
                                | ((flags.op == Op.LOSS) & bd_classes))

        # The operation is the last DMEM holds (op_idx + 1 >= desc_depth), registered:
        # op_idx is set at the FETCH's start and read in DONE, at least 27 cycles later
        # (the increment's carry chain and the comparison stood before the error
        # registers' load enable: b1c92e0's routed seed-1 path, op_idx -> err CE, 22 levels)
        op_end = Signal()
        m.d.sync += op_end.eq(op_idx + 1 >= c.desc_depth)

        def fail(frm, code):
            """Stop in state ``frm`` with error ``code`` (back to IDLE, the error held)."""
            return [err.eq(code), err_op.eq(op_idx), error.eq(1), *go(frm, _State.IDLE)]

        S = _State
        with m.If(st_idle):
            # the input writer's counters are loaded in every idle cycle, not by the start
            # (they are read only in INPUT, entered only from here, so they hold the same
            # values there): the start decision (a 68-bit comparison, prog_settled) reaches
            # only the state flags, not these 66 flip-flops' load enables as well
            m.d.sync += [in_f.eq(0), f_last.eq(0), in_b.eq(0), in_addr.eq(prog_q.in_base),
                         in_row.eq(prog_q.in_base)]
            m.d.comb += start_step.eq(ctl.enable & ~error & prog_settled)
            with m.If(start_step):
                with m.If(prog_bad):
                    m.d.sync += fail(S.IDLE, TrainError.BAD_PROGRAM)
                with m.Else():
                    m.d.sync += go(S.IDLE, S.INPUT)
        with m.If(st_input):
            with m.If(self.inp.valid):
                with m.If(f_last):          # the label
                    nb = in_b + 1
                    nrow = Mux(nb[:lg] == 0, in_row + 1, in_row) if lg else in_row + 1
                    m.d.sync += [in_f.eq(0), f_last.eq(0), in_b.eq(nb), in_row.eq(nrow), in_addr.eq(nrow)]
                    with m.If(inc_eq(in_b, prog_q.batch)):    # nb == BATCH
                        m.d.sync += [*go(S.INPUT, S.FETCH), op_idx.eq(0), fw.eq(0)]
                with m.Else():
                    m.d.sync += [in_f.eq(in_f + 1), f_last.eq(inc_eq(in_f, prog_q.in_count)),
                                 in_addr.eq(in_addr + bw)]
        # The DMEM word is registered as it leaves the block (dq) and stored into its
        # descriptor field a cycle later: the block's output (a DP16KD's clock-to-out) met
        # only that register, not the 25 fields' flip-flops spread over the die beside their
        # users. Word i is addressed at fw = i, leaves the block at fw = i + 1 and is
        # stored at fw = i + 2: the last two words (M_BASE, OUT_VALID) land in the FETCH's
        # last cycle and in DECODE, and nothing reads them before a result exists; FLAGS
        # and N0..N3, which the decodes and checks read, are stored by fw = 6, 19 cycles
        # before DECODE. Same cycles.
        dq = Signal(32, name="dq", reset_less=True)
        dq_at = Signal(range(FETCH_WORDS + 1), name="dq_at")
        dq_v = Signal(name="dq_v")
        m.d.sync += [dq.eq(dm_r.data), dq_v.eq(0), dq_at.eq(fw - 1)]
        with m.If(dq_v):
            for i, name in enumerate(DESC_FIELDS):
                with m.If(dq_at == i):
                    m.d.sync += desc[name.lower()].eq(dq)
                    if name == "FLAGS":     # the requantization decode's own copies
                        fq = data.View(_flags_layout(), dq)
                        m.d.sync += [rq_shift_h.eq(fq.shift), rq_sat_h.eq(fq.sat_bits)]
        with m.If(st_fetch):
            # word fw is addressed now, leaves the block next cycle (dq_at = fw - 1)
            m.d.sync += [fw.eq(fw + 1), lab_addr.eq(0), dq_v.eq(fw >= 1)]
            with m.If(fw == FETCH_WORDS):
                m.d.sync += [*go(S.FETCH, S.DECODE), gen_go.eq(~bad_desc & (is_contract | is_wgrad))]
        with m.If(st_decode):
            with m.If(bad_desc):
                m.d.sync += fail(S.DECODE, TrainError.BAD_DESC)
            with m.Elif(is_contract | is_wgrad):      # gen_start is gen_go now
                m.d.sync += [*go(S.DECODE, S.RUN), vmax.eq(0)]
            with m.Elif(flags.op == Op.LOSS):
                m.d.sync += [*go(S.DECODE, S.LOSS), slot.eq(0), loss_phase.eq(0)]
            with m.Else():
                m.d.sync += [*go(S.DECODE, S.ZFILL), zf.eq(0), zf_addr.eq(desc.o_base),
                             zf_over.eq(desc.o_base >= zf_lim), zf_done.eq(n_m1[0] == 0)]
        with m.If(running):
            with m.If(range_err != TrainError.NONE):
                m.d.sync += fail(S.RUN, range_err)
            with m.Elif(gen.valid & gen.final):
                m.d.sync += [*go(S.RUN, S.DRAIN),
                             drain.eq(Mux(is_contract, contract_drain(), wgrad_drain(L)))]
        with m.If(st_drain):
            m.d.sync += drain.eq(drain - 1)
            with m.If(drain == 1):
                m.d.comb += mx_w.en.eq(is_contract)
                m.d.sync += go(S.DRAIN, S.DONE)
        with m.If(st_loss):
            with m.Switch(loss_phase):
                with m.Case(0):                        # the slot's label is out: checked
                    m.d.sync += [loss_phase.eq(1), lab_valid.eq(slot < prog_q.batch),
                                 lab_bad.eq((slot < prog_q.batch) & (lm_r.data >= desc.n0))]
                with m.Case(1):
                    with m.If(lab_bad):
                        m.d.sync += fail(S.LOSS, TrainError.BAD_LABEL)
                    with m.Else():
                        m.d.comb += loss.start.eq(1)
                        m.d.sync += [loss_phase.eq(2), lab_addr.eq(slot + 1)]
                with m.Case(2):
                    with m.If(loss.done):
                        m.d.sync += [slot.eq(slot + 1), loss_phase.eq(0)]
                        with m.If(slot == slots_m1_r):
                            m.d.sync += go(S.LOSS, S.DONE)
        with m.If(st_zfill):
            m.d.sync += [zf.eq(zf + 1), zf_addr.eq(zf_addr + 1),
                         zf_over.eq(zf_addr >= zf_lim_m1), zf_done.eq(zf == n0_m2)]
            with m.If(zf_over):
                m.d.sync += fail(S.ZFILL, Mux(flags.dst, TrainError.GRAD_RANGE, TrainError.ACT_RANGE))
            with m.Elif(zf_done):
                m.d.sync += go(S.ZFILL, S.DONE)
        with m.If(st_done):
            # the operation is complete: the next one, or the end of the step
            with m.If(flags.last):
                m.d.comb += done_pulse.eq(1)
                m.d.sync += [*go(S.DONE, S.IDLE), st.steps.eq(st.steps + 1)]
            with m.Elif(op_end):
                m.d.sync += fail(S.DONE, TrainError.DESC_RANGE)
            with m.Else():
                m.d.sync += [op_idx.eq(op_idx + 1), fw.eq(0), *go(S.DONE, S.FETCH)]

        # errors are cleared by the host; a soft reset also stops a step
        with m.If(ctl.clear_error | ctl.soft_reset):
            m.d.sync += [error.eq(0), err.eq(TrainError.NONE)]
        with m.If(ctl.soft_reset):
            m.d.sync += [*(f.eq(s == S.IDLE) for s, f in flag.items()), gen_go.eq(0)]

        # ------------------------------------------------------------ status, counters
        busy = Signal()
        m.d.comb += busy.eq(~st_idle)
        with m.If(busy):
            m.d.sync += st.cycles.eq(st.cycles + 1)
        with m.If(issue):
            m.d.sync += st.mac_cycles.eq(st.mac_cycles + L)
        with m.If(upd.wr_en & upd.changed):
            m.d.sync += st.changed.eq(st.changed + 1)
        m.d.comb += [st.busy.eq(busy), st.done_pulse.eq(done_pulse), st.error.eq(error),
                     st.error_code.eq(err), st.error_op.eq(err_op), st.op.eq(op_idx),
                     st.rng.eq(upd.rng_state)]
        return m
