/* ttforge C driver for bare-metal hosts (C99, no dynamic allocation).
 *
 * Drives one ttforge_accel core: AXI4-Lite control through two bus hooks (read32,
 * write32), AXI4-Stream data through two optional stream hooks (on a SoC: a DMA engine
 * or an AXI4-Stream FIFO; in simulation: the Verilator shim, sim/native/axil_shim.h).
 * The register addresses and the configuration checked by ttfd_identify come from the
 * generated register header ttforge_regs.h (ttforge generate, or
 * ttforge.hw.regmap.RegisterMap(config).to_c_header()): build the driver with the header
 * of the bitstream it talks to.
 *
 *   ttfd_dev dev;
 *   ttfd_hooks hooks;
 *   ttfd_mmio_hooks(&hooks, (volatile uint32_t *)0x43C00000u); // the core's base
 *   hooks.stream_send = my_dma_send;  hooks.stream_recv = my_dma_poll;
 *   if (ttfd_init(&dev, &hooks) != TTFD_OK) ...        // ID, VERSION, CFG_* checked
 *   if (ttfd_load(&dev, ttforge_image, ttforge_image_count) != TTFD_OK) ...
 *   if (ttfd_run(&dev, x, in_count, y, out_count) != TTFD_OK) ...
 *
 * Every function returns a ttfd_result. See docs/integration.md ("The C driver").
 */
#ifndef TTFORGE_DRIVER_H
#define TTFORGE_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "ttforge_regs.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TTFD_VERSION 1u

/* Result of every driver function. */
typedef enum ttfd_result {
    TTFD_OK = 0,
    TTFD_TIMEOUT = 1,      /* no output within dev->timeout_polls polls, or a bus hook timed out */
    TTFD_BUS_ERROR = 2,    /* a register access answered SLVERR (address in dev->bus_addr) */
    TTFD_HW_ERROR = 3,     /* STATUS.ERROR: the engine stopped; code and step in dev->hw_code/hw_step */
    TTFD_MISMATCH = 4,     /* the hardware is not the one ttforge_regs.h describes (dev->mismatch_addr) */
    TTFD_BAD_ARG = 5,      /* a NULL pointer, a wrong vector length */
    TTFD_NO_STREAM = 6,    /* ttfd_run without stream hooks */
    TTFD_STREAM_ERROR = 7, /* a stream hook failed or returned a vector of the wrong length */
    TTFD_BAD_IMAGE = 8     /* ttfd_load_bytes: the bytes are not a valid load image for ttforge_regs.h
                              (dev->image_status says why), refused before any write */
} ttfd_result;

/* Bus hook return values (the same as the simulation shim's TTF_AXIL_*). */
#define TTFD_BUS_OKAY 0
#define TTFD_BUS_SLVERR 2
#define TTFD_BUS_TIMEOUT (-1)

/* Platform hooks. `addr` is a byte offset from the core's base (the *_ADDR macros of
 * ttforge_regs.h). read32/write32 return TTFD_BUS_OKAY, TTFD_BUS_SLVERR (any other
 * positive value is also a bus error) or TTFD_BUS_TIMEOUT (any negative value).
 *
 * The stream hooks are optional (ttfd_run needs both):
 *   stream_send: hand one input vector of n elements to the core's s_axis (start a DMA
 *                transfer, fill a FIFO, ...), packed as docs/hardware.md says; it may
 *                return before the core took it. 0 on success, nonzero on failure.
 *   stream_recv: poll m_axis for one complete output vector (tlast seen): copy up to
 *                `max` elements into out, store the element count in *n, return 1; 0
 *                when none is complete yet; negative on failure. Never blocks.
 *   wait:        optional, called between polls with dev->poll_wait (a delay, or, in
 *                simulation, clock cycles to run).
 * All hooks get `ctx` as their first argument. */
typedef struct ttfd_hooks {
    void *ctx;
    int (*read32)(void *ctx, uint32_t addr, uint32_t *data);
    int (*write32)(void *ctx, uint32_t addr, uint32_t data);
    int (*stream_send)(void *ctx, const int32_t *elems, uint32_t n);
    int (*stream_recv)(void *ctx, int32_t *out, uint32_t max, uint32_t *n);
    void (*wait)(void *ctx, uint32_t amount);
} ttfd_hooks;

/* One load-image write: byte address (offset from the core's base) and data. */
typedef struct ttfd_write {
    uint32_t addr;
    uint32_t data;
} ttfd_write;

/* The six performance counters (docs/hardware.md): 48-bit registers whose counts wrap at
 * 2^TTFORGE_CFG_COUNTER_BITS (24 on the iCEBreaker), counted since ttfd_clear_counters or
 * reset; ttfd_load does not clear them (the Python Device.load does). */
typedef struct ttfd_counters {
    uint64_t cycles, busy_lane_cycles, in_stall, out_stall, sat_events, vectors;
} ttfd_counters;

