"""``ttforge build``, ``ttforge program`` and ``ttforge run`` (``docs/boards.md``).

Every user error is one line and exit status 2, a board or loader that fails or does not
answer exit status 3 (a :class:`~ttforge.errors.TTForgeError` raised here is printed by
``ttforge.cli``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ttforge.atomic import check_output_dir, check_writable
from ttforge.errors import (MAX_VALUE_CHARS, ConfigError, DataError, DeviceError, DeviceTimeout, ShapeError, show,
                            show_path)
from ttforge.limits import MAX_FREQ_MHZ, MAX_TIMEOUT_S, file_kind
from ttforge.process import run_bounded

__all__ = ["build_cli_spec", "program_cli_spec", "run_cli_spec", "program_command"]


def _board(name: str):
    from ttforge.firmware.board import board
    return board(name)


def _positive(value: float | None, flag: str, fix: str, most: float | None = None) -> None:
    """One-line error unless ``value`` (if given) is a positive, finite number (at most
    ``most``)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag} {value:g} must be a positive number; {fix}")
    if value is not None and most is not None and value > most:
        raise ConfigError(f"{flag} {value:g} is above {most:,g}; {fix}")


# ------------------------------------------------------------------------- build

def _add_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", nargs="?",
                   help="size the accelerator for this artifact (the smallest config that runs it)")
    p.add_argument("--board", required=True, metavar="BOARD", help="ulx3s or icebreaker")
    p.add_argument("--config", metavar="FILE", help="an AccelConfig (JSON or TOML) instead of sizing")
    p.add_argument("--train", metavar="STATE",
                   help="build the training engine instead, the smallest that trains this state "
                        "(.ttts, e.g. from ttforge train-int) at --batch")
    p.add_argument("--batch", type=int, metavar="B",
                   help="--train: samples per step (default: the state's, or 32)")
    p.add_argument("--lanes", type=int, metavar="L",
                   help="MAC lanes (default: 4 on the ulx3s, 1 on the icebreaker; --train: a power of two)")
    p.add_argument("--freq", type=float, metavar="MHZ",
                   help="system clock (ulx3s: 25, 40, 50 (default), 60, 62.5, 75, 80, 87.5, 90, 100, 103.125, 105, 106.25, 110; icebreaker: 12)")
    p.add_argument("--baud", type=int, default=None, metavar="N", help="UART baud rate (default 115200)")
    p.add_argument("--seed", type=int, default=None,
                   help="nextpnr placer seed, 0..2^31-1 (default: the first of seeds 1..4 that places and routes)")
    p.add_argument("-o", "--out", metavar="DIR", help="output directory (default: build-BOARD)")
    p.add_argument("--keep", metavar="DIR", help="keep the toolchain's work files in DIR")
    p.add_argument("--json", action="store_true", help="print build.json instead of a summary")


def _pct(r):
    return f"{r['used']}/{r['available']} ({100 * r['used'] / max(r['available'], 1):.0f}%)"


def _run_build(args: argparse.Namespace) -> int:
    from ttforge.firmware.build import build

    b = _board(args.board)
    out = args.out or f"build-{b.key}"
    _positive(args.freq, "--freq", f"give the system clock in MHz (the {b.key} default: "
                                   f"{b.default_hz / 1e6:g})")
    if args.freq is not None and args.freq > MAX_FREQ_MHZ:
        raise ConfigError(f"--freq {args.freq:g} is above {MAX_FREQ_MHZ:g} MHz; give the system clock in MHz "
                          f"(the {b.key} default: {b.default_hz / 1e6:g})")
    clk = None if args.freq is None else int(round(args.freq * 1e6))
    # the directory is filled beside -o and renamed into place: a read-only one is one
    # line before the toolchain's minutes, not after them (a file on the path first, as
    # build() names it)
    check_writable(check_output_dir(out, "-o"), "-o")
    man = build(b.key, out, artifact=args.artifact, config_file=args.config, lanes=args.lanes,
                clk_hz=clk, baud=args.baud, seed=args.seed, keep=args.keep, train=args.train,
                batch=args.batch)
    if args.json:
        print(json.dumps(man, indent=2, sort_keys=True))
        return 0
    res = ", ".join(f"{k.upper()} {_pct(v)}" for k, v in man["resources"].items())
    print(f"{man['title']}: {man['clock_hz'] / 1e6:g} MHz system clock, UART {man['baud']} baud")
    print(f"resources: {res}")
    print(f"Fmax {man['fmax_mhz']} MHz (timing met at {man['clock_hz'] / 1e6:g} MHz), "
          f"built in {man['seconds']} s")
    bit = man["bitstream"]
    if "train" in man:
        t = man["train"]
        print(f"training engine: {t['lanes']} lanes, batch {t['batch']}; register map in "
              f"{show_path(Path(out) / 'train_regmap.md')} (and .json, ttforge_train_regs.h)")
    print(f"wrote {show_path(Path(out) / bit['file'])} ({bit['bytes']} bytes, sha256 {bit['sha256']}) "
          f"and {show_path(Path(out) / 'build.json')}")
    return 0


