"""The public nextpnr report reader (``ttforge.hw.parse_report``) and the pure parts of
``bench/bench_boards.py``: latency arithmetic, UART bytes, device memory, the dense INT8
comparison and the memory pre-check of ``ttforge build``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ttforge.hw import SynthReport, parse_report
from ttforge.hw.config import AccelConfig
from ttforge.hw.synth import SynthError
from tests.support.benches import load_bench

DATA = Path(__file__).resolve().parent / "data"


def _bench():
    return load_bench("bench_boards")


@pytest.fixture(scope="module")
def bench():
    return _bench()


# ------------------------------------------------------------------- parse_report

def test_parse_report_of_a_real_build_equals_its_manifest():
    """A stored nextpnr report of a real ULX3S build (the MNIST-shaped model, 4 lanes)
    read by ``parse_report`` gives what ``ttforge build`` wrote into its manifest
    before the reader was made public."""
    report = json.loads((DATA / "ulx3s_mnist_pnr_report.json").read_text())
    manifest = json.loads((DATA / "ulx3s_mnist_build.json").read_text())
    r = parse_report(DATA / "ulx3s_mnist_pnr_report.json", "ecp5-85f")
    assert isinstance(r, SynthReport) and r.fits and r.overflow == ""
    assert r.resources == manifest["resources"]
    assert r.fmax_mhz == manifest["fmax_mhz"]
    assert r.critical_path == manifest["critical_path"]
    util = report["utilization"]
    assert r.luts == util["TRELLIS_COMB"]["used"] and r.ffs == util["TRELLIS_FF"]["used"]
    assert r.dsp == util["MULT18X18D"]["used"] and r.bram == util["DP16KD"]["used"]
    assert parse_report(report, "ecp5-85f") == r          # a dict or a path
    d = r.to_dict()
    assert d["luts"] == r.luts and d["fmax_mhz"] == r.fmax_mhz


def test_parse_report_names_over_used_resources(tmp_path):
    report = json.loads((DATA / "ulx3s_mnist_pnr_report.json").read_text())
    bad = copy.deepcopy(report)
    bad["utilization"]["DP16KD"]["used"] = 209
    r = parse_report(bad, "ecp5-85f")
    assert not r.fits and r.overflow == "DP16KD 209/208"
    # placement gave up at the limit: only the log says what was full
    log = tmp_path / "nextpnr.log"
    log.write_text("Info: \t         ICESTORM_LC:    5146/   5280    97%\n"
                   "ERROR: Unable to find legal placement for all cells, design is probably at "
                   "utilisation limit.\n")
    r = parse_report({"utilization": {}}, "ice40up5k", log=log)
    assert r.overflow == "ICESTORM_LC 5146/5280 (97%)" and r.fmax_mhz is None and r.luts is None


def test_parse_report_ice40_fields_and_bad_input(tmp_path):
    r = parse_report({"utilization": {"ICESTORM_LC": {"used": 4810, "available": 5280},
                                      "ICESTORM_RAM": {"used": 8, "available": 30}},
                      "fmax": {"a": {"achieved": 30.004}, "b": {"achieved": 26.61}}}, "ice40up5k")
    assert (r.luts, r.ffs, r.bram, r.fmax_mhz) == (4810, None, 8, 26.61)   # the slowest clock
    with pytest.raises(SynthError, match="unknown; choose one of"):
        parse_report({}, "ecp5-45f")
    with pytest.raises(SynthError, match="cannot read the nextpnr report"):
        parse_report(tmp_path / "missing.json", "ecp5-85f")


# ------------------------------------------------------------------- the bench arithmetic

def test_latency_from_cycles_and_clock(bench):
    # 1,000 cycles at 50 MHz: 20 us, 50,000 vectors/s; 3,906 cycles at 12 MHz: 325.5 us
    assert bench.latency(1000, 50.0) == {"mhz": 50.0, "us": 20.0, "per_s": 50_000.0}
    lat = bench.latency(3906, 12.0)
    assert lat["us"] == pytest.approx(325.5) and lat["per_s"] == pytest.approx(12e6 / 3906)
    assert bench.latency(1000, None) is None and bench.latency(0, 50.0) is None


def test_uart_bytes_of_one_vector(bench):
    # request: END, 0x0C (STREAM_IN), n (2 bytes), 64 elements, crc (2), END = 71 bytes, plus one:
    # the element -64 (0xC0 = END) is escaped into two; response: END, 0x8C, status,
    # count (2), crc (2), END = 8; output frame: END, 0xA0, 10 elements, crc (2), END =
    # 15 (for these values no CRC byte needs an escape)
    row = [-64] + [1] * 63
    u = bench.uart_bytes(row, 1, 10, 1)
    assert u == {"to_board": 72, "from_board": 23, "total": 95}
    # 3 outputs in beats of 2 elements: 4 elements are sent (8 + 1 + 1 + 4 + 2 + 1)
    assert bench.uart_bytes([1] * 8, 1, 3, 2)["from_board"] == 8 + 9
    assert bench.uart_seconds(1152, 115200) == pytest.approx(0.1)


def test_device_memory_and_the_dense_model(bench):
    assert bench.device_memory("ecp5-85f") == {"block_ram": 479_232, "spram": 0, "total": 479_232}
    assert bench.device_memory("ice40up5k") == {"block_ram": 15_360, "spram": 131_072,
                                                "total": 146_432}
    dense_mnist = 784 * 512 + 512 * 10                         # 406,528 bytes of INT8 weights
    ice = bench.dense_fit(dense_mnist, "ice40up5k")
    assert not ice["fits"] and ice["fraction"] == pytest.approx(406_528 / 146_432)
    assert bench.dense_fit(dense_mnist, "ecp5-85f")["fits"]
    assert bench.dense_fit(146_433, "ice40up5k")["fits"] is False
    assert bench.dense_fit(146_432, "ice40up5k")["fits"] is True


MNIST_ICE = dict(lanes=1, act_bits=8, core_bits=4, inter_bits=16, acc_bits=26, bias_bits=15,
                 core_depth=21184, bias_depth=522, buf_depth=14336, desc_depth=5,
                 stream_elems=1, serial_requant=1, counter_bits=24)


def test_fit_precheck_names_the_spram_limit(bench):
    cfg = AccelConfig(**MNIST_ICE)
    why = bench.precheck(cfg, "ice40up5k")
    # buffers 2 x 14336 x 16 bit = 448.0 kbit; all memories 542.1 kbit > 120 kbit of EBR
    assert "542.1 kbit" in why and "2 x 14336 x 16 bit = 448.0" in why and "120 kbit" in why
    assert "SB_SPRAM256KA" in why and "buf_ports = 1" in why
    assert bench.precheck(cfg, "ecp5-85f") is None
    # with single-port buffers they go to the SPRAM and the rest (94.1 kbit) fits the EBR
    assert bench.precheck(AccelConfig(**MNIST_ICE, buf_ports=1), "ice40up5k") is None
    # memories that do not fit even with the buffers in SPRAM: no SPRAM clause
    big = AccelConfig(**{**MNIST_ICE, "core_depth": 65536, "buf_depth": 1024})
    why = bench.precheck(big, "ice40up5k")
    assert why and "SPRAM" not in why
    why = bench.precheck(AccelConfig(**{**MNIST_ICE, "core_depth": 65536, "buf_ports": 1}),
                         "ice40up5k")
    assert "needs 256.0 kbit" not in why and "(the buffers are in SPRAM)" in why


def test_build_refuses_a_misfit_with_the_reason(tmp_path, capsys):
    from ttforge.cli import main

    cfg = tmp_path / "mnist_ice.json"
    cfg.write_text(json.dumps(MNIST_ICE))
    assert main(["build", "--board", "icebreaker", "--config", str(cfg), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit" in err[0] and "SB_SPRAM256KA" in err[0]
    assert not (tmp_path / "o").exists()


def test_skip_build_run_writes_json_and_doc(bench, tmp_path):
    """The bench end to end without place and route (digits only, one CPU repeat)."""
    marker = bench.GENERATED_END
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# ttforge benchmarks\n\n## Boards\n\nold table\n\n{marker}\n\nkept text\n")
    out = tmp_path / "boards.json"
    assert bench.main(["--skip-build", "--models", "digits", "--cpu-repeats", "1",
                       "--out", str(out), "--doc", str(doc)]) == 0
    data = json.loads(out.read_text())
    assert [r["board"] for r in data["rows"]] == ["ulx3s", "icebreaker"]
    for r in data["rows"]:
        assert r["fits"] is None and r["build"] is None and r["precheck"] is None
        assert r["at_board_clock"]["us"] == pytest.approx(r["cycles"] / (r["clock_hz"] / 1e6))
        assert r["dense"]["fits"] and r["network_on_chip_bytes"] < r["dense"]["dense_int8_bytes"]
    (m,) = data["models"]
    assert m["cpu"]["latency_us"] > 0 and m["cpu"]["batch"] == 256
    text = doc.read_text()
    assert "old table" not in text and "kept text" in text
    assert "python bench/bench_boards.py --skip-build --models digits" in text


@pytest.mark.slow
def test_bench_build_on_the_icebreaker_and_its_reuse(bench, artifact, tmp_path):
    """A real iCEBreaker build through the bench (about 2 minutes): its figures are the
    manifest's, the stored nextpnr report parses to the same, and a second call with
    the same config reuses the build instead of placing and routing again."""
    from ttforge.firmware.board import board
    from ttforge.firmware.build import board_config

    b = board("icebreaker")
    cfg, _ = board_config(b, artifact / "small.ttfa")
    r = bench.run_build(b, artifact / "small.ttfa", cfg.to_dict(), tmp_path, "icebreaker-small")
    assert r["ok"] and not r["reused"], r.get("error")
    out = tmp_path / "icebreaker-small"
    man = json.loads((out / "build.json").read_text())
    rep = parse_report(out / "pnr_report.json", "ice40up5k")
    assert rep.resources == man["resources"] == r["resources"]
    assert rep.fmax_mhz == man["fmax_mhz"] == r["fmax_mhz"] and rep.fits
    assert r["lut"] == rep.luts and r["bram"] == rep.bram and r["ff"] is None
    again = bench.run_build(b, artifact / "small.ttfa", cfg.to_dict(), tmp_path, "icebreaker-small")
    assert again["reused"] and again["fmax_mhz"] == r["fmax_mhz"]
    other = {**cfg.to_dict(), "lanes": 2}
    assert bench._reusable(out, other, b, 1) is None


def test_merge_replaces_only_the_measured_rows(bench):
    """--merge: the new row takes its place (its run recorded), the others and the
    models they were compared with stay."""
    env = {"date_utc": "2026-12-02T21:00:00Z", "git_commit": "abc1234"}
    old = {"command": "old", "models": [{"key": "mnist", "cpu": {"latency_us": 1.0}}],
           "rows": [{"model": "mnist", "board": "ulx3s", "v": 1},
                    {"model": "mnist", "board": "icebreaker", "v": 2}]}
    new = {"command": "new", "environment": env, "seconds": 60.0,
           "models": [{"key": "mnist", "cpu": {"latency_us": 2.0}}],
           "rows": [{"model": "mnist", "board": "icebreaker", "v": 3}]}
    out = bench.merge_rows(old, new)
    assert out["models"] == old["models"] and out["command"] == "old"
    assert [r["v"] for r in out["rows"]] == [1, 3]
    run = out["rows"][1]["run"]
    assert run["command"] == "new" and run["model"]["cpu"]["latency_us"] == 2.0
    assert "run" not in out["rows"][0]


def test_uart_bytes_of_a_vector_longer_than_a_frame(bench):
    """5,000 one-byte inputs at two elements a beat go in two STREAM_IN frames (4,090 and
    910 elements, 7 bytes of framing each: END, type, n, CRC-16, END; 1 needs no escape)
    with a response each, and 5,000 outputs come back in two output frames (4,092 and 908
    bytes, 5 bytes of framing each: END, type, CRC-16, END; 0 needs no escape)."""
    got = bench.uart_bytes([1] * 5000, 1, 5000, 2)
    assert got["to_board"] == (4090 + 7) + (910 + 7)
    one_response = bench.uart_bytes([1] * 2, 1, 2, 2)["from_board"] - (2 + 5)
    assert got["from_board"] == 2 * one_response + (4092 + 5) + (908 + 5)
