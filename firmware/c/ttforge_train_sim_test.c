/* ttforge C training driver, run on the Verilated training top through the shim (the
 * test program of tests/firmware/test_train_c_driver.py, and an example of the driver).
 *
 *   ttforge_train_sim_test SAMPLES [--steps N] [--seed S] [--gaps P] [--timeout-polls N]
 *                          [--flip STEP ADDR BIT] [--reload-at K] [--names]
 *
 * The program is compiled in (ttforge.firmware.train_c_driver.train_program_c, symbol
 * ttforge_train_program). SAMPLES is a TTVI file of batch * steps rows of IN_COUNT + 1
 * elements (the features, then the label); every `batch` rows are one ttftd_step.
 * --gaps: the probability that the stream source idles a cycle before a beat.
 * --flip: during step STEP (0-based), flip bit BIT of every word read from byte address
 * ADDR (a fault on the bus, e.g. in MAXACC). --reload-at K: after step K, read the state
 * back, reset the model and load the program and the state again (a checkpoint and a
 * resume). --names: print the engine error names and exit.
 * Prints "key value" lines (arrays as "key v0 v1 ..."): result, steps, hw_code, hw_op,
 * hw_name, bus_addr, mismatch_addr, range_var, range_value, [range_label,] [bad_sample,] rewritten, the
 * counters, rng, exps, cmem, bmem. Exit status 0 (the result is printed), 2 for bad arguments or files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttforge_train_sim_hooks.h"

extern const ttftd_program ttforge_train_program;

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "ttforge_train_sim_test: %s%s\n", msg, arg ? arg : "");
    exit(2);
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* a read fault: the bus hook of the shim, with one bit flipped at one address in one step */
static struct {
    int (*read32)(void *ctx, uint32_t addr, uint32_t *data);
    long step, at_step;
    uint32_t addr, bit;
} flip = {0, 0, -1, 0, 0};

static int flip_read32(void *ctx, uint32_t addr, uint32_t *data) {
    int r = flip.read32(ctx, addr, data);
    if (flip.step == flip.at_step && addr == flip.addr) *data ^= 1u << flip.bit;
    return r;
}

