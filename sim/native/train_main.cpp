// The native Verilator harness of the training engine (ttforge.sim.train_native).
//
// Drives the flat-port wrapper ``ttforge_train_engine`` of ttforge.hw.trainer.TrainEngine from a
// line protocol on stdin (one command per line, answers on stdout):
//   w SEL ADDR VALUE         host write (one cycle)
//   r SEL ADDR COUNT         host reads of COUNT consecutive addresses -> "v x0 x1 ..."
//   p BATCH BW_LOG IN_COUNT IN_BASE STOCH   program registers
//   g RNG                    load the generator
//   b N v0 .. v(N-1)         enable, stream N elements, run to the end of the step
//                            -> "done CYCLES" | "error CODE OP" | "timeout"
//   s                        -> "status RNG STEPS CYCLES MAC_CYCLES CHANGED SIM_CYCLES"
//   q                        quit
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "Vttforge_train_engine.h"
#include "verilated.h"

static Vttforge_train_engine* top;
static uint64_t sim_cycles = 0;

static void tick() {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
    ++sim_cycles;
}

// every input of the engine at a defined value (a host that drives nothing yet): without
// this they are whatever the model starts with, random under Verilator's
// +verilator+rand+reset+2 (a random enable or rng_load during reset hung a step or loaded
// the generator with 0)
static void idle_inputs() {
    top->host_sel = 0;
    top->host_addr = 0;
    top->host_wdata = 0;
    top->host_we = 0;
    top->host_re = 0;
    top->prog_batch = 0;
    top->prog_bw_log = 0;
    top->prog_in_count = 0;
    top->prog_in_base = 0;
    top->prog_stoch = 0;
    top->prog_rng_load = 0;
    top->prog_rng_value = 0;
    top->ctl_enable = 0;
    top->ctl_clear_error = 0;
    top->ctl_soft_reset = 0;
    top->inp_valid = 0;
    top->inp_payload = 0;
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    top = new Vttforge_train_engine;
    top->clk = 0;
    top->rst = 1;
    idle_inputs();
    tick();
    tick();
    top->rst = 0;
    tick();
    const uint64_t limit = argc > 1 ? strtoull(argv[1], nullptr, 10) : 4000000000ULL;
    std::string line;
    std::ios::sync_with_stdio(false);
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        char cmd = 0;
        in >> cmd;
        if (cmd == 'q') break;
        if (cmd == 'w') {
            uint64_t sel, addr;
            int64_t value;
            in >> sel >> addr >> value;
            top->host_sel = sel;
            top->host_addr = addr;
            top->host_wdata = (uint32_t)value;
            top->host_we = 1;
            tick();
            top->host_we = 0;
        } else if (cmd == 'r') {
            uint64_t sel, addr, count;
            in >> sel >> addr >> count;
            std::string out = "v";
            for (uint64_t i = 0; i < count; ++i) {
                top->host_sel = sel;
                top->host_addr = addr + i;
                top->host_re = 1;
                tick();
                top->host_re = 0;
                // the engine's read latency (three cycles today): wait for rvalid
                for (int k = 0; k < 8 && !top->host_rvalid; ++k)
                    tick();
                out += " " + std::to_string((uint32_t)top->host_rdata);
            }
            std::cout << out << "\n" << std::flush;
        } else if (cmd == 'p') {
            uint64_t batch, bw_log, in_count, in_base, stoch;
            in >> batch >> bw_log >> in_count >> in_base >> stoch;
            top->prog_batch = batch;
            top->prog_bw_log = bw_log;
            top->prog_in_count = in_count;
            top->prog_in_base = in_base;
            top->prog_stoch = stoch;
        } else if (cmd == 'g') {
            uint64_t rng;
            in >> rng;
            top->prog_rng_value = (uint32_t)rng;
            top->prog_rng_load = 1;
            tick();
            top->prog_rng_load = 0;
        } else if (cmd == 'b') {
            uint64_t n;
            in >> n;
            std::vector<int64_t> vals(n);
            for (uint64_t i = 0; i < n; ++i) in >> vals[i];
            const uint64_t c0 = top->st_cycles;
            top->ctl_enable = 1;
            for (uint64_t i = 0; i < n; ++i) {
                top->inp_payload = (uint32_t)vals[i];
                top->inp_valid = 1;
                top->eval();
                uint64_t guard = 0;
                while (!top->inp_ready) {
                    tick();
                    if (top->st_error || ++guard > 1000000) break;
                }
                tick();
                if (top->st_error) break;
            }
            top->inp_valid = 0;
            top->ctl_enable = 0;
            uint64_t waited = 0;
            bool done = false;
            while (waited < limit) {
                top->eval();
                if (top->st_done_pulse) { done = true; tick(); break; }
                if (top->st_error) break;
                tick();
                ++waited;
            }
            if (done) {
                std::cout << "done " << (uint64_t)(top->st_cycles - c0) << "\n" << std::flush;
            } else if (top->st_error) {
                std::cout << "error " << (int)top->st_error_code << " " << (int)top->st_error_op << "\n"
                          << std::flush;
                top->ctl_clear_error = 1;
                tick();
                top->ctl_clear_error = 0;
            } else {
                std::cout << "timeout\n" << std::flush;
            }
        } else if (cmd == 's') {
            std::cout << "status " << (uint64_t)(uint32_t)top->st_rng << " " << (uint64_t)top->st_steps << " "
                      << (uint64_t)top->st_cycles << " " << (uint64_t)top->st_mac_cycles << " "
                      << (uint64_t)top->st_changed << " " << sim_cycles << "\n" << std::flush;
        }
    }
    top->final();
    delete top;
    return 0;
}