/* Driver state: one per core, owned by the caller (no allocation). */
typedef struct ttfd_dev {
    ttfd_hooks hooks;
    uint32_t timeout_polls;  /* polls of ttfd_run before TIMEOUT (default TTFD_DEFAULT_TIMEOUT_POLLS) */
    uint32_t poll_wait;      /* argument of hooks.wait between polls (default TTFD_DEFAULT_POLL_WAIT) */
    uint32_t in_count;       /* IN_COUNT / OUT_COUNT of the loaded program (ttfd_load) */
    uint32_t out_count;
    uint32_t hw_code;        /* last HW_ERROR: ERROR_CODE.CODE (TTFORGE_ERR_*) and .STEP */
    uint32_t hw_step;
    uint32_t bus_addr;       /* last BUS_ERROR / TIMEOUT of a bus access: its address */
    uint32_t mismatch_addr;  /* last MISMATCH: the register that differs ... */
    uint32_t mismatch_got;   /* ... what it read, and what ttforge_regs.h expects */
    uint32_t mismatch_expected;
    uint32_t image_status;   /* last BAD_IMAGE: a ttfi_status (ttforge_ttli.h, ttfi_status_text) */
    uint32_t image_config_index; /* ... for TTFI_CONFIG: the config word that differs
                                    (TTFORGE_IMAGE_CONFIG_NAMES), the image's value and the header's;
                                    for TTFI_ADDRESS: the write, its address, the window's last byte */
    uint32_t image_config_got;
    uint32_t image_config_expected;
} ttfd_dev;

#define TTFD_DEFAULT_TIMEOUT_POLLS 100000u
#define TTFD_DEFAULT_POLL_WAIT 16u

/* The name of a result ("OK", "TIMEOUT", ...). */
const char *ttfd_result_name(ttfd_result r);

/* Default memory-mapped hooks: volatile 32-bit loads and stores at base + addr, a busy
 * loop as wait, no stream hooks (set them yourself). A bus error on MMIO is a CPU fault,
 * not a return value: these hooks always return TTFD_BUS_OKAY. */
void ttfd_mmio_hooks(ttfd_hooks *hooks, volatile uint32_t *base);

/* Store the hooks, set the defaults, then ttfd_identify. */
ttfd_result ttfd_init(ttfd_dev *dev, const ttfd_hooks *hooks);
/* Read ID, VERSION and CFG_* and compare them with ttforge_regs.h (TTFD_MISMATCH). */
ttfd_result ttfd_identify(ttfd_dev *dev);

/* Raw register access (BUS_ERROR on SLVERR, TIMEOUT on a bus timeout). */
ttfd_result ttfd_read_reg(ttfd_dev *dev, uint32_t addr, uint32_t *data);
ttfd_result ttfd_write_reg(ttfd_dev *dev, uint32_t addr, uint32_t data);

/* Apply a load image (ttforge.firmware.c_driver.load_image_c, or ttforge generate's
 * load_image.bin through ttfd_load_bytes), write by write, then read IN_COUNT and
 * OUT_COUNT back into dev. The image disables the core first (CTRL = 0, then
 * CMD.SOFT_RESET | CLEAR_ERROR: a vector still in flight is aborted and its output never
 * comes; load between runs, after the last ttfd_collect) and enables it last. A
 * write address outside the core's AXI4-Lite window or not 4-byte aligned is
 * TTFD_BAD_IMAGE (image_status TTFI_ADDRESS, as for ttfd_load_bytes) with no write made. */
ttfd_result ttfd_load(ttfd_dev *dev, const ttfd_write *image, uint32_t count);
/* The same from the bytes of a TTLI load image (load_image.bin), parsed in place. The
 * whole image is checked first (ttfi_check: magic, version, length, CRC-32, the config
 * words against ttforge_regs.h, every write address inside the core's AXI4-Lite window):
 * TTFD_BAD_IMAGE, with no write made, if any check fails. */
ttfd_result ttfd_load_bytes(ttfd_dev *dev, const uint8_t *data, size_t len);

/* One inference: send `in` (n_in must equal IN_COUNT), poll for the output vector
 * (max_out >= OUT_COUNT) up to dev->timeout_polls times, checking STATUS.ERROR at each
 * poll. TIMEOUT / HW_ERROR leave the core as it is: call ttfd_soft_reset and flush the
 * DMA or FIFO before the next run. */
ttfd_result ttfd_run(ttfd_dev *dev, const int32_t *in, uint32_t n_in, int32_t *out, uint32_t max_out);

/* ttfd_run in two halves, for keeping several vectors in flight (as many as the
 * stream hooks can queue): ttfd_submit checks STATUS.ERROR and hands one input vector
 * to stream_send; ttfd_collect polls for the oldest output vector as ttfd_run does.
 * Outputs come back in submission order. */
ttfd_result ttfd_submit(ttfd_dev *dev, const int32_t *in, uint32_t n_in);
ttfd_result ttfd_collect(ttfd_dev *dev, int32_t *out, uint32_t max_out);

/* STATUS (TTFORGE_STATUS_*_MASK bits). */
ttfd_result ttfd_status(ttfd_dev *dev, uint32_t *status);
/* The performance counters (each LO then HI). */
ttfd_result ttfd_read_counters(ttfd_dev *dev, ttfd_counters *c);
ttfd_result ttfd_clear_counters(ttfd_dev *dev);
/* ERROR_CODE: code (TTFORGE_ERR_*, 0 = none) and the step it happened in (either may be NULL). */
ttfd_result ttfd_read_error(ttfd_dev *dev, uint32_t *code, uint32_t *step);
/* CMD.CLEAR_ERROR and IRQ_STATUS cleared. */
ttfd_result ttfd_clear_error(ttfd_dev *dev);
/* CMD.SOFT_RESET | CMD.CLEAR_ERROR: aborts an inference, drops partial stream beats;
 * memories, program registers and counters are kept, CTRL.ENABLE stays as it was. */
ttfd_result ttfd_soft_reset(ttfd_dev *dev);

#ifdef __cplusplus
}
#endif

#endif /* TTFORGE_DRIVER_H */
