/* ttforge C driver: see ttforge_driver.h and docs/integration.md ("The C driver"). C99, no allocation. */
#include "ttforge_driver.h"
#include "ttforge_ttli.h"

static ttfd_result bus(ttfd_dev *dev, uint32_t addr, int r) {
    if (r == TTFD_BUS_OKAY) return TTFD_OK;
    dev->bus_addr = addr;
    return r < 0 ? TTFD_TIMEOUT : TTFD_BUS_ERROR;
}

const char *ttfd_result_name(ttfd_result r) {
    switch (r) {
    case TTFD_OK: return "OK";
    case TTFD_TIMEOUT: return "TIMEOUT";
    case TTFD_BUS_ERROR: return "BUS_ERROR";
    case TTFD_HW_ERROR: return "HW_ERROR";
    case TTFD_MISMATCH: return "MISMATCH";
    case TTFD_BAD_ARG: return "BAD_ARG";
    case TTFD_NO_STREAM: return "NO_STREAM";
    case TTFD_STREAM_ERROR: return "STREAM_ERROR";
    case TTFD_BAD_IMAGE: return "BAD_IMAGE";
    }
    return "?";
}

/* ---- default memory-mapped hooks ------------------------------------------------- */
static volatile uint32_t *mmio_reg(void *ctx, uint32_t addr) {
    return (volatile uint32_t *)((uintptr_t)ctx + (uintptr_t)(addr & ~3u));
}

static int mmio_read32(void *ctx, uint32_t addr, uint32_t *data) {
    *data = *mmio_reg(ctx, addr);
    return TTFD_BUS_OKAY;
}

static int mmio_write32(void *ctx, uint32_t addr, uint32_t data) {
    *mmio_reg(ctx, addr) = data;
    return TTFD_BUS_OKAY;
}

static void mmio_wait(void *ctx, uint32_t amount) {
    volatile uint32_t i;
    (void)ctx;
    for (i = 0; i < amount; ++i) {
    }
}

void ttfd_mmio_hooks(ttfd_hooks *hooks, volatile uint32_t *base) {
    if (!hooks) return;
    hooks->ctx = (void *)(uintptr_t)base;
    hooks->read32 = mmio_read32;
    hooks->write32 = mmio_write32;
    hooks->stream_send = 0;
    hooks->stream_recv = 0;
    hooks->wait = mmio_wait;
}

/* ---- registers -------------------------------------------------------------------- */
ttfd_result ttfd_read_reg(ttfd_dev *dev, uint32_t addr, uint32_t *data) {
    uint32_t junk;
    if (!dev || !dev->hooks.read32) return TTFD_BAD_ARG;
    return bus(dev, addr, dev->hooks.read32(dev->hooks.ctx, addr, data ? data : &junk));
}

ttfd_result ttfd_write_reg(ttfd_dev *dev, uint32_t addr, uint32_t data) {
    if (!dev || !dev->hooks.write32) return TTFD_BAD_ARG;
    return bus(dev, addr, dev->hooks.write32(dev->hooks.ctx, addr, data));
}

#define TRY(expr)                          \
    do {                                   \
        ttfd_result try_r_ = (expr);       \
        if (try_r_ != TTFD_OK) return try_r_; \
    } while (0)

ttfd_result ttfd_init(ttfd_dev *dev, const ttfd_hooks *hooks) {
    if (!dev || !hooks || !hooks->read32 || !hooks->write32) return TTFD_BAD_ARG;
    dev->hooks = *hooks;
    dev->timeout_polls = TTFD_DEFAULT_TIMEOUT_POLLS;
    dev->poll_wait = TTFD_DEFAULT_POLL_WAIT;
    dev->in_count = dev->out_count = 0;
    dev->hw_code = dev->hw_step = 0;
    dev->bus_addr = 0;
    dev->mismatch_addr = dev->mismatch_got = dev->mismatch_expected = 0;
    dev->image_status = dev->image_config_index = dev->image_config_got = dev->image_config_expected = 0;
    return ttfd_identify(dev);
}

