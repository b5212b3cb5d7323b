// ttforge native harness: bulk regression runner.
//
//   ttf_native --image load_image.bin --inputs inputs.bin --outputs outputs.bin
//              --report report.json [--seed N] [--gaps P] [--backpressure P]
//              [--timeout CYCLES]
//
// Checks the TTLI load image whole (ttforge_ttli.h: version, length, CRC-32, the config it
// was made for), loads it over AXI4-Lite (every write must answer OKAY), checks ID,
// CFG_LANES and CFG_WIDTHS against the register header it was built with, streams all
// input vectors back to back (AXI4-Stream, optional random tvalid gaps and tready
// back-pressure from a seeded xorshift), collects every output vector, reads the
// performance counters, STATUS and ERROR_CODE over AXI4-Lite and writes:
//   outputs.bin  "TTVO", u32 version 1, u32 vectors, u32 elements, then int32 LE
//   report.json  counters, cycles, wall time, status (see docs/native-harness.md)
// Input file: "TTVI", u32 version 1, u32 vectors, u32 elements, then int32 LE.
// Exit status: 0 all outputs received; 2 bad input (one line on stderr, nothing
// written); 3 the simulation failed (timeout, engine error, malformed output vector;
// the report is still written, with "ok": false); 4 an output could not be written
// (a full disk, a file-size limit: one line naming the file and the system's reason,
// and neither output left).
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ttf_sim.h"
#include "ttforge_ttli.h"

