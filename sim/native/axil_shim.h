/* ttforge native harness: the C ABI of the Verilated ttforge_accel.
 *
 * A plain C99 header (it also compiles as C++). A bare-metal style C driver written
 * against the generated register header (ttforge_regs.h) links against the Verilated
 * model through these functions only; the implementation is ttf_sim.cpp (C++).
 *
 *   void *sim = ttf_sim_open();                 // model built, reset applied
 *   uint32_t id;
 *   if (ttf_axil_read32(sim, TTFORGE_ID_ADDR, &id) != TTF_AXIL_OKAY) ...
 *   ttf_axil_write32(sim, TTFORGE_CTRL_ADDR, TTFORGE_CTRL_ENABLE_MASK);
 *   ttf_sim_close(sim);
 *
 * Every call that moves the bus clocks the model (one rising edge of clk per cycle)
 * until its handshakes complete, or until the timeout (ttf_axil_set_timeout, in
 * cycles) expires. While the model is clocked, the AXI4-Stream source and sink
 * (ttf_axis_*) keep running, so register accesses and streams overlap as on a SoC.
 *
 * Return values of ttf_axil_*: the AXI response (TTF_AXIL_OKAY = 0, TTF_AXIL_SLVERR =
 * 2; EXOKAY/DECERR are never produced by the core) or TTF_AXIL_TIMEOUT (-1), after which
 * the master's valid signals are dropped and the bus state is undefined (reset it).
 * Not thread-safe: one handle per thread.
 */
#ifndef TTF_AXIL_SHIM_H
#define TTF_AXIL_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TTF_AXIL_OKAY 0
#define TTF_AXIL_SLVERR 2
#define TTF_AXIL_TIMEOUT (-1)

/* default handshake timeout of ttf_axil_* (cycles) */
#define TTF_AXIL_DEFAULT_TIMEOUT 10000u

/* ---- model lifecycle --------------------------------------------------------------- */

/* Create the Verilated model and hold rst high for 4 cycles. NULL on failure. */
void *ttf_sim_open(void);
/* Finish and free the model (NULL is ignored). */
void ttf_sim_close(void *sim);
/* Synchronous reset: rst high for `cycles` (at least 1) rising edges, then low. */
void ttf_sim_reset(void *sim, uint32_t cycles);
/* Clock the model `n` cycles (streams keep running, the AXI4-Lite master idles). */
void ttf_sim_tick(void *sim, uint32_t n);
/* Rising edges of clk since ttf_sim_open. */
uint64_t ttf_sim_cycles(void *sim);
/* The level of the irq output (sampled after the last edge). */
int ttf_sim_irq(void *sim);

/* ---- AXI4-Lite master -------------------------------------------------------------- */

/* One 32-bit write (WSTRB = 0xF): AW and W together, then B. Returns the response. */
int ttf_axil_write32(void *sim, uint32_t addr, uint32_t data);
/* One 32-bit read: AR, then R. Stores RDATA in *data; returns the response. */
int ttf_axil_read32(void *sim, uint32_t addr, uint32_t *data);
/* Cycles a single access may take before it returns TTF_AXIL_TIMEOUT (0: default). */
void ttf_axil_set_timeout(void *sim, uint32_t cycles);

/* ---- AXI4-Stream source and sink (optional for a driver) --------------------------- */

/* Seed the xorshift generator and set the probabilities (0..1) that the source inserts
 * an idle cycle before a beat (tvalid low) and that the sink holds tready low in a cycle.
 * Defaults: seed 0, no gaps, no back-pressure. */
void ttf_axis_config(void *sim, uint64_t seed, double gaps, double backpressure);
/* Queue one input vector of n elements (two's complement, packed per docs/hardware.md,
 * tlast on its last beat). The source sends queued vectors back to back whenever the
 * model is clocked. Returns 0, or -1 if n is 0. */
int ttf_axis_send(void *sim, const int32_t *elems, uint32_t n);
/* Set the number of elements kept per received vector (OUT_COUNT); further lanes of
 * a beat are ignored. Must be called before the first output beat arrives. */
void ttf_axis_set_out_count(void *sim, uint32_t n);
/* Vectors received completely (tlast seen) and not yet taken. */
uint32_t ttf_axis_received(void *sim);
/* Take the oldest received vector: copies up to max elements into out, returns its
 * element count (which may exceed max), or -1 if none has been received. */
int32_t ttf_axis_take(void *sim, int32_t *out, uint32_t max);
/* Clock until `count` vectors have been received (in total, taken or not) or `timeout`
 * cycles pass without a stream handshake. Returns 0, or -1 on timeout. */
int ttf_axis_wait(void *sim, uint32_t count, uint64_t timeout);

#ifdef __cplusplus
}
#endif

#endif /* TTF_AXIL_SHIM_H */