ttfd_result ttfd_identify(ttfd_dev *dev) {
    /* every RO identification register and its value in the header */
    static const uint32_t expect[][2] = {
        {TTFORGE_ID_ADDR, TTFORGE_MAGIC},
        {TTFORGE_VERSION_ADDR, TTFORGE_VERSION_RESET},
        {TTFORGE_CFG_LANES_ADDR, TTFORGE_CFG_LANES_RESET},
        {TTFORGE_CFG_WIDTHS_ADDR, TTFORGE_CFG_WIDTHS_RESET},
        {TTFORGE_CFG_BIAS_BITS_ADDR, TTFORGE_CFG_BIAS_BITS_RESET},
        {TTFORGE_CFG_CORE_DEPTH_ADDR, TTFORGE_CFG_CORE_DEPTH_RESET},
        {TTFORGE_CFG_BIAS_DEPTH_ADDR, TTFORGE_CFG_BIAS_DEPTH_RESET},
        {TTFORGE_CFG_BUF_DEPTH_ADDR, TTFORGE_CFG_BUF_DEPTH_RESET},
        {TTFORGE_CFG_DESC_DEPTH_ADDR, TTFORGE_CFG_DESC_DEPTH_RESET},
    };
    size_t i;
    if (!dev) return TTFD_BAD_ARG;
    for (i = 0; i < sizeof expect / sizeof expect[0]; ++i) {
        uint32_t v = 0;
        TRY(ttfd_read_reg(dev, expect[i][0], &v));
        if (v != expect[i][1]) {
            dev->mismatch_addr = expect[i][0];
            dev->mismatch_got = v;
            dev->mismatch_expected = expect[i][1];
            return TTFD_MISMATCH;
        }
    }
    return TTFD_OK;
}

/* ---- load ------------------------------------------------------------------------- */
static ttfd_result read_counts(ttfd_dev *dev) {
    TRY(ttfd_read_reg(dev, TTFORGE_IN_COUNT_ADDR, &dev->in_count));
    return ttfd_read_reg(dev, TTFORGE_OUT_COUNT_ADDR, &dev->out_count);
}

ttfd_result ttfd_load(ttfd_dev *dev, const ttfd_write *image, uint32_t count) {
    uint32_t i;
    if (!dev || (!image && count)) return TTFD_BAD_ARG;
    /* an array can be edited by hand as a binary image can: every address is checked
     * before the first write, as ttfd_load_bytes does (a memory-mapped hook writes to
     * base + addr wherever that is) */
    dev->image_status = (uint32_t)TTFI_OK;
    for (i = 0; i < count; ++i) {
        if (!ttfi_address_ok(image[i].addr)) {
            dev->image_status = (uint32_t)TTFI_ADDRESS;
            dev->image_config_index = i;
            dev->image_config_got = image[i].addr;
            dev->image_config_expected = ttfi_window_last();
            return TTFD_BAD_IMAGE;
        }
    }
    for (i = 0; i < count; ++i) TRY(ttfd_write_reg(dev, image[i].addr, image[i].data));
    return read_counts(dev);
}

ttfd_result ttfd_load_bytes(ttfd_dev *dev, const uint8_t *data, size_t len) {
    ttfi_info info;
    ttfi_status st;
    uint32_t i;
    if (!dev || !data) return TTFD_BAD_ARG;
    st = ttfi_check(data, len, &info); /* the whole image, before the first write */
    dev->image_status = (uint32_t)st;
    dev->image_config_index = info.config_index;
    dev->image_config_got = info.config_got;
    dev->image_config_expected = info.config_expected;
    if (st != TTFI_OK) return TTFD_BAD_IMAGE;
    for (i = 0; i < info.count; ++i) {
        const uint8_t *w = info.writes + 8 * (size_t)i;
        TRY(ttfd_write_reg(dev, ttfi_le32(w), ttfi_le32(w + 4)));
    }
    return read_counts(dev);
}

/* ---- status, errors, counters ------------------------------------------------------ */
ttfd_result ttfd_status(ttfd_dev *dev, uint32_t *status) {
    return ttfd_read_reg(dev, TTFORGE_STATUS_ADDR, status);
}

ttfd_result ttfd_read_error(ttfd_dev *dev, uint32_t *code, uint32_t *step) {
    uint32_t v = 0;
    TRY(ttfd_read_reg(dev, TTFORGE_ERROR_CODE_ADDR, &v));
    if (code) *code = (v & TTFORGE_ERROR_CODE_CODE_MASK) >> TTFORGE_ERROR_CODE_CODE_SHIFT;
    if (step) *step = (v & TTFORGE_ERROR_CODE_STEP_MASK) >> TTFORGE_ERROR_CODE_STEP_SHIFT;
    return TTFD_OK;
}

