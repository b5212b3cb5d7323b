/* ttforge C training driver hooks for the Verilated training top: see ttforge_train_sim_hooks.h. */
#include "ttforge_train_sim_hooks.h"

static void sim_wait(void *ctx, uint32_t cycles) { ttf_sim_tick(ctx, cycles); }

void ttftd_sim_hooks(ttftd_hooks *hooks, void *sim) {
    hooks->ctx = sim;
    hooks->read32 = ttf_axil_read32;
    hooks->write32 = ttf_axil_write32;
    hooks->stream_send = ttf_axis_send;
    hooks->wait = sim_wait;
}