def build_cli_spec():
    return _add_build, _run_build


# ------------------------------------------------------------------------- program

def program_command(board_key: str, bitstream: str | os.PathLike, *, flash: bool = False,
                    tool: str | None = None) -> list[str]:
    """The openFPGALoader command line that programs ``bitstream`` on the board."""
    b = _board(board_key)
    tool = tool or os.environ.get("OPENFPGALOADER") or shutil.which("openFPGALoader") or "openFPGALoader"
    cmd = [tool, "-b", b.loader_board]
    if flash and b.key == "ulx3s":
        cmd.append("-f")         # the ULX3S loads SRAM by default; the iCE40 always flashes
    return [*cmd, str(bitstream)]


#: What every bitstream of a board's suffix holds near its start, after the comment header
#: the open toolchain may write (ecppack: ``FF 00`` ... then the ECP5 preamble; icepack:
#: ``FF 00 00 FF`` then the iCE40 sync word): a file without it is certainly no bitstream.
BITSTREAM_MARKS = {"bit": (b"\xff\xff\xbd\xb3", "ECP5 preamble FF FF BD B3"),
                   "bin": (b"\x7e\xaa\x99\x7e", "iCE40 sync word 7E AA 99 7E")}
#: how far into the file the mark is looked for (comment headers are some hundred bytes)
BITSTREAM_HEAD_BYTES = 1 << 16


