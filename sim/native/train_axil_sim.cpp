// The C ABI of axil_shim.h over the Verilated training top (ttforge_train,
// ttforge.hw.trainer.top.TrainAccel): an AXI4-Lite master and an AXI4-Stream source of
// samples, one element per beat, all advanced by one clock function. A C driver
// (firmware/c/ttforge_train_driver.c) links against this file and the model.
//
// Clocking as in ttf_sim.h: evaluate with clk low, sample the handshakes, raise clk,
// then let the source choose its signals for the next cycle; the AXI4-Lite master is
// the harnesses' one (axil_master.h). The training top has no
// m_axis: the sink functions of axil_shim.h report nothing received.
#include <cstdint>
#include <deque>
#include <memory>
#include <new>

#include "Vttforge_train.h"
#include "axil_master.h"
#include "axil_shim.h"
#include "verilated.h"

namespace {

class TrainSim {
  public:
    TrainSim() : ctx_(new VerilatedContext), m_(new Vttforge_train{ctx_.get(), "ttforge_train"}) {
        m_->clk = 0;
        m_->rst = 1;
        axil_.idle(*m_);
        m_->s_axis_tvalid = 0;
        m_->s_axis_tlast = 0;
        m_->eval();
        reset(4);
    }
    ~TrainSim() { m_->final(); }

    uint64_t cycles() const { return cycle_; }
    int irq() const { return m_->irq; }

    void tick() {
        Vttforge_train& m = *m_;
        m.clk = 0;
        m.eval();
        const bool s_fire = m.s_axis_tvalid && m.s_axis_tready;
        axil_.sample(m);
        m.clk = 1;
        m.eval();
        ++cycle_;
        if (s_fire) {
            tx_.pop_front();
            tx_valid_ = false;
        }
        if (!tx_valid_ && !tx_.empty() && !(gap_thr_ && draw() < gap_thr_)) {
            m.s_axis_tdata = tx_.front().first;
            m.s_axis_tlast = tx_.front().second;
            tx_valid_ = true;
        }
        m.s_axis_tvalid = tx_valid_;
    }

    void reset(uint32_t n) {
        m_->rst = 1;
        for (uint32_t i = 0; i < (n ? n : 1); ++i) tick();
        m_->rst = 0;
    }

    void set_timeout(uint32_t c) { axil_.set_timeout(c); }
    int write32(uint32_t addr, uint32_t data) { return axil_.write32(*m_, [this] { tick(); }, addr, data); }
    int read32(uint32_t addr, uint32_t* data) { return axil_.read32(*m_, [this] { tick(); }, addr, data); }

    void config(uint64_t seed, double gaps) {
        rng_ = seed * 0x9E3779B97F4A7C15ull + 1u;
        gap_thr_ = gaps > 0.0 ? static_cast<uint64_t>((gaps >= 1.0 ? 1.0 : gaps) * 9007199254740992.0) : 0;
    }

    // one sample: one element per beat (its low bits are the lane), tlast on the last
    void send(const int32_t* e, uint32_t n) {
        for (uint32_t i = 0; i < n; ++i) tx_.emplace_back(static_cast<uint32_t>(e[i]), i + 1 == n);
    }

  private:
    uint64_t draw() {  // xorshift64*, 53 bits
        rng_ ^= rng_ >> 12;
        rng_ ^= rng_ << 25;
        rng_ ^= rng_ >> 27;
        return (rng_ * 0x2545F4914F6CDD1Dull) >> 11;
    }

    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vttforge_train> m_;
    uint64_t cycle_ = 0;
    ttf::AxilMaster<Vttforge_train> axil_;
    std::deque<std::pair<uint32_t, bool>> tx_;
    bool tx_valid_ = false;
    uint64_t rng_ = 1, gap_thr_ = 0;
};

inline TrainSim* S(void* p) { return static_cast<TrainSim*>(p); }

}  // namespace

extern "C" {

void* ttf_sim_open(void) {
    try {
        return new TrainSim();
    } catch (...) {
        return nullptr;
    }
}

void ttf_sim_close(void* sim) { delete S(sim); }
void ttf_sim_reset(void* sim, uint32_t cycles) { S(sim)->reset(cycles); }

void ttf_sim_tick(void* sim, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) S(sim)->tick();
}

uint64_t ttf_sim_cycles(void* sim) { return S(sim)->cycles(); }
int ttf_sim_irq(void* sim) { return S(sim)->irq(); }
int ttf_axil_write32(void* sim, uint32_t addr, uint32_t data) { return S(sim)->write32(addr, data); }
int ttf_axil_read32(void* sim, uint32_t addr, uint32_t* data) { return S(sim)->read32(addr, data); }
void ttf_axil_set_timeout(void* sim, uint32_t cycles) { S(sim)->set_timeout(cycles); }
// back-pressure applies to m_axis, which the training top does not have
void ttf_axis_config(void* sim, uint64_t seed, double gaps, double) { S(sim)->config(seed, gaps); }

int ttf_axis_send(void* sim, const int32_t* elems, uint32_t n) {
    if (n == 0 || elems == nullptr) return -1;
    S(sim)->send(elems, n);
    return 0;
}

void ttf_axis_set_out_count(void*, uint32_t) {}
uint32_t ttf_axis_received(void*) { return 0; }
int32_t ttf_axis_take(void*, int32_t*, uint32_t) { return -1; }
int ttf_axis_wait(void*, uint32_t, uint64_t) { return -1; }

}  // extern "C"
