"""The ``ttforge`` command line.

Each package declares its subcommands in its own ``cli.py`` (``ttforge.model.cli``,
``ttforge.quant.cli``, ``ttforge.hw.cli``, ``ttforge.sim.cli``, ``ttforge.firmware.cli``,
``ttforge.flow.cli``, ``ttforge.ir.cli``): a ``<name>_cli_spec()`` returning
``(add_arguments, run)``, listed here in :data:`SUBCOMMANDS` with its one-line help;
``run(args)`` returns an exit status. It
runs through :func:`ttforge.boundary.run_command`: any error becomes one line on stderr
and a documented exit status (2: the user can fix it, 3: the machine, a tool or a
device failed; docs/cli.md "Exit codes").
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Callable, Sequence

from ttforge import __version__

__all__ = ["main", "build_parser"]

# name -> ("module:function" returning (add_arguments, run), one-line help). The
# help is listed here so that `ttforge --help` imports nothing; a subcommand's module is
# imported only when that subcommand runs (or when its arguments are listed), so that one
# subcommand's heavy imports (PyTorch) do not slow or break the others.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "schedule": ("ttforge.ir.cli:schedule_cli_spec",
                 "Show the cost of every contraction order of a TT layer and the one chosen."),
    "inspect": ("ttforge.cli:inspect_cli_spec",
                "Show the layers, shapes, ranks, bit widths and on-chip bytes of a compiled artifact."),
    "train": ("ttforge.model.cli:train_cli_spec",
              "Train a TT network (or a dense baseline) on the embedded digits set or on MNIST IDX "
              "files; writes checkpoint, metrics and a plot."),
    "decompose": ("ttforge.model.cli:decompose_cli_spec",
                  "Decompose the dense layers of a trained checkpoint into TT layers (TT-SVD) and report "
                  "rank, error, compression and accuracy."),
    "export-onnx": ("ttforge.model.cli:export_onnx_cli_spec",
                    "Export a trained network to ONNX (TT layers kept as Reshape/MatMul chains)."),
    "quantize": ("ttforge.quant.cli:quantize_cli_spec",
                 "Quantize a trained TT network (PTQ, optional QAT fine-tuning, mixed precision) and write "
                 "the compiled integer artifact."),
    "diverge": ("ttforge.quant.cli:diverge_cli_spec",
                "Run float, fake-quant and integer stages step by step and name the first layer, step and "
                "element where they differ (exit 1 if the integer stages diverge)."),
    "report": ("ttforge.hw.cli:report_cli_spec",
               "Synthesize and place-and-route the accelerator (yosys + nextpnr from pip): LUT/FF/DSP/BRAM, "
               "Fmax and the critical path for ECP5-85F and iCE40UP5K."),
    "export-qonnx": ("ttforge.quant.cli:export_qonnx_cli_spec",
                     "Export a compiled artifact to QONNX (IntQuant/Trunc, TT chain kept), bit-exact or "
                     "refused."),
    "generate": ("ttforge.hw.cli:generate_cli_spec",
                 "Generate the accelerator's Verilog, register map, load image and estimate for an "
                 "artifact."),
    "build": ("ttforge.firmware.cli:build_cli_spec",
              "Build a board bitstream (accelerator + UART bridge) with the pip open toolchain; report "
              "resources and Fmax."),
    "program": ("ttforge.firmware.cli:program_cli_spec",
                "Program a board with a bitstream through openFPGALoader."),
    "run": ("ttforge.firmware.cli:run_cli_spec",
            "Run inference on a board (or its simulation) through the UART bridge."),
    "train-board": ("ttforge.cli:train_board_cli_spec",
                    "Train a state on a board (or its simulation) over the UART bridge: stream labelled "
                    "batches, show the device's loss, checkpoint and pull the learned state back "
                    "(resumable; --check: equal to the golden trainer)."),
    "regress": ("ttforge.sim.cli:regress_cli_spec",
                "Random regression of the generated RTL against the golden executor (cocotb on Icarus or "
                "Verilator, or the native Verilator harness); exit 1 on any failure."),
    "flow": ("ttforge.flow.cli:flow_cli_spec",
             "Run the whole journey: train -> quantize -> compile -> RTL -> bit-exact simulation -> "
             "bitstream -> report (unchanged stages are skipped)."),
    "sweep": ("ttforge.flow.cli:sweep_cli_spec",
              "Design-space exploration: run the flow (train -> quantize -> compile, optionally simulate "
              "and place and route) over a grid of ranks, bit widths, lanes, stream widths and boards as "
              "Dask tasks; results table, Pareto plot and the best flow config per board."),
    "examples": ("ttforge.flow.cli:examples_cli_spec",
                 "Write the example flow and sweep configs (digits on the iCEBreaker, MNIST on the ULX3S, "
                 "sweeps) into ./examples/ (or DIR), to run or edit."),
    "train-int": ("ttforge.model.cli:train_int_cli_spec",
                  "Train with the all-integer step (docs/arithmetic.md, Training) from a random init, an "
                  "artifact or a state; writes the state, the exported artifact, metrics and curves."),
}

#: Subcommands that need the ``train`` extra (PyTorch); without it they say so in one line.
NEEDS_TRAIN_EXTRA = ("train", "decompose", "export-onnx", "quantize", "diverge", "export-qonnx", "flow",
                     "train-int", "sweep", "train-board")


#: Subcommands whose whole product is what they print, given these arguments: with
#: standard output closed (``ttforge inspect A >&-``) they refuse in one line, exit 2, as
#: GNU tools do, where they did the work and exited 0 with nothing to show. The others
#: write files (or drive a board) and run with their messages dropped.
PRINTS_ONLY: dict[str, Callable[[argparse.Namespace], bool]] = {
    "schedule": lambda a: True,
    "inspect": lambda a: True,
    "diverge": lambda a: True,
    "report": lambda a: a.out is None and a.json in (None, "-"),
    "run": lambda a: a.out is None,
}


def train_board_cli_spec():
    """``ttforge train-board`` (:mod:`ttforge.firmware.train_cli`) with ``train-int``'s data
    sets (:func:`ttforge.model.train_int.load_numpy`): firmware never imports the model
    package, so the loader is joined here, when the command runs."""
    from ttforge.firmware.train_cli import train_board_arguments, train_board_run

    def run(args):
        from ttforge.model.train_int import load_numpy
        return train_board_run(args, load_numpy)
    return train_board_arguments, run


def inspect_cli_spec():
    """``ttforge inspect`` (:mod:`ttforge.ir.cli`) with, for a training state, the memory of
    the training engine ttforge generates (:func:`ttforge.hw.trainer.program.engine_memory`)
    checked against the ECP5-85F by ``ttforge build``'s own check
    (:func:`ttforge.firmware.build.memory_misfit`): ir never imports hw or firmware, so
    they are joined here, when the command runs."""
    from ttforge.ir.cli import inspect_cli_spec as ir_inspect

    def engine(state, batch, lanes):
        from ttforge.firmware.build import memory_misfit
        from ttforge.hw.trainer.program import engine_memory
        return engine_memory(state, batch, lanes, "ecp5-85f", memory_misfit)
    return ir_inspect(engine)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse took a value such as "-2,-2" (--ranks, --input-shape, ...) for an
        # unknown option, as only "-2" looks like a negative number to it, and said
        # "expected one argument"; no ttforge option starts with "-" and a digit, so such a
        # word is a value (as Python 3.13's argparse has it), refused by its flag's check
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _load(spec: str) -> tuple[Callable, Callable]:
    module, func = spec.split(":")
    add_arguments, run = getattr(importlib.import_module(module), func)()
    return add_arguments, run


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``ttforge`` parser. ``only=None`` declares every subcommand's arguments (for the
    CLI reference); ``only=NAME`` imports just that subcommand's module; ``only=""`` none."""
    parser = _Parser(
        prog="ttforge",
        description="Tensor-train neural networks, bit-exact from PyTorch to small-FPGA hardware.",
    )
    parser.add_argument("--version", action="version", version=f"ttforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (spec, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            add_arguments, run = _load(spec)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` of :func:`build_parser`'s ``parser``."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _extra_needed(command: str, e: ModuleNotFoundError) -> str | None:
    """``needs the Python package ...; install it with: ...`` when ``e`` is an optional
    dependency of ``command`` that is not installed, else ``None``."""
    top = (e.name or "").split(".")[0]
    if top in ("torch", "sklearn", "matplotlib", "onnx", "onnxruntime", "qonnx"):
        extra = "train" if command in NEEDS_TRAIN_EXTRA else "dev"
        return (f"needs the Python package {top!r}, which is not installed; "
                f"install it with: pip install 'ttforge[{extra}]'")
    return None


def _missing_extra(command: str, e: ModuleNotFoundError) -> str | None:
    """The one-line hint when a subcommand needs an optional dependency that is not installed."""
    needed = _extra_needed(command, e)
    return None if needed is None else f"ttforge {command}: error: {needed}"


def _cwd_removed(_args) -> int:
    from ttforge.errors import ConfigError

    raise ConfigError("the current directory was removed (relative paths have nothing to be "
                      "relative to); change to an existing directory and run again")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    from ttforge.boundary import run_command

    parsed: list = []
    code = run_command(command, lambda _: _parse(command, argv, parsed), None, _missing_extra)
    if not parsed:
        if code == 0:   # --help or --version printed: argparse's SystemExit(0), for callers in-process
            raise SystemExit(0)
        return code   # the import of the subcommand failed, or its stdout: one line said why
    parser, args, extra = parsed
    if extra:   # named by the command's parser (the top one said "ttforge: error:")
        sub = _subparser(parser, command) if command else parser
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    run = args._run
    try:
        os.getcwd()
    except FileNotFoundError:   # train/flow died in oneMKL ("FATAL ERROR", exit 2), run --sim unnamed
        run = _cwd_removed
    if args.command in PRINTS_ONLY and PRINTS_ONLY[args.command](args):
        from ttforge._entry import closed_at_start

        if 1 in closed_at_start():
            run = _stdout_closed
    # one error line and a documented exit status whatever happens (ttforge.boundary)
    code, parse_code = run_command(args.command, run, args, _missing_extra), code
    # a standard stream that failed while the parser was built (a warning of an import
    # on a stderr at /dev/full) is said by the parse's status, 3, which a command that
    # then succeeds would hide: that stream now goes to /dev/null and writes fine
    return parse_code if code == 0 else code


def _parse(command: str, argv: list[str], parsed: list) -> int:
    """Build the parser (importing only ``command``'s module) and parse ``argv`` into
    ``parsed`` (parser, namespace, unknown arguments), in :func:`run_command` like a
    command: ``--help`` and ``--version``, whose whole product is what they print, end
    here, 0, their stdout checked as the other commands' is (a closed one is one line,
    exit 2; one that fails, exit 3; a reader gone, 141), where argparse dropped the
    error and exited 0."""
    parser = build_parser(only=command)
    try:
        parsed.extend((parser, *parser.parse_known_args(argv)))
    except SystemExit as e:
        if e.code not in (0, None):   # a bad command line: argparse said so, exit 2
            raise
        from ttforge._entry import closed_at_start

        if 1 in closed_at_start():
            _stdout_closed(None)
    return 0


def _stdout_closed(args: argparse.Namespace | None) -> int:
    from ttforge.errors import OutputError

    raise OutputError("standard output is closed, and it is where this command's result goes; "
                      "redirect it to a file or /dev/null")


if __name__ == "__main__":
    from ttforge._entry import guard_imports, ignore_file_size_signal, open_standard_streams, run_to_shutdown

    open_standard_streams()
    ignore_file_size_signal()
    guard_imports()
    sys.exit(run_to_shutdown(main))
