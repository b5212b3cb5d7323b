/* ttforge C driver hooks for the Verilated model (sim/native/axil_shim.h).
 *
 *   void *sim = ttf_sim_open();
 *   ttfd_hooks hooks;
 *   ttfd_sim_hooks(&hooks, sim);   // read32/write32/stream_* through the shim
 *   ttfd_init(&dev, &hooks);
 *
 * stream_send queues the vector in the shim's AXI4-Stream source (it is sent while the
 * model is clocked); stream_recv takes a complete vector from its sink (after
 * ttfd_load the driver's OUT_COUNT must be given to the sink: ttfd_sim_set_out_count);
 * wait clocks the model. */
#ifndef TTFORGE_SIM_HOOKS_H
#define TTFORGE_SIM_HOOKS_H

#include "axil_shim.h"
#include "ttforge_driver.h"

#ifdef __cplusplus
extern "C" {
#endif

void ttfd_sim_hooks(ttfd_hooks *hooks, void *sim);
/* Tell the shim's sink how many elements an output vector keeps (dev->out_count). */
void ttfd_sim_set_out_count(void *sim, uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* TTFORGE_SIM_HOOKS_H */
