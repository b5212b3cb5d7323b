// Properties of the generated ttforge_train that the shared AXI4-Lite module
// (ttforge_props.sv, instantiated next to this one) does not cover: the s_axis slave
// with its TLAST check, the AR gate's helper invariants and the reachability of the
// window accesses. Appended to the module by ttforge.sim.formal (the SystemVerilog
// `bind`); only under `ifdef FORMAL, nothing here is synthesised.
//
// Environment: as in ttforge_props.sv (the masters keep VALID and payload until READY,
// no VALID in reset); software may write any register at any time, CMD.SOFT_RESET
// included.
//
// Properties (assert), every cycle not right after reset:
//   s_axis : no TREADY the cycle after reset (s_tready_reset); with CTRL.TLAST_CHECK, a
//            beat the engine takes whose TLAST disagrees with the sample boundary (the
//            label is element IN_COUNT of the sample, counted here from the beats)
//            raises STATUS.ERROR with TLAST_EARLY (16) or TLAST_LATE (17) in the next
//            cycle (s_tlast_flagged); while that error stands no beat reaches the
//            engine (s_no_beat_after_tlast_error); without the check TLAST raises
//            nothing (s_tlast_quiet);
//   helper : the AR gate's phase is 0..2 (gate_phase); it waits for an element (phase
//            1) exactly while one host-port read is in flight (gate_fetch); the gate
//            and the slave's AR register never both hold a read (gate_exclusive); the
//            beat position counted here equals the top's (beat_tracked); a window
//            write reaches the host port only while its B response stands
//            (window_write_spaced).
module ttforge_train_formal_props #(
    parameter integer HELPERS = 1
) (
    input wire clk,
    input wire rst,
    input wire s_axil_bvalid,
    input wire s_axis_tvalid,
    input wire s_axis_tready,
    input wire s_axis_tlast,
    // from the AXI4-Lite property module: window accesses answered OKAY
    input wire window_read_ok,
    input wire window_write_ok,
    // internal signals of the top
    input wire g_full,
    input wire [1:0] g_phase,
    input wire ar_full,
    input wire h_v,
    input wire q_v,
    input wire hq_v,
    input wire hr_v,
    input wire hp_v,
    input wire host_rvalid,
    input wire any_we,
    input wire tlast_check,
    input wire [15:0] in_count,
    input wire status_error,
    input wire [7:0] error_code,
    input wire clear,
    input wire eng_ready,
    input wire t_drop,
    input wire [15:0] t_pos
);
`ifdef FORMAL
    reg f_past_valid = 1'b0;
    always @(posedge clk) f_past_valid <= 1'b1;

    // ---------------------------------------------------------------- the sample boundary
    // a beat the engine takes (not one discarded after TLAST_LATE), and where it falls
    wire f_take = s_axis_tvalid && s_axis_tready && !t_drop;
    reg [15:0] f_pos = 16'd0;
    always @(posedge clk) begin
        if (rst || !eng_ready)
            f_pos <= 0;
        else if (f_take)
            f_pos <= (f_pos == in_count) ? 16'd0 : f_pos + 16'd1;
    end
    wire f_label = f_pos == in_count;
    wire f_tlast_err = status_error && (error_code == 8'd16 || error_code == 8'd17);

    always @(posedge clk) begin
        if (f_past_valid && $past(rst))
            s_tready_reset: assert(!s_axis_tready);
        if (f_past_valid && !$past(rst) && !rst) begin
            if ($past(f_take && tlast_check && (s_axis_tlast != f_label)))
                s_tlast_flagged: assert(status_error
                                        && error_code == ($past(f_label) ? 8'd17 : 8'd16));
            if ($past(!status_error && !tlast_check))
                s_tlast_quiet: assert(!f_tlast_err);
        end
        // (stronger than "no beat is taken": the engine is not even open for samples;
        // TREADY may be high only to discard the rest of a TLAST_LATE packet)
        if (f_past_valid && !rst && f_tlast_err)
            s_no_beat_after_tlast_error: assert(!eng_ready && !f_take);
    end

    // ---------------------------------------------------------------- helper invariants
    always @(posedge clk) begin
        if (HELPERS && f_past_valid && !rst) begin
            gate_phase: assert(g_phase != 2'd3);
            // a window read is in exactly one stage of the host port's six-cycle read
            gate_fetch: assert(((g_full && g_phase == 2'd1) == (h_v || q_v || hq_v || hr_v || hp_v || host_rvalid))
                               && {2'b0, h_v} + {2'b0, q_v} + {2'b0, hq_v} + {2'b0, hr_v} + {2'b0, hp_v}
                                  + {2'b0, host_rvalid} <= 3'd1);
            gate_exclusive: assert(!(g_full && ar_full));
            beat_tracked: assert(f_pos == t_pos);
            // a window write reaches the host port in the cycle after the slave strobed
            // it, while its B response stands, so the next one is two cycles later: a
            // window read waits for the host port at most one cycle
            window_write_spaced: assert(!any_we || s_axil_bvalid);
        end
    end

    // ---------------------------------------------------------------- reachability
    always @(posedge clk) begin
        if (f_past_valid && !rst) begin
            cover_window_read: cover(window_read_ok);
            cover_window_write: cover(window_write_ok);
            cover_tlast_error: cover(f_tlast_err);
        end
    end
`endif
endmodule