def _check_bitstream(path: Path, b) -> None:
    """Refuse a file that is certainly not a bitstream for board ``b`` (empty, or without
    its family's preamble or sync word near the start): one line naming the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(BITSTREAM_HEAD_BYTES)
    except OSError as e:
        raise ConfigError(f"BITSTREAM {path}: cannot read it ({e.strerror}); check its permissions") from None
    fix = f"give the .{b.bitstream} file that ttforge build --board {b.key} writes"
    if not head:
        raise ConfigError(f"BITSTREAM {path} is empty; {fix}")
    mark, what = BITSTREAM_MARKS[b.bitstream]
    if mark not in head:
        raise ConfigError(f"BITSTREAM {path} is not a bitstream for the {b.key} (no {what} in its first "
                          f"{BITSTREAM_HEAD_BYTES // 1024} KiB); {fix}")


#: what is no text in a tool's output: the control characters but tab and the line ends,
#: and U+FFFD (a byte that was not UTF-8); NUL, the padding of a flood, is dropped first
_NOT_TEXT = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]+")
_WORD = re.compile(r"[^\W\d_]{2}")
_ERROR_WORDS = ("error", "fail", "unable", "not found")
#: the most characters of a loader's line an error quotes (its end: the latest words)
LOADER_REASON_CHARS = 2 * MAX_VALUE_CHARS


def _not_text(text: str) -> int:
    return len(text) - len(_NOT_TEXT.sub("", text))


def _loader_reason(proc: subprocess.CompletedProcess) -> str:
    """Why a loader failed, in its own words: its last line naming an error, else its
    last line, of the lines that are text (a flood of NUL bytes was quoted as the reason:
    "\\x00\\x00...[16777017 more characters]"), the last :data:`LOADER_REASON_CHARS` of
    it; "exit status N (no readable output)" if no line is text."""
    errs, lines = [], []
    for out in (proc.stderr, proc.stdout):
        out = out.replace("\x00", "")
        # binary output (half of random bytes are U+FFFD) has text by chance: only a line
        # naming an error is taken from it
        binary = 8 * _not_text(out) > len(out)
        for ln in out.splitlines():
            ln = ln.strip()
            # a word, and at most a quarter no text (an ANSI colour's ESC is some, not most)
            if not (_WORD.search(ln) and 4 * _not_text(ln) <= len(ln)):
                continue
            if any(w in ln.lower() for w in _ERROR_WORDS):
                errs.append(ln)
            elif not binary:
                lines.append(ln)
    if not (errs or lines):
        said = proc.stderr.strip() or proc.stdout.strip()
        return f"exit status {proc.returncode}" + (" (no readable output)" if said else "")
    reason = (errs or lines)[-1]
    if len(reason) > LOADER_REASON_CHARS:
        reason = "..." + reason[-LOADER_REASON_CHARS:]
    return reason


def _add_program(p: argparse.ArgumentParser) -> None:
    p.add_argument("bitstream", metavar="BITSTREAM", help="the .bit (ulx3s) or .bin (icebreaker) file")
    p.add_argument("--board", required=True, metavar="BOARD", help="ulx3s or icebreaker")
    p.add_argument("--flash", action="store_true",
                   help="ulx3s: write the SPI flash (persistent) instead of SRAM")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default 300)")


def _run_program(args: argparse.Namespace) -> int:
    from ttforge.hw.tools import ToolchainMissing

    b = _board(args.board)
    _positive(args.timeout, "--timeout", "give the seconds to wait for openFPGALoader (default 300)",
              MAX_TIMEOUT_S)
    path = Path(args.bitstream)
    if not path.exists():
        raise ConfigError(f"BITSTREAM {path}: no such file; build one with: ttforge build --board {b.key}")
    kind = file_kind(path.stat().st_mode)
    if kind is not None:
        raise ConfigError(f"BITSTREAM {path} is {kind}, not a regular file; give the bitstream file")
    if path.suffix.lower() != "." + b.bitstream:
        raise ConfigError(f"BITSTREAM {path}: the {b.key} takes a .{b.bitstream} file "
                          f"(ttforge build --board {b.key} writes one)")
    _check_bitstream(path, b)   # before the loader: an empty file would "program" the board
    cmd = program_command(b.key, path, flash=args.flash)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if shutil.which(cmd[0]) is None:
        if os.environ.get("OPENFPGALOADER"):
            raise ToolchainMissing(f"$OPENFPGALOADER={show(cmd[0])} is not an executable; point it at "
                                   f"openFPGALoader or unset it")
        raise ToolchainMissing("openFPGALoader is not installed; install it with: "
                               "apt-get install openfpgaloader (or build it from "
                               "https://github.com/trabucayre/openFPGALoader)")
    # a loader that fails or hangs is the board's or the cable's trouble: exit 3
    try:
        proc = run_bounded(cmd, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise DeviceTimeout(f"openFPGALoader did not finish within {args.timeout:g} s; "
                            "unplug and replug the board, then retry") from None
    if proc.returncode != 0:
        raise DeviceError(f"openFPGALoader could not program the {b.key}: {_loader_reason(proc)}; is the "
                          "board attached over USB (and no other program using it)?")
    print(f"programmed the {b.key} with {show_path(path)}")
    return 0


def program_cli_spec():
    return _add_program, _run_program


# ------------------------------------------------------------------------- run

def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="the compiled network (.ttfa)")
    p.add_argument("inputs", metavar="INPUTS",
                   help=".npy (or .txt/.csv) array, one vector per row: integers (quantized) or "
                        "floats (quantized with the network's input format)")
    p.add_argument("--board", required=True, metavar="BOARD", help="ulx3s or icebreaker")
    link = p.add_mutually_exclusive_group()
    link.add_argument("--port", metavar="PORT", help="the board's serial port (e.g. /dev/ttyUSB0)")
    link.add_argument("--sim", action="store_true",
                      help="run against the simulated board top (Icarus + cocotb) instead")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate (default 115200)")
    p.add_argument("--config", metavar="FILE",
                   help="the bitstream's AccelConfig (default: the board's for ARTIFACT): --sim simulates "
                        "it; its counter_bits is the width of the performance counters either way")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for an answer (default 2; 120 with --sim)")
    p.add_argument("-o", "--out", metavar="PATH",
                   help="write the outputs to PATH (.npy; integer text for a .txt or .csv name) instead of "
                        "printing them")
    p.add_argument("--verify", action="store_true",
                   help="compare with the golden executor (exit 1 if any vector differs)")


def _load_inputs(path: str, net) -> np.ndarray:
    """``INPUTS`` as the integer rows ``net`` takes, checked before anything is built.

    The array's type says what it holds: integers are quantized values, used as they
    are; floats are real values, quantized with the network's input format
    (``IntNetwork.quantize_input``, the one quantization path). A text file holds
    integers when every value is one. Anything else (NaN, infinities, strings, another
    width, integers outside the input format) is a one-line error naming INPUTS.
    """
    from ttforge.ir.executor import check_input   # the executor's own input check
    from ttforge.limits import read_array

    p = Path(path)
    # bounded before allocating, a regular file, never a pickle, "no vectors" when empty,
    # integers or finite reals within float32's range
    x = read_array(p, "INPUTS", DataError)
    if p.suffix != ".npy" and np.all(np.mod(x, 1) == 0):
        x = x.astype(np.int64)
    bits = net.layers[0].in_bits
    if x.ndim == 1:
        x = x[None, :]
    if x.dtype.kind == "f":
        # the values as the file holds them, as the QAT model, the executor and
        # ``diverge --input`` quantize them: a float64 value a hair below a rounding tie
        # was cast to float32 first, rounded up, and the board ran other integers
        # (another class) with --verify passing on them
        x = net.quantize_input(x)
    try:
        x = check_input(net, x)
    except ShapeError as e:
        raise DataError(f"INPUTS {p}: {e}; give one vector of {net.in_features} values per row "
                        f"({bits}-bit integers or floats)") from None
    if not len(x):
        raise DataError(f"INPUTS {p}: holds no vectors; give one vector of {net.in_features} "
                        "values per row")
    return x


def run_counters_text(counters: dict[str, int], program, config, bound: tuple[float, int] | None = None) -> str:
    """The cycles and busy lane-cycles of a run as ``ttforge run`` prints them.

    :meth:`~ttforge.firmware.host.Device.counters` adds up counters narrower than 48 bits
    (``config.counter_bits``) modulo their width after every vector: exact unless one
    vector alone may take them past ``2**counter_bits - 1``. Such a figure is printed
    modulo ``2**counter_bits`` and says so, never as if exact.

    Parameters
    ----------
    counters : dict
        :meth:`Device.counters` after the run.
    program : Program
        The program run (its cycle model gives a vector's cycles and busy lane-cycles,
        stalls left out).
    config : AccelConfig
        The bitstream's config (``counter_bits``, and the engine the model times).
    bound : (float, int) or None
        A real board's :attr:`Device.longest_vector_s` and the fastest clock it can run
        at (Hz): a vector kept the engine busy for at most their product in cycles
        (stalls included). ``None`` (a simulation): the cycle model alone.

    Returns
    -------
    str
        ``"3672 cycles, 1350 busy lane-cycles"``, a figure that may have wrapped followed
        by ``(modulo 2^24: ...why...)``.
    """
    from ttforge.hw.config import COUNTER_BITS
    from ttforge.hw.cycles import program_cycles

    bits = config.counter_bits
    m = program_cycles(program.descriptors, config, program.globals)
    latency = m.throughput_latency if config.throughput else m.total    # the driver sends one at a time
    held = f"more than the {bits}-bit counters hold"
    why = {"cycles": [], "busy_lane_cycles": []}
    if bits < COUNTER_BITS:
        top = 1 << bits
        if latency >= top:
            why["cycles"].append(f"a vector takes {latency:,} cycles by the cycle model, {held}")
        elif bound is not None and bound[0] * bound[1] >= top:
            why["cycles"].append(f"a vector kept the host waiting {bound[0]:.2f} s, up to "
                                 f"{int(bound[0] * bound[1]):,} cycles at {bound[1] / 1e6:g} MHz, {held}")
        if m.busy_lane_cycles >= top:
            why["busy_lane_cycles"].append(f"a vector takes {m.busy_lane_cycles:,} by the cycle model, {held}")

    def figure(key: str, name: str) -> str:
        if not why[key]:
            return f"{counters[key]} {name}"
        return f"{counters[key] % (1 << bits)} {name} (modulo 2^{bits}: {why[key][0]})"

    return f"{figure('cycles', 'cycles')}, {figure('busy_lane_cycles', 'busy lane-cycles')}"


def _run_run(args: argparse.Namespace) -> int:
    from ttforge.atomic import atomic_path, check_output_file
    from ttforge.firmware.host import Device
    from ttforge.ir.artifact import load_artifact

    # everything that can be checked is checked before the simulation is built or the
    # port opened: a bad argument is one line, with nothing built, run or written
    b = _board(args.board)
    if not args.port and not args.sim:
        raise ConfigError("give --port PORT (the board's serial port, e.g. /dev/ttyUSB0) or --sim")
    _positive(args.baud, "--baud", "give the bitstream's UART baud rate (default 115200)")
    _positive(args.timeout, "--timeout", "give the seconds to wait for an answer "
                                         "(default 2; 120 with --sim)", MAX_TIMEOUT_S)
    out = check_output_file(args.out, "-o", "outputs.npy") if args.out else None
    net = load_artifact(args.artifact)
    x = _load_inputs(args.inputs, net)
    from ttforge.firmware.build import board_config

    # the bitstream's config as it was built: the registers do not hold the counters' width
    cfg, _ = board_config(b, args.artifact, args.config, None)
    if args.sim:
        from ttforge.firmware.simulate import simulated_device

        dev = simulated_device(cfg, timeout=args.timeout or 120.0)
    else:
        dev = Device.open_serial(args.port, args.baud, timeout=args.timeout or 2.0)
    with dev:
        dev.counter_bits = cfg.counter_bits    # wrapping counters are added up after every vector
        program = dev.load(net)
        y = dev.infer(x)
        counters = dev.counters()
        longest_s = dev.longest_vector_s
    if out is not None:   # the format INPUTS are read in: .txt / .csv as text, else .npy
        text = out.suffix.lower() in (".txt", ".csv")
        with atomic_path(out, suffix=out.suffix if text else ".npy") as tmp:
            if text:
                np.savetxt(tmp, y, fmt="%d", delimiter="," if out.suffix.lower() == ".csv" else " ")
            else:
                np.save(tmp, y)
    if out is None:
        for row in y:
            print(" ".join(str(int(v)) for v in row))
    else:   # the rows are in the file (a 10,000-vector run printed them all again)
        print(f"wrote {show_path(out)} ({len(y)} vectors of {y.shape[1] if y.ndim == 2 else 0} outputs)")
    where = "simulated board" if args.sim else f"{b.key} on {args.port}"
    # a real board's clock bounds the cycles a vector kept the engine busy (not a simulation's)
    bound = None if args.sim else (longest_s, max(b.clocks_hz))
    print(f"# {len(y)} vectors on the {where}; {run_counters_text(counters, program, cfg, bound)}", flush=True)
    if args.verify:
        from ttforge.ir.executor import execute
        g = execute(net, x)
        same = int(sum(np.array_equal(a, c) for a, c in zip(y, g)))
        print(f"# equal to the golden executor: {same}/{len(y)} vectors")
        if same != len(y):
            return 1
    return 0


def run_cli_spec():
    return _add_run, _run_run
