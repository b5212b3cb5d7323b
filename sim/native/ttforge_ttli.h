/* Checks of a binary load image (load_image.bin, "TTLI" version 2) against the register
 * header it is loaded with. Header-only (C99, also valid C++), so the C driver
 * (ttfd_load_bytes) and the native harness (sim/native/main.cpp) read the format through
 * the same code. The format is described in docs/hardware.md ("Load image"):
 *
 *   "TTLI", then little-endian u32: version (2), write count n, config word count k,
 *   the k config words (TTFORGE_IMAGE_CONFIG of the header it was made with), n pairs
 *   (address, data), and last the CRC-32 (zlib's) of all the bytes before it.
 *
 * ttfi_check reads the whole image and changes nothing: a loader calls it before its
 * first bus write, so a corrupt image, one for another config or one with a write outside
 * the core's AXI4-Lite window is refused with no write made. */
#ifndef TTFORGE_TTLI_H
#define TTFORGE_TTLI_H

#include <stddef.h>
#include <stdint.h>

#include "ttforge_regs.h"

#define TTFI_FORMAT_VERSION 2u
#define TTFI_HEAD_BYTES 16u /* magic, version, count, config word count */

typedef enum ttfi_status {
    TTFI_OK = 0,
    TTFI_NOT_IMAGE = 1, /* no TTLI magic, or shorter than an empty image */
    TTFI_VERSION = 2,   /* another format version (info->version) */
    TTFI_LENGTH = 3,    /* the length differs from what the header says: truncated or padded */
    TTFI_CRC = 4,       /* the CRC-32 differs: the bytes are corrupt */
    TTFI_CONFIG = 5,    /* made for another config: word info->config_index differs */
    TTFI_ADDRESS = 6    /* write info->config_index has the address info->config_got, outside the
                         * core's 2^TTFORGE_ADDR_BITS-byte AXI4-Lite window (0..info->config_expected)
                         * or not 4-byte aligned: a memory-mapped loader would write
                         * past the core */
} ttfi_status;

typedef struct ttfi_info {
    uint32_t version;      /* the image's format version (when it has the magic) */
    uint32_t count;        /* the number of writes (TTFI_OK) */
    const uint8_t *writes; /* the first (address, data) pair, 8 bytes each (TTFI_OK) */
    uint32_t config_index; /* TTFI_CONFIG: which word (TTFORGE_IMAGE_CONFIG_NAMES[i]) ... */
    uint32_t config_got;   /* ... the image's value ... */
    uint32_t config_expected; /* ... and the header's (index TTFORGE_IMAGE_CONFIG_WORDS: the
                                 word counts, from another ttforge). TTFI_ADDRESS: the write's
                                 index, its address and the window's last byte address */
} ttfi_info;

/* Whether a write address lies in the core's 2^TTFORGE_ADDR_BITS-byte window and is
 * word-aligned (base + addr is all a memory-mapped write hook computes). */
static inline int ttfi_address_ok(uint32_t a) {
    return ((uint64_t)a >> TTFORGE_ADDR_BITS) == 0u && (a & 3u) == 0u;
}

/* The window's last byte address (TTFI_ADDRESS's config_expected). */
static inline uint32_t ttfi_window_last(void) {
    return (uint32_t)(((uint64_t)1 << TTFORGE_ADDR_BITS) - 1u);
}

static inline uint32_t ttfi_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32), bit by bit: no table in a small target's RAM. */
static inline uint32_t ttfi_crc32(const uint8_t *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int b;
    for (i = 0; i < n; ++i) {
        crc ^= p[i];
        for (b = 0; b < 8; ++b) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* Check data[0..len) whole: magic, version, length, CRC-32, the config words against
 * TTFORGE_IMAGE_CONFIG, then every write's address against the window. Fills *info (may
 * be NULL). */
static inline ttfi_status ttfi_check(const uint8_t *data, size_t len, ttfi_info *info) {
    static const uint32_t expect[] = TTFORGE_IMAGE_CONFIG;
    ttfi_info junk;
    uint32_t k, i;
    size_t rest;
    if (!info) info = &junk;
    info->version = info->count = info->config_index = info->config_got = info->config_expected = 0;
    info->writes = 0;
    if (!data || len < TTFI_HEAD_BYTES + 4u || data[0] != 'T' || data[1] != 'T' || data[2] != 'L' ||
        data[3] != 'I')
        return TTFI_NOT_IMAGE;
    info->version = ttfi_le32(data + 4);
    if (info->version != TTFI_FORMAT_VERSION) return TTFI_VERSION;
    info->count = ttfi_le32(data + 8);
    k = ttfi_le32(data + 12);
    /* len = 16 + 4k + 8n + 4, compared without overflow for any k and n */
    rest = len - TTFI_HEAD_BYTES - 4u;
    if (rest / 4u < k) return TTFI_LENGTH;
    rest -= 4u * (size_t)k;
    if (rest % 8u != 0 || rest / 8u != info->count) return TTFI_LENGTH;
    if (ttfi_crc32(data, len - 4u) != ttfi_le32(data + len - 4u)) return TTFI_CRC;
    if (k != sizeof expect / sizeof expect[0]) { /* another ttforge: index one past the last */
        info->config_index = (uint32_t)(sizeof expect / sizeof expect[0]);
        info->config_got = k;
        info->config_expected = (uint32_t)(sizeof expect / sizeof expect[0]);
        return TTFI_CONFIG;
    }
    for (i = 0; i < k; ++i) {
        uint32_t v = ttfi_le32(data + TTFI_HEAD_BYTES + 4u * i);
        if (v != expect[i]) {
            info->config_index = i;
            info->config_got = v;
            info->config_expected = expect[i];
            return TTFI_CONFIG;
        }
    }
    /* a CRC-valid image can still be made by hand: every address must lie in the core's
     * window (base + addr is all a memory-mapped write hook computes) */
    for (i = 0; i < info->count; ++i) {
        uint32_t a = ttfi_le32(data + TTFI_HEAD_BYTES + 4u * (size_t)k + 8u * (size_t)i);
        if (!ttfi_address_ok(a)) {
            info->config_index = i;
            info->config_got = a;
            info->config_expected = ttfi_window_last();
            return TTFI_ADDRESS;
        }
    }
    info->writes = data + TTFI_HEAD_BYTES + 4u * (size_t)k;
    return TTFI_OK;
}

/* One line for a status ("a CRC-32 mismatch: the image is corrupt", ...). */
static inline const char *ttfi_status_text(ttfi_status s) {
    switch (s) {
    case TTFI_OK: return "ok";
    case TTFI_NOT_IMAGE: return "not a ttforge load image (no TTLI header)";
    case TTFI_VERSION: return "another load image version; regenerate it with ttforge generate";
    case TTFI_LENGTH: return "the length differs from its header (truncated or padded); regenerate it";
    case TTFI_CRC: return "the CRC-32 differs from its contents: the image is corrupt; regenerate it";
    case TTFI_CONFIG: return "made for another accelerator configuration; regenerate it for this one";
    case TTFI_ADDRESS: return "a write address lies outside the core's AXI4-Lite window or is not 4-byte aligned; regenerate it";
    }
    return "?";
}

#endif /* TTFORGE_TTLI_H */
