// A smoke program for the Verilated training top behind train_axil_sim.cpp: reset, read
// ID over AXI4-Lite, print it. The build's real users are C drivers linked against the
// model (ttforge.firmware.train_c_driver.link_train_c_driver).
#include <cstdint>
#include <cstdio>

#include "axil_shim.h"
#include "ttforge_train_regs.h"

int main() {
    void* sim = ttf_sim_open();
    if (!sim) return 1;
    uint32_t id = 0;
    int r = ttf_axil_read32(sim, TTFORGE_TRAIN_ID_ADDR, &id);
    std::printf("id 0x%08X resp %d\n", static_cast<unsigned>(id), r);
    ttf_sim_close(sim);
    return (r == TTF_AXIL_OKAY && id == TTFORGE_TRAIN_MAGIC) ? 0 : 2;
}
