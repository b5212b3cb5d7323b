// ttforge native harness: the Verilated ttforge_accel with an AXI4-Lite master and an
// AXI4-Stream source and sink, all advanced by one clock function.
//
// C++17. Include after the Verilator-generated model header is on the include path
// (Vttforge_accel.h) and with the generated register header (ttforge_regs.h) of the
// same config. The C ABI over this class is axil_shim.h (implemented in ttf_sim.cpp).
//
// Clocking: tick() evaluates the model with clk low (so every combinational output
// reflects the inputs driven for this cycle), samples all handshakes (VALID && READY),
// raises clk (registers update), then lets the stream source and sink choose their
// signals for the next cycle. Inputs only change after a rising edge, as from
// flip-flops of the same clock. While rst is high no handshake counts and the stream
// source offers nothing (AXI4 A3.1.2: VALID is LOW during reset): a core whose TVALID
// holds its power-up value until the first edge under reset must not give a beat.
#ifndef TTF_SIM_H
#define TTF_SIM_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "Vttforge_accel.h"
#include "verilated.h"
#include "ttforge_regs.h"
#include "axil_shim.h"
#include "axil_master.h"

namespace ttf {

// stream lane width W = ceil(act_bits / 8) * 8 and elements per beat E
constexpr unsigned kActBits = TTFORGE_CFG_ACT_BITS;
constexpr unsigned kLaneBits = (TTFORGE_CFG_ACT_BITS + 7u) / 8u * 8u;
constexpr unsigned kElems = TTFORGE_CFG_STREAM_ELEMS;
constexpr unsigned kTdataBits = kLaneBits * kElems;
constexpr unsigned kTdataWords = (kTdataBits + 31u) / 32u;

// xorshift64* (Vigna); a seed is mixed by splitmix64 so that 0 is a valid seed
struct XorShift {
    uint64_t s = 1;
    void seed(uint64_t v) {
        uint64_t z = v + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        s = z ? z : 1;
    }
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    // true with probability thr / 2^53 (thr from prob())
    bool draw(uint64_t thr) { return (next() >> 11) < thr; }
    static uint64_t prob(double p) {
        if (!(p > 0.0)) return 0;
        if (p >= 1.0) return 1ull << 53;
        return static_cast<uint64_t>(p * 9007199254740992.0);
    }
};

// tdata of any width: Verilator maps <= 64 bits to an integer, wider to VlWide<N>
template <typename T>
inline void put_tdata(T& port, const uint32_t* w) {
    if constexpr (std::is_integral<T>::value) {
        uint64_t v = w[0];
        if (kTdataWords > 1) v |= static_cast<uint64_t>(w[1]) << 32;
        port = static_cast<T>(v);
    } else {
        for (unsigned i = 0; i < kTdataWords; ++i) port[i] = w[i];
    }
}

template <typename T>
inline void get_tdata(const T& port, uint32_t* w) {
    if constexpr (std::is_integral<T>::value) {
        uint64_t v = static_cast<uint64_t>(port);
        w[0] = static_cast<uint32_t>(v);
        if (kTdataWords > 1) w[1] = static_cast<uint32_t>(v >> 32);
    } else {
        for (unsigned i = 0; i < kTdataWords; ++i) w[i] = port[i];
    }
}

// lane j of a packed beat (kLaneBits wide, at most 32 since act_bits <= 32)
inline uint32_t lane_bits(const uint32_t* w, unsigned j) {
    unsigned bit = j * kLaneBits;
    uint64_t lo = w[bit / 32];
    if (bit / 32 + 1 < kTdataWords) lo |= static_cast<uint64_t>(w[bit / 32 + 1]) << 32;
    lo >>= bit % 32;
    return kLaneBits >= 32 ? static_cast<uint32_t>(lo)
                           : static_cast<uint32_t>(lo & ((1ull << kLaneBits) - 1));
}

inline void set_lane(uint32_t* w, unsigned j, uint32_t v) {
    unsigned bit = j * kLaneBits;
    uint64_t mask = kLaneBits >= 32 ? 0xFFFFFFFFull : ((1ull << kLaneBits) - 1);
    uint64_t x = (static_cast<uint64_t>(v) & mask) << (bit % 32);
    w[bit / 32] |= static_cast<uint32_t>(x);
    if (bit / 32 + 1 < kTdataWords) w[bit / 32 + 1] |= static_cast<uint32_t>(x >> 32);
}

inline int32_t sign_extend(uint32_t v, unsigned bits) {
    if (bits >= 32) return static_cast<int32_t>(v);
    uint32_t m = 1u << (bits - 1);
    v &= (1u << bits) - 1;
    return static_cast<int32_t>((v ^ m) - m);
}

class Sim {
  public:
    Sim() : ctx_(new VerilatedContext), m_(new Vttforge_accel{ctx_.get(), "ttforge_accel"}) {
        rng_.seed(0);
        m_->clk = 0;
        m_->rst = 1;
        idle_bus();
        m_->s_axis_tvalid = 0;
        m_->s_axis_tlast = 0;
        m_->m_axis_tready = 1;
        m_->eval();
        reset(4);
    }
    ~Sim() { m_->final(); }