static void print_array(const char *key, const int32_t *v, uint32_t n) {
    uint32_t i;
    printf("%s", key);
    for (i = 0; i < n; ++i) printf(" %ld", (long)v[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    const ttftd_program *p = &ttforge_train_program;
    ttftd_dev dev;
    ttftd_hooks hooks;
    ttftd_counters c;
    ttftd_result r = TTFTD_OK;
    FILE *f;
    uint8_t head[16];
    int32_t *samples, *cmem, *bmem;
    uint32_t rows, cols, i, rng = 0, rewritten = 0;
    long steps = -1, k, reload_at = -1;
    unsigned long seed = 0;
    double gaps = 0.0;
    void *sim;
    int a;

    if (argc >= 2 && strcmp(argv[1], "--names") == 0) {
        for (i = 0; i < 32u; ++i) printf("hw_name_%u %s\n", (unsigned)i, ttftd_hw_error_name(i));
        return 0;
    }
    if (argc < 2) die("usage: ttforge_train_sim_test SAMPLES [options]", 0);
    for (a = 2; a < argc; ++a) {
        if (strcmp(argv[a], "--steps") == 0 && a + 1 < argc) steps = atol(argv[++a]);
        else if (strcmp(argv[a], "--seed") == 0 && a + 1 < argc) seed = strtoul(argv[++a], 0, 10);
        else if (strcmp(argv[a], "--gaps") == 0 && a + 1 < argc) gaps = atof(argv[++a]);
        else if (strcmp(argv[a], "--timeout-polls") == 0 && a + 1 < argc) ++a; /* applied after ttftd_init */
        else if (strcmp(argv[a], "--flip") == 0 && a + 3 < argc) {
            flip.at_step = atol(argv[++a]);
            flip.addr = (uint32_t)strtoul(argv[++a], 0, 0);
            flip.bit = (uint32_t)atol(argv[++a]);
        } else if (strcmp(argv[a], "--reload-at") == 0 && a + 1 < argc) reload_at = atol(argv[++a]);
        else die("unknown argument ", argv[a]);
    }
    /* the samples: TTVI, version 1, rows, columns, int32 elements */
    f = fopen(argv[1], "rb");
    if (!f || fread(head, 1, 16, f) != 16 || memcmp(head, "TTVI", 4) != 0 || le32(head + 4) != 1u)
        die("not a TTVI file: ", argv[1]);
    rows = le32(head + 8);
    cols = le32(head + 12);
    if (cols != p->in_count + 1u || rows % p->batch != 0) die("samples of the wrong shape: ", argv[1]);
    samples = (int32_t *)malloc((size_t)rows * cols * sizeof(int32_t) + 1);
    cmem = (int32_t *)malloc((size_t)p->cmem_size * sizeof(int32_t) + 4);
    bmem = (int32_t *)malloc((size_t)p->bmem_size * sizeof(int32_t) + 4);
    if (!samples || !cmem || !bmem) die("out of memory", 0);
    for (i = 0; i < rows * cols; ++i) {
        uint8_t b[4];
        if (fread(b, 1, 4, f) != 4) die("truncated: ", argv[1]);
        samples[i] = (int32_t)le32(b);
    }
    fclose(f);
    if (steps < 0 || steps > (long)(rows / p->batch)) steps = (long)(rows / p->batch);

    sim = ttf_sim_open();
    if (!sim) die("cannot open the model", 0);
    ttf_axis_config(sim, seed, gaps, 0.0);
    ttftd_sim_hooks(&hooks, sim);
    flip.read32 = hooks.read32;
    hooks.read32 = flip_read32;
    r = ttftd_init(&dev, &hooks);
    for (a = 2; a < argc; ++a) /* options that set driver fields, now that init set the defaults */
        if (strcmp(argv[a], "--timeout-polls") == 0) dev.timeout_polls = (uint32_t)atol(argv[a + 1]);
    if (r == TTFTD_OK) r = ttftd_load_program(&dev, p);
    for (k = 0; r == TTFTD_OK && k < steps; ++k) {
        flip.step = k;
        r = ttftd_step(&dev, samples + (size_t)k * p->batch * cols, p->batch);
        rewritten += dev.rewritten;
        if (r == TTFTD_OK && k == reload_at) {
            /* checkpoint: the state read back; resume: a reset core, the program (its
             * descriptors as the driver's exponents say) and the state loaded again */
            r = ttftd_read_state(&dev, cmem, p->cmem_size, bmem, p->bmem_size, &rng);
            ttf_sim_reset(sim, 4);
            if (r == TTFTD_OK) r = ttftd_load_program(&dev, p);
            if (r == TTFTD_OK) r = ttftd_load_state(&dev, cmem, bmem, rng);
        }
    }
    flip.step = -2;
    printf("result %s\n", ttftd_result_name(r));
    printf("steps %ld\n", r == TTFTD_OK ? k : k - 1);
    printf("hw_code %u\nhw_op %u\nhw_name %s\n", (unsigned)dev.hw_code, (unsigned)dev.hw_op,
           ttftd_hw_error_name(dev.hw_code));
    printf("bus_addr %u\nmismatch_addr %u\nmismatch_got %u\n", (unsigned)dev.bus_addr,
           (unsigned)dev.mismatch_addr, (unsigned)dev.mismatch_got);
    printf("range_var %ld\nrange_value %lld\nrewritten %u\n", (long)dev.range_var, (long long)dev.range_value,
           (unsigned)rewritten);
    if (r == TTFTD_EXP_RANGE && dev.range_var < 0) printf("range_label %s\n", p->labels[-1 - dev.range_var]);
    if (r == TTFTD_BAD_SAMPLE) /* one line: which sample and element, its value, the range it left */
        printf("bad_sample sample %u of step %ld, element %u (%s): %ld is outside %ld..%ld\n",
               (unsigned)dev.sample_index, k - 1, (unsigned)dev.sample_elem,
               dev.sample_elem < p->in_count ? "a feature, signed act_bits" : "the label, a class",
               (long)dev.sample_value, (long)dev.sample_lo, (long)dev.sample_hi);
    if (r != TTFTD_MISMATCH && ttftd_read_counters(&dev, &c) == TTFTD_OK)
        printf("cycles %llu\nmac_cycles %llu\nhw_steps %u\nchanged %u\n", (unsigned long long)c.cycles,
               (unsigned long long)c.mac_cycles, (unsigned)c.steps, (unsigned)c.changed);
    if (r != TTFTD_MISMATCH && ttftd_read_state(&dev, cmem, p->cmem_size, bmem, p->bmem_size, &rng) == TTFTD_OK) {
        printf("rng %u\n", (unsigned)rng);
        print_array("cmem", cmem, p->cmem_size);
        print_array("bmem", bmem, p->bmem_size);
    }
    print_array("exps", p->exps, p->n_vars);
    printf("sim_cycles %llu\n", (unsigned long long)ttf_sim_cycles(sim));
    ttf_sim_close(sim);
    free(samples);
    free(cmem);
    free(bmem);
    return 0;
}
