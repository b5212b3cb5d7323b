// The AXI4-Lite master of the native harnesses (ttf_sim.h for ttforge_accel,
// train_axil_sim.cpp for ttforge_train), over any Verilated model with s_axil_* ports.
//
// The owner clocks the model: its tick() evaluates with clk low, calls sample() (the
// handshakes of this cycle), then raises clk. write32/read32 drive one access and call
// the owner's tick until the response, or return TTF_AXIL_TIMEOUT after timeout cycles
// (the valid signals dropped). C++17.
#ifndef TTF_AXIL_MASTER_H
#define TTF_AXIL_MASTER_H

#include <cstdint>

#include "axil_shim.h"

namespace ttf {

template <class Model>
class AxilMaster {
  public:
    // the handshakes of this cycle (with clk low, outputs settled before the edge)
    void sample(const Model& m) {
        aw_fire_ = m.s_axil_awvalid && m.s_axil_awready;
        w_fire_ = m.s_axil_wvalid && m.s_axil_wready;
        b_fire_ = m.s_axil_bvalid && m.s_axil_bready;
        if (b_fire_) bresp_ = m.s_axil_bresp;
        ar_fire_ = m.s_axil_arvalid && m.s_axil_arready;
        r_fire_ = m.s_axil_rvalid && m.s_axil_rready;
        if (r_fire_) {
            rresp_ = m.s_axil_rresp;
            rdata_ = m.s_axil_rdata;
        }
    }

    void idle(Model& m) {
        m.s_axil_awvalid = 0;
        m.s_axil_wvalid = 0;
        m.s_axil_bready = 0;
        m.s_axil_arvalid = 0;
        m.s_axil_rready = 0;
        m.s_axil_awaddr = 0;
        m.s_axil_araddr = 0;
        m.s_axil_wdata = 0;
        m.s_axil_wstrb = 0;
    }

    void set_timeout(uint32_t c) { timeout_ = c ? c : TTF_AXIL_DEFAULT_TIMEOUT; }

    template <class Tick>
    int write32(Model& m, Tick&& tick, uint32_t addr, uint32_t data) {
        m.s_axil_awaddr = addr;
        m.s_axil_awvalid = 1;
        m.s_axil_wdata = data;
        m.s_axil_wstrb = 0xF;
        m.s_axil_wvalid = 1;
        m.s_axil_bready = 1;
        for (uint32_t n = 0; n < timeout_; ++n) {
            tick();
            if (aw_fire_) m.s_axil_awvalid = 0;
            if (w_fire_) m.s_axil_wvalid = 0;
            if (b_fire_) {
                m.s_axil_bready = 0;
                return static_cast<int>(bresp_);
            }
        }
        idle(m);
        return TTF_AXIL_TIMEOUT;
    }

    template <class Tick>
    int read32(Model& m, Tick&& tick, uint32_t addr, uint32_t* data) {
        m.s_axil_araddr = addr;
        m.s_axil_arvalid = 1;
        m.s_axil_rready = 1;
        for (uint32_t n = 0; n < timeout_; ++n) {
            tick();
            if (ar_fire_) m.s_axil_arvalid = 0;
            if (r_fire_) {
                m.s_axil_rready = 0;
                if (data) *data = rdata_;
                return static_cast<int>(rresp_);
            }
        }
        idle(m);
        if (data) *data = 0;
        return TTF_AXIL_TIMEOUT;
    }

  private:
    uint32_t timeout_ = TTF_AXIL_DEFAULT_TIMEOUT;
    bool aw_fire_ = false, w_fire_ = false, b_fire_ = false, ar_fire_ = false, r_fire_ = false;
    uint32_t bresp_ = 0, rresp_ = 0, rdata_ = 0;
};

}  // namespace ttf

#endif  // TTF_AXIL_MASTER_H