    Vttforge_accel& model() { return *m_; }
    uint64_t cycles() const { return cycle_; }
    uint64_t last_handshake() const { return last_hs_; }
    int irq() const { return m_->irq; }

    // ------------------------------------------------------------------ clock
    inline void tick() {
        Vttforge_accel& m = *m_;
        m.clk = 0;
        m.eval();
        // handshakes of this cycle (inputs and outputs settled before the edge); none in
        // reset (the AXI4-Lite master is idle then: idle_bus() in reset())
        const bool live = !m.rst;
        const bool s_fire = live && m.s_axis_tvalid && m.s_axis_tready;
        const bool m_fire = live && m.m_axis_tvalid && m.m_axis_tready;
        if (m_fire) capture_beat();
        axil_.sample(m);
        m.clk = 1;
        m.eval();
        ++cycle_;
        if (s_fire || m_fire) last_hs_ = cycle_;
        // the source and sink choose the next cycle's signals
        if (s_fire) {
            ++tx_pos_;
            tx_valid_ = false;
        }
        if (!tx_valid_ && tx_pos_ < tx_last_.size()) {
            if (!(gap_thr_ && rng_.draw(gap_thr_))) {
                put_tdata(m.s_axis_tdata, &tx_words_[tx_pos_ * kTdataWords]);
                m.s_axis_tlast = tx_last_[tx_pos_];
                tx_valid_ = true;
            }
        }
        m.s_axis_tvalid = live && tx_valid_;
        if (bp_thr_) m.m_axis_tready = !rng_.draw(bp_thr_);
    }

    void reset(uint32_t n) {
        if (n == 0) n = 1;
        m_->rst = 1;
        idle_bus();
        m_->s_axis_tvalid = 0;
        for (uint32_t i = 0; i < n; ++i) tick();
        m_->rst = 0;
        m_->s_axis_tvalid = tx_valid_;
    }

    // ------------------------------------------------------------------ AXI4-Lite
    void set_timeout(uint32_t c) { axil_.set_timeout(c); }

    int write32(uint32_t addr, uint32_t data) {
        return axil_.write32(*m_, [this] { tick(); }, addr, data);
    }

    int read32(uint32_t addr, uint32_t* data) {
        return axil_.read32(*m_, [this] { tick(); }, addr, data);
    }

    // a 48-bit counter: LO first (latches HI), then HI
    int read_counter(uint32_t lo_addr, uint64_t* value) {
        uint32_t lo = 0, hi = 0;
        int r = read32(lo_addr, &lo);
        if (r != TTF_AXIL_OKAY) return r;
        r = read32(lo_addr + 4, &hi);
        *value = (static_cast<uint64_t>(hi) << 32) | lo;
        return r;
    }

