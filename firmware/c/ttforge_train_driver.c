/* ttforge C training driver: see ttforge_train_driver.h and docs/integration.md
 * ("Training with the C driver"). C99, no allocation, no libc calls. */
#include "ttforge_train_driver.h"

static ttftd_result bus(ttftd_dev *dev, uint32_t addr, int r) {
    if (r == TTFTD_BUS_OKAY) return TTFTD_OK;
    dev->bus_addr = addr;
    return r < 0 ? TTFTD_TIMEOUT : TTFTD_BUS_ERROR;
}

const char *ttftd_result_name(ttftd_result r) {
    switch (r) {
    case TTFTD_OK: return "OK";
    case TTFTD_TIMEOUT: return "TIMEOUT";
    case TTFTD_BUS_ERROR: return "BUS_ERROR";
    case TTFTD_HW_ERROR: return "HW_ERROR";
    case TTFTD_MISMATCH: return "MISMATCH";
    case TTFTD_BAD_ARG: return "BAD_ARG";
    case TTFTD_NO_STREAM: return "NO_STREAM";
    case TTFTD_STREAM_ERROR: return "STREAM_ERROR";
    case TTFTD_EXP_RANGE: return "EXP_RANGE";
    case TTFTD_BAD_SAMPLE: return "BAD_SAMPLE";
    }
    return "?";
}

const char *ttftd_hw_error_name(uint32_t code) {
    /* the TTFORGE_TRAIN_ERR_* codes of the register header (TRAIN_ERROR_TEXT; a test
     * compares every code with it) */
    switch (code) {
    case 0u: return "NONE";
    case TTFORGE_TRAIN_ERR_BAD_DESC: return "BAD_DESC";
    case TTFORGE_TRAIN_ERR_ACT_RANGE: return "ACT_RANGE";
    case TTFORGE_TRAIN_ERR_GRAD_RANGE: return "GRAD_RANGE";
    case TTFORGE_TRAIN_ERR_CMEM_RANGE: return "CMEM_RANGE";
    case TTFORGE_TRAIN_ERR_BMEM_RANGE: return "BMEM_RANGE";
    case TTFORGE_TRAIN_ERR_DESC_RANGE: return "DESC_RANGE";
    case TTFORGE_TRAIN_ERR_BAD_LABEL: return "BAD_LABEL";
    case TTFORGE_TRAIN_ERR_BAD_PROGRAM: return "BAD_PROGRAM";
#ifdef TTFORGE_TRAIN_ERR_TLAST_EARLY /* the top's s_axis checks (CTRL.TLAST_CHECK) */
    case TTFORGE_TRAIN_ERR_TLAST_EARLY: return "TLAST_EARLY";
    case TTFORGE_TRAIN_ERR_TLAST_LATE: return "TLAST_LATE";
#endif
    default: return "?";
    }
}

/* ---- default memory-mapped hooks ------------------------------------------------- */
static volatile uint32_t *mmio_reg(void *ctx, uint32_t addr) {
    return (volatile uint32_t *)((uintptr_t)ctx + (uintptr_t)(addr & ~3u));
}

static int mmio_read32(void *ctx, uint32_t addr, uint32_t *data) {
    *data = *mmio_reg(ctx, addr);
    return TTFTD_BUS_OKAY;
}

static int mmio_write32(void *ctx, uint32_t addr, uint32_t data) {
    *mmio_reg(ctx, addr) = data;
    return TTFTD_BUS_OKAY;
}

static void mmio_wait(void *ctx, uint32_t amount) {
    volatile uint32_t i;
    (void)ctx;
    for (i = 0; i < amount; ++i) {
    }
}

void ttftd_mmio_hooks(ttftd_hooks *hooks, volatile uint32_t *base) {
    if (!hooks) return;
    hooks->ctx = (void *)(uintptr_t)base;
    hooks->read32 = mmio_read32;
    hooks->write32 = mmio_write32;
    hooks->stream_send = 0;
    hooks->wait = mmio_wait;
}

/* ---- registers -------------------------------------------------------------------- */
ttftd_result ttftd_read_reg(ttftd_dev *dev, uint32_t addr, uint32_t *data) {
    uint32_t junk;
    if (!dev || !dev->hooks.read32) return TTFTD_BAD_ARG;
    return bus(dev, addr, dev->hooks.read32(dev->hooks.ctx, addr, data ? data : &junk));
}

