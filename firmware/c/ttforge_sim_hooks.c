/* ttforge C driver hooks for the Verilated model: see ttforge_sim_hooks.h. */
#include "ttforge_sim_hooks.h"

static int sim_recv(void *ctx, int32_t *out, uint32_t max, uint32_t *n) {
    int32_t got;
    if (ttf_axis_received(ctx) == 0) return 0;
    got = ttf_axis_take(ctx, out, max);
    if (got < 0) return -1;
    *n = (uint32_t)got;
    return 1;
}

static void sim_wait(void *ctx, uint32_t cycles) { ttf_sim_tick(ctx, cycles); }

void ttfd_sim_hooks(ttfd_hooks *hooks, void *sim) {
    hooks->ctx = sim;
    hooks->read32 = ttf_axil_read32;
    hooks->write32 = ttf_axil_write32;
    hooks->stream_send = ttf_axis_send;
    hooks->stream_recv = sim_recv;
    hooks->wait = sim_wait;
}

void ttfd_sim_set_out_count(void *sim, uint32_t n) { ttf_axis_set_out_count(sim, n); }