namespace {

[[noreturn]] void fail(const std::string& msg) {
    std::fprintf(stderr, "ttf_native: %s\n", msg.c_str());
    std::exit(2);
}

// An output that could not be written whole (a full disk: fwrite and fclose fail, and
// the report was left truncated, which the caller read as a damaged JSON, an ERROR of the
// case): one line naming it and the reason, both outputs removed, exit 4.
std::string g_outputs, g_report;

[[noreturn]] void write_failed(const std::string& path, int err) {
    std::fprintf(stderr, "ttf_native: cannot write %s: %s\n", path.c_str(), std::strerror(err));
    std::remove(g_outputs.c_str());
    std::remove(g_report.c_str());
    std::exit(4);
}

FILE* open_output(const std::string& path, const char* mode) {
    FILE* f = std::fopen(path.c_str(), mode);
    if (!f) write_failed(path, errno);
    return f;
}

void close_output(FILE* f, const std::string& path) {
    const bool bad = std::ferror(f) != 0;   // an earlier write failed; errno still says why
    const int err = errno;
    if (std::fclose(f) != 0) write_failed(path, errno);   // the last buffer's write
    if (bad) write_failed(path, err ? err : EIO);
}

std::vector<uint8_t> read_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail("cannot open " + path);
    std::vector<uint8_t> data;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

uint32_t u32_at(const std::vector<uint8_t>& d, size_t off) {
    return static_cast<uint32_t>(d[off]) | static_cast<uint32_t>(d[off + 1]) << 8 |
           static_cast<uint32_t>(d[off + 2]) << 16 | static_cast<uint32_t>(d[off + 3]) << 24;
}

void put_u32(FILE* f, uint32_t v) {
    uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                    static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
    std::fwrite(b, 1, 4, f);
}

struct Vectors {
    uint32_t count = 0, elems = 0;
    std::vector<int32_t> data;
};

Vectors read_vectors(const std::string& path) {
    std::vector<uint8_t> d = read_file(path);
    if (d.size() < 16 || std::memcmp(d.data(), "TTVI", 4) != 0)
        fail(path + " is not a TTVI vector file (magic TTVI)");
    if (u32_at(d, 4) != 1) fail(path + ": TTVI version " + std::to_string(u32_at(d, 4)) + " is not 1");
    Vectors v;
    v.count = u32_at(d, 8);
    v.elems = u32_at(d, 12);
    uint64_t need = 16 + 4ull * v.count * v.elems;
    if (d.size() != need) fail(path + " has " + std::to_string(d.size()) + " bytes; its header needs " +
                               std::to_string(need));
    v.data.resize(static_cast<size_t>(v.count) * v.elems);
    for (size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<int32_t>(u32_at(d, 16 + 4 * i));
    return v;
}

std::vector<std::pair<uint32_t, uint32_t>> read_image(const std::string& path) {
    std::vector<uint8_t> d = read_file(path);
    // the whole image checked as the C driver checks it (ttforge_ttli.h), before any write
    ttfi_info info;
    ttfi_status st = ttfi_check(d.data(), d.size(), &info);
    if (st == TTFI_CONFIG) {
        static const char* const names[] = TTFORGE_IMAGE_CONFIG_NAMES;
        const uint32_t n = sizeof names / sizeof names[0];
        std::string field = info.config_index < n ? names[info.config_index] : "config word count";
        fail(path + ": the load image is for " + field + "=" + std::to_string(info.config_got) +
             ", the harness's ttforge_regs.h has " + std::to_string(info.config_expected) +
             "; regenerate the image for this config");
    }
    if (st != TTFI_OK) fail(path + ": " + ttfi_status_text(st));
    std::vector<std::pair<uint32_t, uint32_t>> w(info.count);
    for (uint32_t i = 0; i < info.count; ++i)
        w[i] = {ttfi_le32(info.writes + 8 * size_t{i}), ttfi_le32(info.writes + 8 * size_t{i} + 4)};
    return w;
}

const char* resp_name(int r) {
    return r == TTF_AXIL_OKAY ? "OKAY" : r == TTF_AXIL_SLVERR ? "SLVERR" : r == TTF_AXIL_TIMEOUT ? "timeout" : "?";
}

}  // namespace

int main(int argc, char** argv) {
    std::string image, inputs, outputs, report;
    uint64_t seed = 0, timeout = 1000000;
    double gaps = 0.0, bp = 0.0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&](const char* name) -> std::string {
            if (i + 1 >= argc) fail(std::string(name) + " needs a value");
            return argv[++i];
        };
        if (a == "--image") image = val("--image");
        else if (a == "--inputs") inputs = val("--inputs");
        else if (a == "--outputs") outputs = val("--outputs");
        else if (a == "--report") report = val("--report");
        else if (a == "--seed") seed = std::strtoull(val("--seed").c_str(), nullptr, 0);
        else if (a == "--gaps") gaps = std::strtod(val("--gaps").c_str(), nullptr);
        else if (a == "--backpressure") bp = std::strtod(val("--backpressure").c_str(), nullptr);
        else if (a == "--timeout") timeout = std::strtoull(val("--timeout").c_str(), nullptr, 0);
        else fail("unknown argument " + a + " (see sim/native/main.cpp)");
    }
    if (image.empty() || inputs.empty() || outputs.empty() || report.empty())
        fail("--image, --inputs, --outputs and --report are required");
    if (!(gaps >= 0.0 && gaps < 1.0)) fail("--gaps must be in [0, 1)");
    if (!(bp >= 0.0 && bp < 1.0)) fail("--backpressure must be in [0, 1)");

    auto writes = read_image(image);
    Vectors in = read_vectors(inputs);

    const auto t_start = std::chrono::steady_clock::now();
    ttf::Sim sim;
    sim.config_streams(seed, gaps, bp);

    // the model is the one the register header describes
    uint32_t id = 0, lanes = 0, widths = 0;
    int r = sim.read32(TTFORGE_ID_ADDR, &id);
    if (r != TTF_AXIL_OKAY || id != TTFORGE_MAGIC) fail("the model's ID register does not read TTFG");
    sim.read32(TTFORGE_CFG_LANES_ADDR, &lanes);
    sim.read32(TTFORGE_CFG_WIDTHS_ADDR, &widths);
    if (lanes != TTFORGE_CFG_LANES_RESET || widths != TTFORGE_CFG_WIDTHS_RESET)
        fail("the model's CFG_LANES/CFG_WIDTHS differ from ttforge_regs.h; rebuild the harness");

    for (size_t i = 0; i < writes.size(); ++i) {
        r = sim.write32(writes[i].first, writes[i].second);
        if (r != TTF_AXIL_OKAY) {
            char msg[160];
            std::snprintf(msg, sizeof msg, "load image write %zu (address 0x%" PRIx32 ") answered %s; "
                          "the image is for another config", i, writes[i].first, resp_name(r));
            fail(msg);
        }
    }
    const uint64_t load_cycles = sim.cycles();
    const double load_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

    uint32_t in_count = 0, out_count = 0;
    sim.read32(TTFORGE_IN_COUNT_ADDR, &in_count);
    sim.read32(TTFORGE_OUT_COUNT_ADDR, &out_count);
    if (in.count && in.elems != in_count)
        fail("the input vectors have " + std::to_string(in.elems) + " elements; the program's IN_COUNT is " +
             std::to_string(in_count));
    if (out_count == 0) fail("OUT_COUNT is 0 after the load image; it loads no program");
    sim.set_out_count(out_count);

    for (uint32_t v = 0; v < in.count; ++v) sim.send(&in.data[static_cast<size_t>(v) * in.elems], in.elems);

    const uint64_t c0 = sim.cycles();
    auto t0 = std::chrono::steady_clock::now();
    bool all = sim.wait_received(in.count, timeout);
    auto t1 = std::chrono::steady_clock::now();
    const uint64_t c1 = sim.cycles();
    const double wall = std::chrono::duration<double>(t1 - t0).count();

    sim.tick(), sim.tick();  // counters are final one cycle after done
    static const struct { const char* name; uint32_t addr; } kCounters[] = {
        {"cycles", TTFORGE_CYCLES_LO_ADDR},
        {"busy_lane_cycles", TTFORGE_BUSY_LANE_CYCLES_LO_ADDR},
        {"in_stall", TTFORGE_IN_STALL_LO_ADDR},
        {"out_stall", TTFORGE_OUT_STALL_LO_ADDR},
        {"sat_events", TTFORGE_SAT_EVENTS_LO_ADDR},
        {"vectors", TTFORGE_VECTORS_LO_ADDR},
    };
    uint64_t counters[6] = {0};
    bool counters_ok = true;
    for (int k = 0; k < 6; ++k) counters_ok &= sim.read_counter(kCounters[k].addr, &counters[k]) == TTF_AXIL_OKAY;
    uint32_t status = 0, error_code = 0;
    sim.read32(TTFORGE_STATUS_ADDR, &status);
    sim.read32(TTFORGE_ERROR_CODE_ADDR, &error_code);

    const double total_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

    std::string problem;
    if (!all)
        problem = "timeout: " + std::to_string(sim.received()) + " of " + std::to_string(in.count) +
                  " output vectors after " + std::to_string(timeout) + " cycles without a stream handshake";
    else if (sim.bad_vectors())
        problem = std::to_string(sim.bad_vectors()) + " output vectors had a wrong number of beats";
    else if (!counters_ok)
        problem = "a counter read did not answer OKAY";
    if (status & TTFORGE_STATUS_ERROR_MASK) {
        if (!problem.empty()) problem += "; ";
        problem += "STATUS.ERROR set, ERROR_CODE " + std::to_string(error_code & TTFORGE_ERROR_CODE_CODE_MASK) +
                   " at step " + std::to_string((error_code & TTFORGE_ERROR_CODE_STEP_MASK) >> 16);
    }
    const bool ok = problem.empty();

    // outputs: every complete vector received (all of them when ok)
    g_outputs = outputs;
    g_report = report;
    FILE* f = open_output(outputs, "wb");
    const auto& lens = sim.rx_lengths();
    size_t nvec = 0;
    for (uint32_t l : lens) {
        if (l != out_count) break;
        ++nvec;
    }
    std::fwrite("TTVO", 1, 4, f);
    put_u32(f, 1);
    put_u32(f, static_cast<uint32_t>(nvec));
    put_u32(f, out_count);
    for (size_t i = 0; i < nvec * out_count; ++i) put_u32(f, static_cast<uint32_t>(sim.rx_data()[i]));
    close_output(f, outputs);

    f = open_output(report, "w");
    std::fprintf(f, "{\n  \"format\": \"ttforge-native-report\",\n  \"version\": 1,\n");
    std::fprintf(f, "  \"ok\": %s,\n  \"problem\": \"%s\",\n", ok ? "true" : "false", problem.c_str());
    std::fprintf(f, "  \"vectors_sent\": %u,\n  \"vectors_received\": %zu,\n", in.count, sim.received());
    std::fprintf(f, "  \"in_count\": %u,\n  \"out_count\": %u,\n", in_count, out_count);
    std::fprintf(f, "  \"seed\": %" PRIu64 ",\n  \"gaps\": %.17g,\n  \"backpressure\": %.17g,\n", seed, gaps, bp);
    std::fprintf(f, "  \"load_writes\": %zu,\n  \"load_cycles\": %" PRIu64 ",\n", writes.size(), load_cycles);
    std::fprintf(f, "  \"load_seconds\": %.9f,\n", load_wall);
    std::fprintf(f, "  \"stream_cycles\": %" PRIu64 ",\n  \"stream_seconds\": %.9f,\n", c1 - c0, wall);
    std::fprintf(f, "  \"total_cycles\": %" PRIu64 ",\n  \"total_seconds\": %.9f,\n", sim.cycles(), total_wall);
    std::fprintf(f, "  \"status\": %u,\n  \"error_code\": %u,\n", status, error_code);
    std::fprintf(f, "  \"counters\": {");
    for (int k = 0; k < 6; ++k)
        std::fprintf(f, "%s\n    \"%s\": %" PRIu64, k ? "," : "", kCounters[k].name, counters[k]);
    std::fprintf(f, "\n  }\n}\n");
    close_output(f, report);
    if (!ok) std::fprintf(stderr, "ttf_native: %s\n", problem.c_str());
    return ok ? 0 : 3;
}