ttftd_result ttftd_write_reg(ttftd_dev *dev, uint32_t addr, uint32_t data) {
    if (!dev || !dev->hooks.write32) return TTFTD_BAD_ARG;
    return bus(dev, addr, dev->hooks.write32(dev->hooks.ctx, addr, data));
}

#define TRY(expr)                             \
    do {                                      \
        ttftd_result try_r_ = (expr);         \
        if (try_r_ != TTFTD_OK) return try_r_; \
    } while (0)

ttftd_result ttftd_init(ttftd_dev *dev, const ttftd_hooks *hooks) {
    if (!dev || !hooks || !hooks->read32 || !hooks->write32) return TTFTD_BAD_ARG;
    dev->hooks = *hooks;
    dev->prog = 0;
    dev->timeout_polls = TTFTD_DEFAULT_TIMEOUT_POLLS;
    dev->poll_wait = TTFTD_DEFAULT_POLL_WAIT;
    dev->hw_code = dev->hw_op = 0;
    dev->bus_addr = 0;
    dev->mismatch_addr = dev->mismatch_got = dev->mismatch_expected = 0;
    dev->range_var = 0;
    dev->range_value = 0;
    dev->rewritten = 0;
    dev->dmem_stale = 0;
    dev->sample_index = dev->sample_elem = 0;
    dev->sample_value = dev->sample_lo = dev->sample_hi = 0;
    return ttftd_identify(dev);
}

ttftd_result ttftd_identify(ttftd_dev *dev) {
    /* every constant identification register and its value in the header */
    static const uint32_t expect[][2] = {
        {TTFORGE_TRAIN_ID_ADDR, TTFORGE_TRAIN_MAGIC},
        {TTFORGE_TRAIN_VERSION_ADDR, TTFORGE_TRAIN_VERSION_RESET},
        {TTFORGE_TRAIN_CFG_LANES_ADDR, TTFORGE_TRAIN_CFG_LANES_RESET},
        {TTFORGE_TRAIN_CFG_WIDTHS_ADDR, TTFORGE_TRAIN_CFG_WIDTHS_RESET},
        {TTFORGE_TRAIN_CFG_WIDTHS2_ADDR, TTFORGE_TRAIN_CFG_WIDTHS2_RESET},
        {TTFORGE_TRAIN_CFG_ACT_DEPTH_ADDR, TTFORGE_TRAIN_CFG_ACT_DEPTH_RESET},
        {TTFORGE_TRAIN_CFG_GRAD_DEPTH_ADDR, TTFORGE_TRAIN_CFG_GRAD_DEPTH_RESET},
        {TTFORGE_TRAIN_CFG_CORE_DEPTH_ADDR, TTFORGE_TRAIN_CFG_CORE_DEPTH_RESET},
        {TTFORGE_TRAIN_CFG_BIAS_DEPTH_ADDR, TTFORGE_TRAIN_CFG_BIAS_DEPTH_RESET},
        {TTFORGE_TRAIN_CFG_DESC_DEPTH_ADDR, TTFORGE_TRAIN_CFG_DESC_DEPTH_RESET},
        {TTFORGE_TRAIN_CFG_MAX_BATCH_ADDR, TTFORGE_TRAIN_CFG_MAX_BATCH_RESET},
        {TTFORGE_TRAIN_CFG_MAX_CLASSES_ADDR, TTFORGE_TRAIN_CFG_MAX_CLASSES_RESET},
    };
    size_t i;
    if (!dev) return TTFTD_BAD_ARG;
    for (i = 0; i < sizeof expect / sizeof expect[0]; ++i) {
        uint32_t v = 0;
        TRY(ttftd_read_reg(dev, expect[i][0], &v));
        if (v != expect[i][1]) {
            dev->mismatch_addr = expect[i][0];
            dev->mismatch_got = v;
            dev->mismatch_expected = expect[i][1];
            return TTFTD_MISMATCH;
        }
    }
    return TTFTD_OK;
}

