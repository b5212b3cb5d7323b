/* ttforge C training driver hooks for the Verilated training top (sim/native/axil_shim.h,
 * implemented for ttforge_train by sim/native/train_axil_sim.cpp).
 *
 *   void *sim = ttf_sim_open();
 *   ttftd_hooks hooks;
 *   ttftd_sim_hooks(&hooks, sim);   // read32/write32/stream_send/wait through the shim
 *   ttftd_init(&dev, &hooks);
 *
 * stream_send queues one sample in the shim's AXI4-Stream source (one element per beat;
 * the beats go out while the model is clocked); wait clocks the model. */
#ifndef TTFORGE_TRAIN_SIM_HOOKS_H
#define TTFORGE_TRAIN_SIM_HOOKS_H

#include "axil_shim.h"
#include "ttforge_train_driver.h"

#ifdef __cplusplus
extern "C" {
#endif

void ttftd_sim_hooks(ttftd_hooks *hooks, void *sim);

#ifdef __cplusplus
}
#endif

#endif /* TTFORGE_TRAIN_SIM_HOOKS_H */
