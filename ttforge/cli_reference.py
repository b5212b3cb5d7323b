"""The CLI reference (``docs/cli.md``), generated from the parser.

Walks :func:`ttforge.cli.build_parser` (every subcommand in
:data:`ttforge.cli.SUBCOMMANDS`, in registration order): description, usage, every
argument group with each option's flags, metavar, default and help, and the epilog.
The text depends on the parser alone (fixed wrap width, no environment), so the same
parser always gives the same bytes and ``--check`` can tell when the page is stale::

    python -m ttforge.cli_reference -o docs/cli.md     # regenerate
    python -m ttforge.cli_reference --check            # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ttforge.atomic import atomic_write_text

__all__ = ["render", "subcommand_parsers", "subs_names", "main", "REGENERATE", "DEFAULT_PATH"]

DEFAULT_PATH = "docs/cli.md"
# The one command that rewrites the page (run from the repository root).
REGENERATE = f"python -m ttforge.cli_reference -o {DEFAULT_PATH}"
# argparse wraps usage lines to the terminal width; a fixed width keeps the page
# independent of whoever runs the generator.
_WIDTH = 88


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of every subcommand of ``parser``, in registration order.

    Examples
    --------
    >>> from ttforge.cli import build_parser
    >>> "train" in subcommand_parsers(build_parser())
    True
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices.items())
    return {}


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(parser.prog, width=_WIDTH, max_help_position=32)


def _usage(parser: argparse.ArgumentParser) -> str:
    fmt = _formatter(parser)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return fmt.format_help().strip("\n")


def _line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _cell(text: str) -> str:
    # prose: one line, pipes escaped, and "<name>" kept visible (Markdown would take it
    # for an HTML tag)
    return _line(text).replace("<", "&lt;")


def _code(text: str) -> str:
    text = _line(text)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _flags(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = _formatter(parser)
    if not action.option_strings:
        return _code(fmt._metavar_formatter(action, action.dest)(1)[0])
    if action.nargs == 0:
        return ", ".join(_code(s) for s in action.option_strings)
    arg = fmt._format_args(action, action.dest.upper())
    return ", ".join(_code(f"{s} {arg}") for s in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if not action.option_strings:  # an optional positional
        return "" if action.default is None else _code(action.default)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        # None: "not given", left to a config file or the command's own default
        return {False: "off", True: "on"}.get(action.default, "")
    if action.default is None or action.default is argparse.SUPPRESS or action.default in ("", []):
        return ""
    return _code(action.default)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    text = _formatter(parser)._expand_help(action)
    # choices are listed where the flag column does not already show them as {a,b}
    if action.choices is not None and action.metavar is not None:
        choices = ", ".join(str(c) for c in action.choices)
        if choices not in text:
            text = f"{text} (one of: {choices})"
    return _cell(text)


#: The "Exit codes" section (ttforge.errors, ttforge.boundary; docs/hardening.md).
EXIT_CODES = [
    "## Exit codes",
    "",
    "| status | meaning | raised as |",
    "|---|---|---|",
    "| 0 | success | |",
    "| 1 | the command ran and its check failed: `regress` and `regress --train` (a case "
    "failed), `diverge` (the integer stages diverge), `run --verify` (the board disagrees with "
    "the golden executor), `train-board --check` (the device diverged from the golden trainer; "
    "the diverged state is not written), `train-int --verify-steps` (the golden and the fast "
    "step differ), `export-qonnx` (its check, `--check N`, on 16 inputs by default: the qonnx "
    "executor disagrees with the integer executor; nothing written), `flow` (the simulated RTL disagrees with the golden "
    "executor), `sweep` (a point failed; `sweep.csv` gives its reason) | |",
    "| 2 | a problem the user can fix: a bad argument or configuration value, a damaged or "
    "foreign file, sizes that do not fit, a stated limit exceeded, an output that would destroy "
    "an input or a file ttforge did not write, a path that does not exist or cannot be read; "
    "standard output closed (`>&-`) for a command whose result is what it prints (`schedule`, "
    "`inspect`, `diverge`, `report` and `run` without an output file, `--help`, `--version`) | "
    "`ttforge.errors.UserError` (`ConfigError`, `ShapeError`, `DataError`, `CheckpointError`, "
    "`ArtifactError`, `OutputError`, `LimitError`, ...); argparse usage errors |",
    "| 3 | the machine, a tool or a device failed: a simulator, the FPGA toolchain or a "
    "Python extra (`pip install 'ttforge[train]'`) not installed, a synthesis, build or simulation that failed, a board that does not answer, "
    "a full disk (also one out of inodes), a file-size or open-files limit reached (`ulimit -f`, "
    "`ulimit -n`) or an I/O error (of standard output or standard error too: the command runs "
    "to its end and its files are written whole; a failing standard output is named in one line), "
    "memory exhausted; the Dask scheduler of `regress --cluster` "
    "cannot be reached, has no worker, or went away during the run (the finished cases are "
    "kept in `junit.xml` and `summary.json`); such a failure under a `regress` case (on this "
    "machine or a cluster's worker) is the machine's, never a failed check: the run stops in one "
    "line naming the file or the limit and the fix, writes no reproducer for it, and its "
    "`summary.json` lists that case as not run | `ttforge.errors.EnvironmentFailure` "
    "(`SimulatorMissing`, `ToolchainMissing`, `SimError`, `SynthError`, `BuildError`, "
    "`DeviceError`, `DeviceTimeout`, `ProtocolError`, `FormalToolMissing`, `ClusterError`, "
    "`SchedulerLost`, `MachineFailure`, ...) |",
    "| 70 | a bug in ttforge (any other exception): the line names it; `TTFORGE_DEBUG=1` shows "
    "the traceback | |",
    "| 130 | interrupted (Ctrl-C): every file being written keeps its old content | |",
    "| 141 | stdout was closed by its reader (`ttforge inspect A.ttfa \\| head -1`): the command stops "
    "without a word, as a SIGPIPE would stop it (its outputs are complete or not written) | |",
    "| 143 | terminated (SIGTERM, SIGHUP, or SIGXCPU: the CPU time limit, `ulimit -t`), handled like "
    "Ctrl-C | |",
    "",
    "Every exception class is defined in `ttforge.errors`, in one of the two branches. "
    "`UserError` is also a `ValueError` (as before); `EnvironmentFailure` is not, so "
    "`except ValueError` never swallows a board timeout.",
    "",
]


def _anchor(name: str) -> str:
    # GitHub's heading anchor of "`ttforge NAME`"
    return "ttforge-" + name.lower().replace(" ", "-")


def _section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [f"## `ttforge {name}`", ""]
    if parser.description:
        out += [_cell(parser.description).replace("\\|", "|"), ""]
    out += ["```text", _usage(parser), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = group.title or "options"
        out += [f"**{title}**", ""]
        if group.description:
            out += [_cell(group.description).replace("\\|", "|"), ""]
        out += ["| argument | default | description |", "|---|---|---|"]
        for action in actions:
            out.append(f"| {_flags(parser, action)} | {_default(action)} | {_help(parser, action)} |")
        out.append("")
    exclusive = [g for g in parser._mutually_exclusive_groups if len(g._group_actions) > 1]
    for g in exclusive:
        names = ", ".join(_code(a.option_strings[0] if a.option_strings else a.dest) for a in g._group_actions)
        kind = "exactly one" if g.required else "at most one"
        out += [f"Mutually exclusive ({kind}): {names}.", ""]
    if parser.epilog:
        out += [_cell(parser.epilog).replace("\\|", "|"), ""]
    return out


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown of ``docs/cli.md`` for ``parser`` (default: the ``ttforge`` parser).

    Examples
    --------
    >>> render().startswith("# Command-line reference")
    True
    """
    if parser is None:
        from ttforge.cli import build_parser

        parser = build_parser()
    subs = subcommand_parsers(parser)
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
    out = [
        "# Command-line reference",
        "",
        "<!-- Generated from ttforge.cli.build_parser() by ttforge/cli_reference.py; do not edit.",
        f"     Regenerate with: {REGENERATE} -->",
        "",
        " ".join((parser.description or "").split()),
        "",
        "Every subcommand exits 0 on success; any error is one line on stderr,",
        "`ttforge COMMAND: error: ...`, naming the field and the fix, never a traceback, and",
        "the exit status says whose problem it is ([Exit codes](#exit-codes)).",
        "`ttforge --version` prints the version.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name in subs:
        out.append(f"| [`{name}`](#{_anchor(name)}) | {_cell(helps.get(name) or subs[name].description or '')} |")
    out.append("")
    out += EXIT_CODES
    for name, sub in subs.items():
        out += _section(name, sub)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ttforge.cli_reference [--check] [-o PATH]``."""
    ap = argparse.ArgumentParser(prog="python -m ttforge.cli_reference", description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default=DEFAULT_PATH, help=f"the page to write or check (default {DEFAULT_PATH}; '-': stdout)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page differs from the parser")
    args = ap.parse_args(argv)
    text = render()
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.out)
    if args.check:
        have = path.read_text(encoding="utf-8") if path.exists() else None
        if have != text:
            state = "missing" if have is None else "out of date with ttforge.cli.build_parser()"
            print(f"{path} is {state}; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    atomic_write_text(path, text)
    print(f"wrote {path} ({len(subs_names(text))} commands)")
    return 0


def subs_names(text: str) -> list[str]:
    """The subcommand names whose sections appear in a rendered page."""
    return [line[len("## `ttforge "):-1] for line in text.splitlines() if line.startswith("## `ttforge ")]


if __name__ == "__main__":
    sys.exit(main())