/* ---- exponent tables ---------------------------------------------------------------- */
static int64_t affine(const ttftd_program *p, int32_t c, uint32_t t0, uint32_t nt, const int32_t *exps) {
    int64_t v = c;
    uint32_t k;
    for (k = t0; k < t0 + nt; ++k) v += (int64_t)p->terms[k].coef * exps[p->terms[k].var];
    return v;
}

/* DMEM word fields[first].word with every field of that word encoded from `exps`;
 * *next: the first field of the next word. */
static uint32_t field_word(const ttftd_program *p, uint32_t first, const int32_t *exps, uint32_t *next) {
    uint32_t w = p->fields[first].base, f = first;
    for (; f < p->n_fields && p->fields[f].word == p->fields[first].word; ++f) {
        const ttftd_field *fd = &p->fields[f];
        uint32_t mask = fd->width >= 32u ? 0xFFFFFFFFu : (1u << fd->width) - 1u;
        /* two's complement of a value already checked to lie in lo..hi */
        w |= ((uint32_t)affine(p, fd->c, fd->t0, fd->nt, exps) & mask) << fd->lsb;
    }
    *next = f;
    return w;
}

static uint32_t bitlen64(uint64_t m) {
    uint32_t n = 0;
    while (m) {
        ++n;
        m >>= 1;
    }
    return n;
}

/* ---- program and state ---------------------------------------------------------------- */
static ttftd_result write_words(ttftd_dev *dev, uint32_t base, const uint32_t *w, uint32_t n) {
    uint32_t i;
    for (i = 0; i < n; ++i) TRY(ttftd_write_reg(dev, base + 4u * i, w[i]));
    return TTFTD_OK;
}

static ttftd_result write_elems(ttftd_dev *dev, uint32_t base, const int32_t *v, uint32_t n) {
    uint32_t i;
    for (i = 0; i < n; ++i) TRY(ttftd_write_reg(dev, base + 4u * i, (uint32_t)v[i]));
    return TTFTD_OK;
}

/* The sample limits a program carries: act_bits that of the header, the labels
 * 0..classes-1 within a signed act_bits element and the engine's softmax. A table
 * generated before it carried them has both 0. */
static int sample_limits_ok(const ttftd_program *p) {
    if (p->act_bits < 2u || p->act_bits > 32u) return 0;
#ifdef TTFORGE_TRAIN_CFG_ACT_BITS
    if (p->act_bits != TTFORGE_TRAIN_CFG_ACT_BITS) return 0;
#endif
    if (p->classes == 0u || (uint64_t)p->classes > (uint64_t)1 << (p->act_bits - 1u)) return 0;
#ifdef TTFORGE_TRAIN_CFG_MAX_CLASSES
    if (p->classes > TTFORGE_TRAIN_CFG_MAX_CLASSES) return 0;
#endif
    return 1;
}

/* EXP_RANGE (dev->range_*, nothing written) unless every exponent variable of `values`
 * lies in its lo..hi and every field it gives in the field's lo..hi: a field is stored
 * as `width`-bit two's complement, so a value past it would be written wrapped. */
static ttftd_result check_ranges(ttftd_dev *dev, const ttftd_program *p, const int32_t *values) {
    uint32_t j, f;
    for (j = 0; j < p->n_vars; ++j)
        if (values[j] < p->vars[j].lo || values[j] > p->vars[j].hi) {
            dev->range_var = (int32_t)j;
            dev->range_value = values[j];
            return TTFTD_EXP_RANGE;
        }
    for (f = 0; f < p->n_fields; ++f) {
        const ttftd_field *fd = &p->fields[f];
        int64_t v = affine(p, fd->c, fd->t0, fd->nt, values);
        if (v < fd->lo || v > fd->hi) {
            dev->range_var = -1 - (int32_t)f;
            dev->range_value = v;
            return TTFTD_EXP_RANGE;
        }
    }
    return TTFTD_OK;
}

/* Write every exponent-dependent DMEM word as `values` (checked) say; clears
 * dev->dmem_stale when all are written. */
static ttftd_result write_fields(ttftd_dev *dev, const ttftd_program *p, const int32_t *values) {
    uint32_t f;
    for (f = 0; f < p->n_fields;) {
        uint32_t addr = TTFORGE_TRAIN_DMEM_BASE + 4u * p->fields[f].word;
        uint32_t w = field_word(p, f, values, &f);
        TRY(ttftd_write_reg(dev, addr, w));
    }
    dev->dmem_stale = 0;
    return TTFTD_OK;
}

