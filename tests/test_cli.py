import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttforge.cli import SUBCOMMANDS, main
from ttforge.ir import ContractionSchedule, TTShape


def run(*args):
    return subprocess.run([sys.executable, "-m", "ttforge.cli", *args], capture_output=True, text=True)


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: ttforge " + name in capsys.readouterr().out


def test_schedule_table_and_json(capsys):
    assert main(["schedule", "--in-modes", "7,4,7,4", "--out-modes", "4,8,4,4", "--ranks", "16"]) == 0
    assert "chosen" in capsys.readouterr().out
    assert main(["schedule", "--in-modes", "7,4,7,4", "--out-modes", "4,8,4,4", "--ranks", "16",
                 "--json"]) == 0
    assert '"order": [\n    3,\n    2,\n    1,\n    0\n  ]' in capsys.readouterr().out


def test_schedule_for_the_lanes(capsys):
    """With --lanes the table gives each order's cycles on them; --objective cycles picks
    the fewest (64 x 105 rank 4: not the fewest-MAC order)."""
    args = ["schedule", "--in-modes", "3,5,7", "--out-modes", "4,2,8", "--ranks", "4", "--lanes", "16"]
    assert main(args + ["--json"]) == 0
    few = json.loads(capsys.readouterr().out)["order"]
    assert main(args + ["--objective", "cycles", "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)["order"]
    shape = TTShape((4, 2, 8), (3, 5, 7), 4)
    assert few == list(ContractionSchedule.optimal(shape, lanes=16).order)
    assert fast == list(ContractionSchedule.optimal(shape, objective="cycles", lanes=16).order) != few
    assert main(args + ["--objective", "cycles"]) == 0
    out = capsys.readouterr().out
    cyc = ContractionSchedule(shape, tuple(fast)).cost(lanes=16).lane_cycles
    assert "cycles on" in out and "chosen" in out
    assert f"{cyc:,}" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["schedule", "--in-modes", "7,4,7,4", "--out-modes", "4,8,4", "--ranks", "16"], "equal length"),
        (["schedule", "--in-modes", "4,4,4", "--out-modes", "4,4,4", "--ranks", "99,2"], "exceeds the maximal TT rank"),
        (["schedule", "--in-modes", "4,a", "--out-modes", "4,4", "--ranks", "2"], "not a comma-separated list"),
        (["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2", "--batch", "0"], "--batch"),
        (["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2", "--objective", "cycles"],
         "--objective cycles needs --lanes"),
        (["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2", "--lanes", "0"], "--lanes=0"),
        (["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2", "--batch", "100000000000"],
         "--batch=100000000000 must be in 1..1,048,576"),
        (["schedule", "--in-modes", "7,,4", "--out-modes", "4,8", "--ranks", "2"],
         "'7,,4' is not a comma-separated list"),
        (["schedule", "--in-modes", "7,4,", "--out-modes", "4,8", "--ranks", "2"],
         "'7,4,' is not a comma-separated list"),
        (["schedule", "--in-modes", ",".join(["2"] * 13), "--out-modes", ",".join(["2"] * 13),
          "--ranks", "2"], "--in-modes/--out-modes give 13 cores; ttforge schedule searches the orders of at most 12"),
        (["schedule", "--in-modes", "a" * 10_000, "--out-modes", "4", "--ranks", "2"], "not a comma-separated"),
        (["schedule", "--in-modes", ",".join(["2"] * 50_000), "--out-modes", "2", "--ranks", "2"],
         "--in-modes/--out-modes give 50000 cores"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    out = run(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert message in lines[-1]
    assert len([line for line in lines if "error" in line]) == 1
    assert "Traceback" not in out.stderr
    assert len(lines[-1]) < 300  # one readable line, whatever the argument's length


_INTERRUPTED_IMPORT = (
    "import builtins, sys\n"
    "real = builtins.__import__\n"
    "def imp(name, *a, **k):\n"
    "    if name == 'ttforge.cli':\n"
    "        raise KeyboardInterrupt\n"
    "    return real(name, *a, **k)\n"
    "builtins.__import__ = imp\n"
    "from {module} import main\n"
    "sys.exit(main())\n")


@pytest.mark.parametrize("module, clean", [("ttforge._entry", True), ("ttforge.cli", False)])
def test_an_interrupt_while_the_console_script_imports_is_one_line(module, clean):
    """Ctrl-C while the console script imports the CLI (its first tenth of a second):
    ``ttforge: interrupted``, exit 130. Sibling: the CLI module as the entry point (as
    before) printed a traceback."""
    import subprocess

    code = _INTERRUPTED_IMPORT.format(module=module)
    out = subprocess.run([sys.executable, "-c", code, "inspect", "x"], capture_output=True, text=True, timeout=120)
    if clean:
        assert out.returncode == 130 and out.stderr == "ttforge: interrupted\n", out.stderr
    else:
        assert "Traceback" in out.stderr


_SIGNAL_IN_IMPORT = (
    "import os, signal, sys\n"
    "import ttforge._entry as entry\n"
    "from ttforge.boundary import Terminated, signals_interrupt\n"
    "entry.guard_imports()\n"
    "entry.GUARDED_IMPORTS = frozenset({'slowpkg'})\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "with signals_interrupt():\n"
    "    try:\n"
    "        import slowpkg\n"
    "        print('not interrupted')\n"
    "    except (KeyboardInterrupt, Terminated) as e:\n"
    "        m = sys.modules.get('slowpkg')\n"
    "        print(type(e).__name__, 'after the import' if m is not None and m.DONE else 'inside it')\n")


@pytest.mark.parametrize("sig, raised", [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Terminated"),
                                         ("SIGHUP", "Terminated")])
def test_a_signal_while_numpy_or_torch_is_imported_comes_after_the_import(tmp_path, sig, raised):
    """A Ctrl-C (SIGTERM, SIGHUP) inside numpy's first import (torch's loading, the
    first second of a command) left numpy half-initialised, and the command went on to
    exit 0, 70, a false exit 2 or SIGABRT; the entries hold the signals back while such
    a package is imported, and the interrupt is raised right after it, the package whole."""
    import subprocess

    (tmp_path / "slowpkg.py").write_text(f"import os, signal, time\nos.kill(os.getpid(), signal.{sig})\n"
                                         "time.sleep(0.3)\nDONE = True\n")
    from tests.support.signals import as_from_a_terminal

    out = subprocess.run([sys.executable, "-c", _SIGNAL_IN_IMPORT, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, preexec_fn=as_from_a_terminal)
    assert out.stdout.strip() == f"{raised} after the import", (out.stdout, out.stderr)


def test_the_console_script_enters_through_the_interrupt_guard():
    """pyproject's script is ttforge._entry:main, and importing the package loads no
    other module of it (an interrupt there would come before the guard)."""
    import subprocess

    from tests.support.toml import load_toml

    project = load_toml(Path(__file__).resolve().parents[1] / "pyproject.toml")
    assert project["project"]["scripts"]["ttforge"] == "ttforge._entry:main"
    code = "import sys, ttforge; print(sorted(m for m in sys.modules if m.startswith('ttforge.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


_HALF_BUILT = (
    "import sys\n"
    "import ttforge.boundary as b\n"
    "from amaranth.hdl import Elaboratable, Fragment, Module\n"
    "class Part(Elaboratable):\n"
    "    def elaborate(self, platform):\n"
    "        return Module()\n"
    "Fragment.get(Part(), None)  # elaboration has begun: amaranth warns of unused parts from now on\n"
    "def run(args):\n"
    "    part = Part()\n"
    "    raise KeyboardInterrupt\n"
    "{patch}"
    "code = b.run_command('generate', run, None)\n"
    "import gc\n"
    "gc.collect()  # the design is a reference cycle: freed by the next collection\n"
    "sys.exit(code)\n")


@pytest.mark.parametrize("quiet", [True, False])
def test_a_command_stopped_mid_elaboration_says_one_line(quiet, tmp_path):
    """Ctrl-C (or SIGTERM, an error) while a command builds an Amaranth design: one line
    and exit 130, no "created but never used" warnings when the design is freed. Sibling:
    without the filter those warnings follow the line."""
    import subprocess

    script = tmp_path / "half_built.py"   # a real file: amaranth reads its source's options
    script.write_text(_HALF_BUILT.format(patch="" if quiet else "b._quiet_unused_elaboratables = lambda: None\n"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 130
    if quiet:
        assert out.stderr == "ttforge generate: interrupted\n", out.stderr
    else:
        assert "UnusedElaboratable" in out.stderr


@pytest.mark.parametrize("argv", [["inspect", "/nonexistent/a.ttfa"], ["train", "--epochs", "1", "--quiet"]])
def test_a_removed_working_directory_is_one_line_before_any_work(argv, tmp_path, capsys):
    """Run from a directory removed meanwhile, train and flow died in oneMKL ("FATAL
    ERROR", exit 2) and run --sim said "No such file or directory" without a path (review
    V5); every command now says it in one line, exit 2, before doing anything."""
    import os

    here, gone = os.getcwd(), tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    try:
        gone.rmdir()
        assert main(argv) == 2
    finally:
        os.chdir(here)
    err = capsys.readouterr().err
    assert err == (f"ttforge {argv[0]}: error: the current directory was removed (relative paths have "
                   f"nothing to be relative to); change to an existing directory and run again\n")
