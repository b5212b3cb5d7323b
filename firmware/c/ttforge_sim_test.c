/* ttforge C driver, run on the Verilated model through the shim (the test program of
 * tests/firmware/test_c_driver.py, and an example of the driver's use).
 *
 *   ttforge_sim_test IMAGE INPUTS OUTPUTS [--seed N] [--gaps P] [--backpressure P]
 *                    [--timeout-polls N] [--disable] [--recover IMAGE] [--batch K]
 *
 * IMAGE is a TTLI load image (load_image.bin), or "-" for the image compiled in
 * (ttforge.firmware.c_driver.load_image_c, built with -DTTFD_BUILTIN_IMAGE). INPUTS is
 * a TTVI vector file, OUTPUTS receives every output vector produced (TTVO), one
 * ttfd_run per input vector. --disable clears CTRL.ENABLE after the load (the input
 * stream is then never accepted). --recover: after a failed run, soft-reset, load this
 * image and run every vector again. --batch K: keep up to K vectors in flight
 * (ttfd_submit ahead, ttfd_collect in order) instead of one ttfd_run per vector. Prints "key value" lines: result, hw_code, hw_step,
 * bus_addr, mismatch_addr, mismatch_got, [recover,] vectors, the counters, sim_cycles.
 * Exit status 0 (the result is printed), 2 for bad arguments or files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttforge_driver.h"
#include "ttforge_sim_hooks.h"

#ifdef TTFD_BUILTIN_IMAGE
extern const ttfd_write ttforge_image[];
extern const uint32_t ttforge_image_count;
#endif

/* die() never returns: said to the compilers that understand it, so that their flow
 * analysis does not see a use of a variable die() was called instead of setting */
#if defined(__GNUC__) || defined(__clang__)
#define TTFD_NORETURN __attribute__((noreturn))
#else
#define TTFD_NORETURN
#endif

static TTFD_NORETURN void die(const char *msg, const char *arg) {
    fprintf(stderr, "ttforge_sim_test: %s%s\n", msg, arg ? arg : "");
    exit(2);
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n = -1;   /* set before use; initialised for compilers that cannot tell */
    if (!f) die("cannot open ", path);
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) die("cannot read ", path);
    buf = (uint8_t *)malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read ", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(FILE *f, uint32_t v) {
    uint8_t b[4];
    b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
    fwrite(b, 1, 4, f);
}

static ttfd_result load(ttfd_dev *dev, const char *image) {
    ttfd_result r;
#ifdef TTFD_BUILTIN_IMAGE
    if (strcmp(image, "-") == 0) return ttfd_load(dev, ttforge_image, ttforge_image_count);
#endif
    {
        size_t len;
        uint8_t *data = read_file(image, &len);
        r = ttfd_load_bytes(dev, data, len);
        free(data);
    }
    return r;
}