ttftd_result ttftd_load_program(ttftd_dev *dev, const ttftd_program *prog) {
    if (!dev || !prog || !prog->dmem || !prog->exps || !prog->scratch || prog->batch == 0) return TTFTD_BAD_ARG;
    if (prog->dmem_words > TTFORGE_TRAIN_DMEM_DEPTH || prog->cmem_size > TTFORGE_TRAIN_CMEM_DEPTH ||
        prog->bmem_size > TTFORGE_TRAIN_BMEM_DEPTH || !sample_limits_ok(prog))
        return TTFTD_BAD_ARG;
    /* the exponents may come from a checkpoint (resume): checked as an update checks them */
    TRY(check_ranges(dev, prog, prog->exps));
    dev->prog = 0;
    TRY(write_words(dev, TTFORGE_TRAIN_DMEM_BASE, prog->dmem, prog->dmem_words));
    /* the exponent-dependent words as the current exponents say (after steps, a reload
     * keeps the exponents the driver reached) */
    TRY(write_fields(dev, prog, prog->exps));
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_BATCH_ADDR, prog->batch));
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_BW_LOG_ADDR, prog->bw_log));
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_IN_COUNT_ADDR, prog->in_count));
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_IN_BASE_ADDR, prog->in_base));
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_STOCH_ADDR, prog->stoch));
    dev->prog = prog;
    return ttftd_load_state(dev, 0, 0, prog->rng);
}

ttftd_result ttftd_load_state(ttftd_dev *dev, const int32_t *cmem, const int32_t *bmem, uint32_t rng) {
    const ttftd_program *p;
    if (!dev || !dev->prog) return TTFTD_BAD_ARG;
    p = dev->prog;
    TRY(write_elems(dev, TTFORGE_TRAIN_CMEM_BASE, cmem ? cmem : p->cmem, p->cmem_size));
    TRY(write_elems(dev, TTFORGE_TRAIN_BMEM_BASE, bmem ? bmem : p->bmem, p->bmem_size));
    return ttftd_write_reg(dev, TTFORGE_TRAIN_RNG_ADDR, rng);
}

ttftd_result ttftd_read_maxacc(ttftd_dev *dev, uint32_t op, uint64_t *value) {
    uint32_t lo = 0, hi = 0;
    if (!dev || !value || 2u * op + 1u >= TTFORGE_TRAIN_MAXACC_DEPTH) return TTFTD_BAD_ARG;
    TRY(ttftd_read_reg(dev, TTFORGE_TRAIN_MAXACC_BASE + 8u * op, &lo));
    TRY(ttftd_read_reg(dev, TTFORGE_TRAIN_MAXACC_BASE + 8u * op + 4u, &hi));
    *value = (uint64_t)hi << 32 | lo;
    return TTFTD_OK;
}

static ttftd_result read_elems(ttftd_dev *dev, uint32_t base, int32_t *v, uint32_t n) {
    uint32_t i, w = 0;
    for (i = 0; i < n; ++i) {
        TRY(ttftd_read_reg(dev, base + 4u * i, &w));
        v[i] = (int32_t)w; /* the windows read back sign-extended to 32 bits */
    }
    return TTFTD_OK;
}

ttftd_result ttftd_read_state(ttftd_dev *dev, int32_t *cmem, uint32_t cmem_n, int32_t *bmem, uint32_t bmem_n,
                              uint32_t *rng) {
    if (!dev || cmem_n > TTFORGE_TRAIN_CMEM_DEPTH || bmem_n > TTFORGE_TRAIN_BMEM_DEPTH) return TTFTD_BAD_ARG;
    if (cmem) TRY(read_elems(dev, TTFORGE_TRAIN_CMEM_BASE, cmem, cmem_n));
    if (bmem) TRY(read_elems(dev, TTFORGE_TRAIN_BMEM_BASE, bmem, bmem_n));
    return rng ? ttftd_read_reg(dev, TTFORGE_TRAIN_RNG_ADDR, rng) : TTFTD_OK;
}

