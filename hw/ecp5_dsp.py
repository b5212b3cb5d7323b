"""The ECP5 multiplier with its own input and output registers, and a model of it.

Yosys's ``synth_ecp5`` maps a ``$mul`` to ``MULT18X18D`` with every ``REG_*`` set to
``NONE`` and leaves the operand and product registers around it in the fabric, where
nextpnr times the multiplier as combinational logic between two flip-flops (3.9 ns of
the ~10 ns L = 16 critical path). With ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK`` and
``REG_OUTPUT_CLK`` set, nextpnr uses the DSP's registered timings (nextpnr PR #435):
the multiply happens between the DSP's own registers and the fabric sees a setup at
its inputs and a clock-to-out at its outputs. The registers are the same two the
behavioural :class:`~ttforge.hw.blocks.MacLanes` has, so latency and cycle counts do
not change.

* :class:`SynthTarget`, :data:`ECP5` and :func:`target_family` live in
  :mod:`ttforge.hw.target` (and are importable from here): a target is passed to
  Amaranth as the ``platform`` argument (``ttforge.hw.top.verilog(config,
  platform=ECP5)``), the same way an amaranth-boards platform reaches every
  ``elaborate``, and :func:`target_family` reads the family from either (``None`` for
  simulation and generic Verilog).
* :class:`Ecp5Mult` is one ``MULT18X18D`` instance: signed ``a`` x signed ``b`` with
  the input registers and the output register on ``CLK0``, all enabled by ``en``
  (``CE0``), no reset (``RST0`` tied low; the data registers of ``MacLanes`` that it
  replaces are resetless), ``GSR`` disabled.
* :func:`mult18x18d_model` is a Verilog simulation model of ``MULT18X18D`` for Icarus
  and Verilator. **It is ttforge's model, written from Lattice's documented semantics
  (ECP5 and ECP5-5G sysDSP Usage Guide, FPGA-TN-02205: per-register CLK/CE/RST
  selection, SIGNEDA/SIGNEDB, RESETMODE), not a vendor model**: Yosys ships only a
  black box (``share/ecp5/cells_bb.v``). It covers the subset ttforge instantiates
  (input A/B and output registers, no pipeline register, no cascade, ``SOURCEA/B``
  low, ``MULT_BYPASS`` disabled) and stops the simulation with an error for any other
  setting. ``fault=`` builds deliberately wrong variants, for the tests that must fail.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError
from ttforge.hw.target import ECP5, SynthTarget, target_family  # noqa: F401 (public here too)

__all__ = ["SynthTarget", "ECP5", "target_family", "Ecp5Mult", "mult18x18d_model",
           "MODEL_FAULTS", "DSP_BITS"]

#: Width of each ``MULT18X18D`` operand (two's complement with ``SIGNEDA/B`` high).
DSP_BITS = 18


class Ecp5Mult(wiring.Component):
    """``p`` = ``a`` x ``b`` (signed) two clock edges after ``a``/``b`` are presented
    with ``en`` high, through one ``MULT18X18D`` with its input and output registers.

    Behaves exactly as ``a_r, b_r <= a, b`` and ``p <= a_r * b_r``, both only when
    ``en`` (one clock enable, ``CE0``, for all three registers), with no reset.
    With ``input_registers=False`` the DSP keeps only its output register: ``p <= a *
    b`` when ``en``, one clock edge after ``a``/``b`` (the caller's operand registers
    stay in the fabric, free to be placed between their sources and the DSP).

    Parameters
    ----------
    a_bits, b_bits : int
        Operand widths, 1..18 (sign-extended to 18 bits).
    input_registers : bool
        Whether the A and B registers are the DSP's (default) or absent.
    """

    def __init__(self, *, a_bits: int, b_bits: int, input_registers: bool = True):
        for name, v in (("a_bits", a_bits), ("b_bits", b_bits)):
            if not 1 <= int(v) <= DSP_BITS:
                raise ConfigError(f"Ecp5Mult {name}={v} must be 1..{DSP_BITS} (one MULT18X18D)")
        self.a_bits, self.b_bits = int(a_bits), int(b_bits)
        self.input_registers = bool(input_registers)
        super().__init__({
            "en": In(1),
            "a": In(signed(self.a_bits)),
            "b": In(signed(self.b_bits)),
            "p": Out(signed(self.a_bits + self.b_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        a18, b18 = Signal(signed(DSP_BITS), name="a18"), Signal(signed(DSP_BITS), name="b18")
        p36 = Signal(2 * DSP_BITS)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]     # sign extension
        ports = {}
        for i in range(DSP_BITS):
            ports[f"i_A{i}"] = a18[i]
            ports[f"i_B{i}"] = b18[i]
            ports[f"i_C{i}"] = Const(0, 1)
        for i in range(2 * DSP_BITS):
            ports[f"o_P{i}"] = p36[i]
        regs = {}
        used = ("INPUTA", "INPUTB", "OUTPUT") if self.input_registers else ("OUTPUT",)
        for r in used:
            regs.update({f"p_REG_{r}_CLK": "CLK0", f"p_REG_{r}_CE": "CE0", f"p_REG_{r}_RST": "RST0"})
        for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE"):
            if r not in used:
                regs[f"p_REG_{r}_CLK"] = "NONE"
        m.submodules.dsp = Instance(
            "MULT18X18D",
            **regs,
            p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
            p_SOURCEB_MODE="B_SHIFT", p_CAS_MATCH_REG="FALSE",
            i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
            i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            i_CLK0=ClockSignal("sync"), i_CLK1=Const(0, 1), i_CLK2=Const(0, 1), i_CLK3=Const(0, 1),
            i_CE0=self.en, i_CE1=Const(0, 1), i_CE2=Const(0, 1), i_CE3=Const(0, 1),
            i_RST0=Const(0, 1), i_RST1=Const(0, 1), i_RST2=Const(0, 1), i_RST3=Const(0, 1),
            **ports,
        )
        # the product of an a-bit and a b-bit signed number fits a + b bits
        m.d.comb += self.p.eq(p36[:self.a_bits + self.b_bits].as_signed())
        return m


# one register of the model (plain text: its braces are Verilog's)
_REG_MODULE = """
module ttforge_mult18_reg #(parameter W = 18, parameter ASYNC = 0) (
    input clk, input ce, input rst, input [W-1:0] d, output reg [W-1:0] q
);
    initial q = {W{1'b0}};
    generate if (ASYNC) begin : g_async
        always @(posedge clk or posedge rst)
            if (rst) q <= {W{1'b0}}; else if (ce) q <= d;
    end else begin : g_sync
        always @(posedge clk)
            if (rst) q <= {W{1'b0}}; else if (ce) q <= d;
    end endgenerate
endmodule
"""

#: Deliberately wrong variants of :func:`mult18x18d_model` (each must fail a check).
MODEL_FAULTS = {
    "unsigned": "SIGNEDA/SIGNEDB ignored: operands taken as unsigned",
    "no_output_reg": "REG_OUTPUT_CLK ignored: the product leaves combinationally",
    "no_input_reg": "REG_INPUTA_CLK ignored: A enters the multiplier unregistered",
    "ce_ignored": "the clock enables ignored: every register loads on every edge",
}


def mult18x18d_model(fault: str | None = None) -> str:
    """Verilog of ttforge's ``MULT18X18D`` simulation model (see the module docstring:
    ours, from Lattice's documented semantics, not the vendor's).

    Each of the A, B and output registers is present when its ``REG_*_CLK`` names a
    clock (``CLK0``..``CLK3``), loads when the selected ``CE`` is high and clears when
    the selected ``RST`` is high (``RESETMODE "SYNC"``: at the clock edge, over the
    enable; ``"ASYNC"``: at once); ``SIGNEDA``/``SIGNEDB`` travel with their operand's
    register. ``P`` is the 36-bit product of the two 18-bit operands, each signed when
    its ``SIGNED`` input is high. Unsupported settings end the simulation with
    ``$fatal``. ``fault``: one of :data:`MODEL_FAULTS` (a wrong model, for tests).
    """
    if fault is not None and fault not in MODEL_FAULTS:
        raise ConfigError(f"model fault={fault!r} is unknown; choose one of {', '.join(MODEL_FAULTS)}")
    sa = "1'b0" if fault == "unsigned" else "sa_q"
    sb = "1'b0" if fault == "unsigned" else "sb_q"
    out_reg = "0" if fault == "no_output_reg" else '(REG_OUTPUT_CLK != "NONE")'
    a_reg = "0" if fault == "no_input_reg" else '(REG_INPUTA_CLK != "NONE")'
    ce = (lambda sel: "1'b1") if fault == "ce_ignored" else (lambda sel: f"sel4({sel}, CE0, CE1, CE2, CE3)")
    pins = lambda p, n: ", ".join(f"{p}{i}" for i in range(n))  # noqa: E731
    bus = lambda p, n: "{" + ", ".join(f"{p}{i}" for i in reversed(range(n))) + "}"  # noqa: E731
    return f"""\
// MULT18X18D simulation model -- written by ttforge (ttforge/hw/ecp5_dsp.py) from
// Lattice's documented semantics (ECP5 sysDSP Usage Guide); NOT a Lattice model.
// Covers input A/B and output registers (CLK/CE/RST selection, SYNC/ASYNC reset),
// SIGNEDA/SIGNEDB; anything else stops the simulation.{'' if fault is None else f'''
// DELIBERATELY WRONG VARIANT ({fault}): {MODEL_FAULTS[fault]}.'''}
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0", parameter REG_INPUTA_RST = "RST0",
    parameter REG_INPUTB_CLK = "NONE", parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
    parameter REG_INPUTC_CLK = "NONE", parameter REG_INPUTC_CE = "CE0", parameter REG_INPUTC_RST = "RST0",
    parameter REG_PIPELINE_CLK = "NONE", parameter REG_PIPELINE_CE = "CE0", parameter REG_PIPELINE_RST = "RST0",
    parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0", parameter REG_OUTPUT_RST = "RST0",
    parameter CLK0_DIV = "ENABLED", parameter CLK1_DIV = "ENABLED", parameter CLK2_DIV = "ENABLED",
    parameter CLK3_DIV = "ENABLED", parameter HIGHSPEED_CLK = "NONE", parameter GSR = "ENABLED",
    parameter CAS_MATCH_REG = "FALSE", parameter SOURCEB_MODE = "B_SHIFT",
    parameter MULT_BYPASS = "DISABLED", parameter RESETMODE = "SYNC"
) (
    input {pins('A', 18)},
    input {pins('B', 18)},
    input {pins('C', 18)},
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    input {pins('SRIA', 18)},
    input {pins('SRIB', 18)},
    output {pins('SROA', 18)},
    output {pins('SROB', 18)},
    output {pins('ROA', 18)},
    output {pins('ROB', 18)},
    output {pins('ROC', 18)},
    output {pins('P', 36)},
    output SIGNEDP
);
    function sel4(input [8*4-1:0] name, input s0, input s1, input s2, input s3);
        sel4 = name == "CE0" || name == "RST0" || name == "CLK0" ? s0 :
               name == "CE1" || name == "RST1" || name == "CLK1" ? s1 :
               name == "CE2" || name == "RST2" || name == "CLK2" ? s2 : s3;
    endfunction
    initial begin
        if (REG_PIPELINE_CLK != "NONE" || MULT_BYPASS != "DISABLED" || REG_INPUTC_CLK != "NONE"
            || (RESETMODE != "SYNC" && RESETMODE != "ASYNC"))
            $fatal(1, "MULT18X18D model (ttforge): a setting outside the modelled subset");
    end
    wire [17:0] a_in = {bus('A', 18)};
    wire [17:0] b_in = {bus('B', 18)};

    // a register: RST over CE (RESETMODE "SYNC": at the clock edge; "ASYNC": at once)
    wire [18:0] a_r, b_r;
    ttforge_mult18_reg #(.W(19), .ASYNC(RESETMODE == "ASYNC")) reg_a (
        .clk(sel4(REG_INPUTA_CLK, CLK0, CLK1, CLK2, CLK3)), .ce({ce('REG_INPUTA_CE')}),
        .rst(sel4(REG_INPUTA_RST, RST0, RST1, RST2, RST3)), .d({{SIGNEDA, a_in}}), .q(a_r));
    ttforge_mult18_reg #(.W(19), .ASYNC(RESETMODE == "ASYNC")) reg_b (
        .clk(sel4(REG_INPUTB_CLK, CLK0, CLK1, CLK2, CLK3)), .ce({ce('REG_INPUTB_CE')}),
        .rst(sel4(REG_INPUTB_RST, RST0, RST1, RST2, RST3)), .d({{SIGNEDB, b_in}}), .q(b_r));

    wire a_registered = {a_reg};
    wire [17:0] a_q = a_registered ? a_r[17:0] : a_in;
    wire sa_q = a_registered ? a_r[18] : SIGNEDA;
    wire [17:0] b_q = REG_INPUTB_CLK != "NONE" ? b_r[17:0] : b_in;
    wire sb_q = REG_INPUTB_CLK != "NONE" ? b_r[18] : SIGNEDB;
    // each operand extended to 19 bits by its sign (SIGNED high) or a zero
    wire signed [18:0] a_x = {{{sa} & a_q[17], a_q}};
    wire signed [18:0] b_x = {{{sb} & b_q[17], b_q}};
    wire signed [37:0] prod = a_x * b_x;

    wire [36:0] p_r;
    ttforge_mult18_reg #(.W(37), .ASYNC(RESETMODE == "ASYNC")) reg_p (
        .clk(sel4(REG_OUTPUT_CLK, CLK0, CLK1, CLK2, CLK3)), .ce({ce('REG_OUTPUT_CE')}),
        .rst(sel4(REG_OUTPUT_RST, RST0, RST1, RST2, RST3)), .d({{{sa} | {sb}, prod[35:0]}}), .q(p_r));

    wire out_registered = {out_reg};
    assign {bus('P', 36)} = out_registered ? p_r[35:0] : prod[35:0];
    assign SIGNEDP = out_registered ? p_r[36] : ({sa} | {sb});
    assign {{{pins('SROA', 18)}}} = 18'd0;
    assign {{{pins('SROB', 18)}}} = 18'd0;
    assign {{{pins('ROA', 18)}}} = a_q;
    assign {{{pins('ROB', 18)}}} = b_q;
    assign {{{pins('ROC', 18)}}} = 18'd0;
endmodule
""" + _REG_MODULE

