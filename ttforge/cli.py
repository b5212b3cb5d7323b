"""The ``ttforge`` command line.

Each subcommand lives next to the code it drives and registers itself here through a
``(name, help, add_arguments, run)`` entry; ``run(args)`` returns an exit status. A
:class:`~ttforge.errors.TTForgeError` anywhere becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from ttforge import __version__
from ttforge.errors import TTForgeError

__all__ = ["main", "build_parser"]

# name -> "module:function" returning (help, add_arguments, run). Imported lazily so that
# `ttforge --help` stays fast and one subcommand's heavy imports do not slow the others.
SUBCOMMANDS: dict[str, str] = {
    "schedule": "ttforge.model.schedule_cli:cli_spec",
    "inspect": "ttforge.quant.artifact:inspect_cli_spec",
    "train": "ttforge.model.train:cli_spec",
    "decompose": "ttforge.model.train:decompose_cli_spec",
    "export-onnx": "ttforge.model.onnx_export:cli_spec",
    "quantize": "ttforge.quant.ptq:quantize_cli_spec",
    "diverge": "ttforge.quant.diverge:diverge_cli_spec",
    "report": "ttforge.hw.report_cli:report_cli_spec",
    "export-qonnx": "ttforge.quant.qonnx_export:qonnx_cli_spec",
    "generate": "ttforge.hw.generate_cli:generate_cli_spec",
    "build": "ttforge.firmware.cli:build_cli_spec",
    "program": "ttforge.firmware.cli:program_cli_spec",
    "run": "ttforge.firmware.cli:run_cli_spec",
    "regress": "ttforge.sim.regress:regress_cli_spec",
    "flow": "ttforge.flow.cli:flow_cli_spec",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _load(spec: str) -> tuple[str, Callable, Callable]:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ttforge",
        description="Tensor-train neural networks, bit-exact from PyTorch to small-FPGA hardware.",
    )
    parser.add_argument("--version", action="version", version=f"ttforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, spec in SUBCOMMANDS.items():
        help_text, add_arguments, run = _load(spec)
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except TTForgeError as e:
        print(f"ttforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