ttftd_result ttftd_update_exponents(ttftd_dev *dev) {
    const ttftd_program *p;
    uint32_t j, f;
    if (!dev || !dev->prog) return TTFTD_BAD_ARG;
    p = dev->prog;
    dev->rewritten = 0;
    /* the next exponents, all from the exponents before the step */
    for (j = 0; j < p->n_vars; ++j) {
        const ttftd_var *v = &p->vars[j];
        uint64_t m = 0;
        int64_t e;
        TRY(ttftd_read_maxacc(dev, v->op, &m));
        e = affine(p, v->c, v->t0, v->nt, p->exps);
        if (bitlen64(m) + 1u > v->bits) e += (int64_t)(bitlen64(m) + 1u - v->bits);
        if (e < v->lo || e > v->hi) {
            dev->range_var = (int32_t)j;
            dev->range_value = e;
            return TTFTD_EXP_RANGE;
        }
        p->scratch[j] = (int32_t)e;
    }
    /* every field must fit before anything is written */
    TRY(check_ranges(dev, p, p->scratch));
    /* rewrite the words that changed; after a rewrite that failed part-way
     * (dev->dmem_stale) the DMEM matches neither exponent set, so every word */
    for (f = 0; f < p->n_fields;) {
        uint32_t addr = TTFORGE_TRAIN_DMEM_BASE + 4u * p->fields[f].word, next = f;
        uint32_t old = field_word(p, f, p->exps, &next);
        uint32_t neu = field_word(p, f, p->scratch, &next);
        if (neu != old || dev->dmem_stale) {
            ttftd_result r = ttftd_write_reg(dev, addr, neu);
            if (r != TTFTD_OK) {
                /* some words hold the new exponents' fields, the rest the old ones,
                 * and the exponents stay the old: repaired before anything else runs */
                dev->dmem_stale = 1;
                return r;
            }
            ++dev->rewritten;
        }
        f = next;
    }
    dev->dmem_stale = 0;
    for (j = 0; j < p->n_vars; ++j) p->exps[j] = p->scratch[j];
    return TTFTD_OK;
}

/* ---- running ------------------------------------------------------------------------ */
ttftd_result ttftd_status(ttftd_dev *dev, uint32_t *status) {
    return ttftd_read_reg(dev, TTFORGE_TRAIN_STATUS_ADDR, status);
}

ttftd_result ttftd_read_error(ttftd_dev *dev, uint32_t *code, uint32_t *op) {
    uint32_t v = 0;
    TRY(ttftd_read_reg(dev, TTFORGE_TRAIN_ERROR_CODE_ADDR, &v));
    if (code) *code = (v & TTFORGE_TRAIN_ERROR_CODE_CODE_MASK) >> TTFORGE_TRAIN_ERROR_CODE_CODE_SHIFT;
    if (op) *op = (v & TTFORGE_TRAIN_ERROR_CODE_OP_MASK) >> TTFORGE_TRAIN_ERROR_CODE_OP_SHIFT;
    return TTFTD_OK;
}

ttftd_result ttftd_clear_error(ttftd_dev *dev) {
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_CMD_ADDR, TTFORGE_TRAIN_CMD_CLEAR_ERROR_MASK));
    return ttftd_write_reg(dev, TTFORGE_TRAIN_IRQ_STATUS_ADDR,
                           TTFORGE_TRAIN_IRQ_STATUS_DONE_MASK | TTFORGE_TRAIN_IRQ_STATUS_ERROR_MASK);
}

ttftd_result ttftd_soft_reset(ttftd_dev *dev) {
    return ttftd_write_reg(dev, TTFORGE_TRAIN_CMD_ADDR, TTFORGE_TRAIN_CMD_SOFT_RESET_MASK);
}

static ttftd_result counter(ttftd_dev *dev, uint32_t lo_addr, uint64_t *value) {
    uint32_t lo = 0, hi = 0;
    TRY(ttftd_read_reg(dev, lo_addr, &lo)); /* LO first: it latches HI */
    TRY(ttftd_read_reg(dev, lo_addr + 4u, &hi));
    *value = (uint64_t)hi << 32 | lo;
    return TTFTD_OK;
}