    // ------------------------------------------------------------------ AXI4-Stream
    void config_streams(uint64_t seed, double gaps, double backpressure) {
        rng_.seed(seed);
        gap_thr_ = XorShift::prob(gaps);
        bp_thr_ = XorShift::prob(backpressure);
        if (!bp_thr_) m_->m_axis_tready = 1;
    }

    // queue one vector (packed into beats now, so the clock loop only copies words)
    void send(const int32_t* elems, size_t n) {
        if (n == 0) return;
        size_t beats = (n + kElems - 1) / kElems;
        size_t base = tx_words_.size();
        tx_words_.resize(base + beats * kTdataWords, 0u);
        for (size_t i = 0; i < n; ++i)
            set_lane(&tx_words_[base + (i / kElems) * kTdataWords], static_cast<unsigned>(i % kElems),
                     static_cast<uint32_t>(elems[i]));
        for (size_t b = 0; b < beats; ++b) tx_last_.push_back(b + 1 == beats);
    }

    size_t beats_sent() const { return tx_pos_; }
    size_t beats_queued() const { return tx_last_.size(); }

    void set_out_count(uint32_t n) { out_count_ = n; }
    size_t received() const { return rx_len_.size(); }
    size_t bad_vectors() const { return rx_bad_; }
    size_t taken() const { return rx_taken_; }

    // the oldest untaken vector; -1 if none
    int64_t take(int32_t* out, size_t max) {
        if (rx_taken_ >= rx_len_.size()) return -1;
        size_t len = rx_len_[rx_taken_];
        for (size_t i = 0; i < len && i < max; ++i) out[i] = rx_data_[rx_off_ + i];
        rx_off_ += len;
        ++rx_taken_;
        return static_cast<int64_t>(len);
    }

    const std::vector<int32_t>& rx_data() const { return rx_data_; }
    const std::vector<uint32_t>& rx_lengths() const { return rx_len_; }

    // clock until `count` vectors have arrived or `timeout` cycles pass with no stream
    // handshake; true when they arrived
    bool wait_received(size_t count, uint64_t timeout) {
        uint64_t start = cycle_;
        if (last_hs_ < start) last_hs_ = start;
        while (rx_len_.size() < count) {
            tick();
            if (cycle_ - last_hs_ > timeout) return false;
        }
        return true;
    }

  private:
    void idle_bus() { axil_.idle(*m_); }

    void capture_beat() {
        uint32_t w[kTdataWords];
        get_tdata(m_->m_axis_tdata, w);
        for (unsigned j = 0; j < kElems; ++j) {
            if (out_count_ && cur_len_ >= out_count_) break;
            rx_data_.push_back(sign_extend(lane_bits(w, j), kLaneBits));
            ++cur_len_;
        }
        ++cur_beats_;
        if (m_->m_axis_tlast) {
            if (out_count_ && cur_beats_ != (out_count_ + kElems - 1) / kElems) ++rx_bad_;
            rx_len_.push_back(cur_len_);
            cur_len_ = 0;
            cur_beats_ = 0;
        }
    }

    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vttforge_accel> m_;
    uint64_t cycle_ = 0;
    uint64_t last_hs_ = 0;
    AxilMaster<Vttforge_accel> axil_;
    // stream source: packed beats, the one being offered
    XorShift rng_;
    uint64_t gap_thr_ = 0, bp_thr_ = 0;
    std::vector<uint32_t> tx_words_;
    std::vector<uint8_t> tx_last_;
    size_t tx_pos_ = 0;
    bool tx_valid_ = false;
    // stream sink
    uint32_t out_count_ = 0;
    std::vector<int32_t> rx_data_;
    std::vector<uint32_t> rx_len_;
    uint32_t cur_len_ = 0, cur_beats_ = 0;
    size_t rx_bad_ = 0, rx_taken_ = 0, rx_off_ = 0;
};

}  // namespace ttf

#endif  // TTF_SIM_H