ttfd_result ttfd_clear_error(ttfd_dev *dev) {
    TRY(ttfd_write_reg(dev, TTFORGE_CMD_ADDR, TTFORGE_CMD_CLEAR_ERROR_MASK));
    return ttfd_write_reg(dev, TTFORGE_IRQ_STATUS_ADDR,
                          TTFORGE_IRQ_STATUS_DONE_MASK | TTFORGE_IRQ_STATUS_ERROR_MASK);
}

ttfd_result ttfd_soft_reset(ttfd_dev *dev) {
    return ttfd_write_reg(dev, TTFORGE_CMD_ADDR, TTFORGE_CMD_SOFT_RESET_MASK | TTFORGE_CMD_CLEAR_ERROR_MASK);
}

static ttfd_result counter(ttfd_dev *dev, uint32_t lo_addr, uint64_t *value) {
    uint32_t lo = 0, hi = 0;
    TRY(ttfd_read_reg(dev, lo_addr, &lo)); /* LO first: it latches HI */
    TRY(ttfd_read_reg(dev, lo_addr + 4u, &hi));
    *value = (uint64_t)hi << 32 | lo;
    return TTFD_OK;
}

ttfd_result ttfd_read_counters(ttfd_dev *dev, ttfd_counters *c) {
    if (!c) return TTFD_BAD_ARG;
    TRY(counter(dev, TTFORGE_CYCLES_LO_ADDR, &c->cycles));
    TRY(counter(dev, TTFORGE_BUSY_LANE_CYCLES_LO_ADDR, &c->busy_lane_cycles));
    TRY(counter(dev, TTFORGE_IN_STALL_LO_ADDR, &c->in_stall));
    TRY(counter(dev, TTFORGE_OUT_STALL_LO_ADDR, &c->out_stall));
    TRY(counter(dev, TTFORGE_SAT_EVENTS_LO_ADDR, &c->sat_events));
    return counter(dev, TTFORGE_VECTORS_LO_ADDR, &c->vectors);
}

ttfd_result ttfd_clear_counters(ttfd_dev *dev) {
    return ttfd_write_reg(dev, TTFORGE_CMD_ADDR, TTFORGE_CMD_CLEAR_COUNTERS_MASK);
}

/* ---- run -------------------------------------------------------------------------- */
static ttfd_result check_error(ttfd_dev *dev) {
    uint32_t status = 0;
    TRY(ttfd_status(dev, &status));
    if (status & TTFORGE_STATUS_ERROR_MASK) {
        TRY(ttfd_read_error(dev, &dev->hw_code, &dev->hw_step));
        return TTFD_HW_ERROR;
    }
    return TTFD_OK;
}

ttfd_result ttfd_submit(ttfd_dev *dev, const int32_t *in, uint32_t n_in) {
    if (!dev || !in) return TTFD_BAD_ARG;
    if (!dev->hooks.stream_send || !dev->hooks.stream_recv) return TTFD_NO_STREAM;
    if (dev->in_count == 0 || n_in != dev->in_count) return TTFD_BAD_ARG;
    TRY(check_error(dev)); /* an error left from before: clear it first */
    return dev->hooks.stream_send(dev->hooks.ctx, in, n_in) != 0 ? TTFD_STREAM_ERROR : TTFD_OK;
}

ttfd_result ttfd_collect(ttfd_dev *dev, int32_t *out, uint32_t max_out) {
    uint32_t poll;
    if (!dev || !out) return TTFD_BAD_ARG;
    if (!dev->hooks.stream_send || !dev->hooks.stream_recv) return TTFD_NO_STREAM;
    if (dev->out_count == 0 || max_out < dev->out_count) return TTFD_BAD_ARG;
    for (poll = 0; poll < dev->timeout_polls; ++poll) {
        uint32_t n = 0;
        int r = dev->hooks.stream_recv(dev->hooks.ctx, out, max_out, &n);
        if (r < 0) return TTFD_STREAM_ERROR;
        if (r > 0) return n == dev->out_count ? TTFD_OK : TTFD_STREAM_ERROR;
        TRY(check_error(dev));
        if (dev->hooks.wait) dev->hooks.wait(dev->hooks.ctx, dev->poll_wait);
    }
    return TTFD_TIMEOUT;
}

ttfd_result ttfd_run(ttfd_dev *dev, const int32_t *in, uint32_t n_in, int32_t *out, uint32_t max_out) {
    if (!dev || !in || !out) return TTFD_BAD_ARG;
    if (dev->out_count == 0 || max_out < dev->out_count) return TTFD_BAD_ARG;
    TRY(ttfd_submit(dev, in, n_in));
    return ttfd_collect(dev, out, max_out);
}