ttftd_result ttftd_read_counters(ttftd_dev *dev, ttftd_counters *c) {
    if (!c) return TTFTD_BAD_ARG;
    TRY(counter(dev, TTFORGE_TRAIN_CYCLES_LO_ADDR, &c->cycles));
    TRY(counter(dev, TTFORGE_TRAIN_MAC_CYCLES_LO_ADDR, &c->mac_cycles));
    TRY(ttftd_read_reg(dev, TTFORGE_TRAIN_STEPS_ADDR, &c->steps));
    return ttftd_read_reg(dev, TTFORGE_TRAIN_CHANGED_ADDR, &c->changed);
}

/* BAD_SAMPLE (the first offending element in dev->sample_*) unless every feature of the
 * batch fits the signed act_bits stream element and every label is a class: the stream
 * keeps only an element's low act_bits, so a feature out of range would train as another
 * value and a label wrap to another class (or stop the engine with BAD_LABEL mid-step). */
static ttftd_result check_samples(ttftd_dev *dev, const int32_t *samples, uint32_t batch) {
    const ttftd_program *p = dev->prog;
    const int64_t f_lo = -((int64_t)1 << (p->act_bits - 1u)), f_hi = ((int64_t)1 << (p->act_bits - 1u)) - 1;
    const int64_t l_hi = (int64_t)p->classes - 1;
    uint32_t b, e;
    for (b = 0; b < batch; ++b)
        for (e = 0; e <= p->in_count; ++e) {
            int32_t v = samples[(size_t)b * (p->in_count + 1u) + e];
            int64_t lo = e < p->in_count ? f_lo : 0, hi = e < p->in_count ? f_hi : l_hi;
            if (v < lo || v > hi) {
                dev->sample_index = b;
                dev->sample_elem = e;
                dev->sample_value = v;
                dev->sample_lo = (int32_t)lo;
                dev->sample_hi = (int32_t)hi;
                return TTFTD_BAD_SAMPLE;
            }
        }
    return TTFTD_OK;
}

ttftd_result ttftd_run_batch(ttftd_dev *dev, const int32_t *samples, uint32_t batch) {
    const ttftd_program *p;
    uint32_t b, poll, status = 0;
    if (!dev || !samples || !dev->prog) return TTFTD_BAD_ARG;
    p = dev->prog;
    if (batch != p->batch) return TTFTD_BAD_ARG;
    if (!dev->hooks.stream_send) return TTFTD_NO_STREAM;
    TRY(check_samples(dev, samples, batch)); /* before any bus access: the core as it was */
    /* an update that failed part-way left the descriptors half rewritten: back to the
     * exponents kept before the step runs on them */
    if (dev->dmem_stale) TRY(write_fields(dev, p, p->exps));
    TRY(ttftd_status(dev, &status));
    if (status & TTFORGE_TRAIN_STATUS_ERROR_MASK) { /* an error left from before: clear it first */
        TRY(ttftd_read_error(dev, &dev->hw_code, &dev->hw_op));
        return TTFTD_HW_ERROR;
    }
    TRY(ttftd_write_reg(dev, TTFORGE_TRAIN_CMD_ADDR, TTFORGE_TRAIN_CMD_START_MASK));
    for (b = 0; b < batch; ++b) /* a sample: IN_COUNT features, then its label */
        if (dev->hooks.stream_send(dev->hooks.ctx, samples + (size_t)b * (p->in_count + 1u), p->in_count + 1u) != 0)
            return TTFTD_STREAM_ERROR;
    for (poll = 0; poll < dev->timeout_polls; ++poll) {
        TRY(ttftd_status(dev, &status));
        if (status & TTFORGE_TRAIN_STATUS_ERROR_MASK) {
            TRY(ttftd_read_error(dev, &dev->hw_code, &dev->hw_op));
            return TTFTD_HW_ERROR;
        }
        if (status & TTFORGE_TRAIN_STATUS_DONE_MASK) return TTFTD_OK;
        if (dev->hooks.wait) dev->hooks.wait(dev->hooks.ctx, dev->poll_wait);
    }
    return TTFTD_TIMEOUT;
}

ttftd_result ttftd_step(ttftd_dev *dev, const int32_t *samples, uint32_t batch) {
    TRY(ttftd_run_batch(dev, samples, batch));
    return ttftd_update_exponents(dev);
}