int main(int argc, char **argv) {
    const char *image, *recover = NULL;
    uint64_t seed = 0;
    double gaps = 0.0, bp = 0.0;
    long timeout_polls = -1;
    int disable = 0, i;
    uint32_t batch = 1;
    size_t in_len;
    uint8_t *in_file;
    uint32_t vectors, elems, done = 0, v;
    int32_t *out;
    FILE *of;
    void *sim;
    ttfd_hooks hooks;
    ttfd_dev dev;
    ttfd_counters c;
    ttfd_result r;

    if (argc < 4) die("usage: ttforge_sim_test IMAGE INPUTS OUTPUTS [options]", NULL);
    image = argv[1];
    for (i = 4; i < argc; ++i) {
        if (strcmp(argv[i], "--disable") == 0) { disable = 1; continue; }
        if (i + 1 >= argc) die("missing value for ", argv[i]);
        if (strcmp(argv[i], "--seed") == 0) seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--gaps") == 0) gaps = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--backpressure") == 0) bp = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--timeout-polls") == 0) timeout_polls = strtol(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--recover") == 0) recover = argv[++i];
        else if (strcmp(argv[i], "--batch") == 0) batch = (uint32_t)strtoul(argv[++i], NULL, 0);
        else die("unknown option ", argv[i]);
    }
    in_file = read_file(argv[2], &in_len);
    if (in_len < 16 || memcmp(in_file, "TTVI", 4) != 0) die("not a TTVI file: ", argv[2]);
    vectors = le32(in_file + 8);
    elems = le32(in_file + 12);
    if (in_len != 16 + 4 * (size_t)vectors * elems) die("truncated: ", argv[2]);

    sim = ttf_sim_open();
    if (!sim) die("ttf_sim_open failed", NULL);
    ttf_axis_config(sim, seed, gaps, bp);
    ttfd_sim_hooks(&hooks, sim);
    r = ttfd_init(&dev, &hooks);
    if (r == TTFD_OK) r = load(&dev, image);
    if (r == TTFD_OK) ttfd_sim_set_out_count(sim, dev.out_count);
    if (r == TTFD_OK && disable) r = ttfd_write_reg(&dev, TTFORGE_CTRL_ADDR, 0);
    if (timeout_polls >= 0) dev.timeout_polls = (uint32_t)timeout_polls;
    out = (int32_t *)malloc(sizeof(int32_t) * ((size_t)vectors * (dev.out_count ? dev.out_count : 1u) + 1u));
    if (!out) die("out of memory", NULL);
    if (elems > 4096) die("vectors longer than 4096 elements", NULL);
    if (batch <= 1) {
        for (v = 0; r == TTFD_OK && v < vectors; ++v) {
            int32_t x[4096];
            uint32_t k;
            for (k = 0; k < elems; ++k) x[k] = (int32_t)le32(in_file + 16 + 4 * ((size_t)v * elems + k));
            r = ttfd_run(&dev, x, elems, out + (size_t)done * dev.out_count, dev.out_count);
            if (r == TTFD_OK) ++done;
        }
    } else {
        uint32_t sent = 0;
        while (r == TTFD_OK && done < vectors) {
            while (r == TTFD_OK && sent < vectors && sent - done < batch) {
                int32_t x[4096];
                uint32_t k;
                for (k = 0; k < elems; ++k) x[k] = (int32_t)le32(in_file + 16 + 4 * ((size_t)sent * elems + k));
                r = ttfd_submit(&dev, x, elems);
                if (r == TTFD_OK) ++sent;
            }
            if (r == TTFD_OK) r = ttfd_collect(&dev, out + (size_t)done * dev.out_count, dev.out_count);
            if (r == TTFD_OK) ++done;
        }
    }
    printf("result %s\nhw_code %u\nhw_step %u\nbus_addr %u\nmismatch_addr %u\nmismatch_got %u\n",
           ttfd_result_name(r), (unsigned)dev.hw_code, (unsigned)dev.hw_step, (unsigned)dev.bus_addr,
           (unsigned)dev.mismatch_addr, (unsigned)dev.mismatch_got);
    if (r != TTFD_OK && recover) {
        ttfd_result r2 = ttfd_soft_reset(&dev);
        done = 0;
        if (r2 == TTFD_OK) r2 = ttfd_clear_error(&dev);
        if (r2 == TTFD_OK) r2 = load(&dev, recover);
        dev.timeout_polls = TTFD_DEFAULT_TIMEOUT_POLLS;
        for (v = 0; r2 == TTFD_OK && v < vectors; ++v) {
            int32_t x[4096];
            uint32_t k;
            for (k = 0; k < elems; ++k) x[k] = (int32_t)le32(in_file + 16 + 4 * ((size_t)v * elems + k));
            r2 = ttfd_run(&dev, x, elems, out + (size_t)done * dev.out_count, dev.out_count);
            if (r2 == TTFD_OK) ++done;
        }
        printf("recover %s\n", ttfd_result_name(r2));
    }
    printf("vectors %u\n", (unsigned)done);
    ttf_sim_tick(sim, 4); /* the counters are final a cycle after the last output */
    if (ttfd_read_counters(&dev, &c) == TTFD_OK)
        printf("cycles %llu\nbusy_lane_cycles %llu\nin_stall %llu\nout_stall %llu\nsat_events %llu\n"
               "counter_vectors %llu\n", (unsigned long long)c.cycles, (unsigned long long)c.busy_lane_cycles,
               (unsigned long long)c.in_stall, (unsigned long long)c.out_stall,
               (unsigned long long)c.sat_events, (unsigned long long)c.vectors);
    printf("sim_cycles %llu\n", (unsigned long long)ttf_sim_cycles(sim));
    of = fopen(argv[3], "wb");
    if (!of) die("cannot write ", argv[3]);
    fwrite("TTVO", 1, 4, of);
    put32(of, 1);
    put32(of, done);
    put32(of, dev.out_count);
    for (v = 0; v < done * dev.out_count; ++v) put32(of, (uint32_t)out[v]);
    fclose(of);
    free(out);
    free(in_file);
    ttf_sim_close(sim);
    return 0;
}
