// ttforge native harness: the C ABI of axil_shim.h over ttf::Sim.
#include "ttf_sim.h"

#include <new>

namespace {
inline ttf::Sim* S(void* p) { return static_cast<ttf::Sim*>(p); }
}  // namespace

extern "C" {

void* ttf_sim_open(void) {
    try {
        return new ttf::Sim();
    } catch (...) {
        return nullptr;
    }
}

void ttf_sim_close(void* sim) { delete S(sim); }

void ttf_sim_reset(void* sim, uint32_t cycles) { S(sim)->reset(cycles); }

void ttf_sim_tick(void* sim, uint32_t n) {
    ttf::Sim* s = S(sim);
    for (uint32_t i = 0; i < n; ++i) s->tick();
}

uint64_t ttf_sim_cycles(void* sim) { return S(sim)->cycles(); }

int ttf_sim_irq(void* sim) { return S(sim)->irq(); }

int ttf_axil_write32(void* sim, uint32_t addr, uint32_t data) { return S(sim)->write32(addr, data); }

int ttf_axil_read32(void* sim, uint32_t addr, uint32_t* data) { return S(sim)->read32(addr, data); }

void ttf_axil_set_timeout(void* sim, uint32_t cycles) { S(sim)->set_timeout(cycles); }

void ttf_axis_config(void* sim, uint64_t seed, double gaps, double backpressure) {
    S(sim)->config_streams(seed, gaps, backpressure);
}

int ttf_axis_send(void* sim, const int32_t* elems, uint32_t n) {
    if (n == 0 || elems == nullptr) return -1;
    S(sim)->send(elems, n);
    return 0;
}

void ttf_axis_set_out_count(void* sim, uint32_t n) { S(sim)->set_out_count(n); }

uint32_t ttf_axis_received(void* sim) {
    ttf::Sim* s = S(sim);
    return static_cast<uint32_t>(s->received() - s->taken());
}

int32_t ttf_axis_take(void* sim, int32_t* out, uint32_t max) {
    return static_cast<int32_t>(S(sim)->take(out, max));
}

int ttf_axis_wait(void* sim, uint32_t count, uint64_t timeout) {
    return S(sim)->wait_received(count, timeout) ? 0 : -1;
}

}  // extern "C"
