import subprocess
import sys

import pytest

from ttforge.cli import SUBCOMMANDS, main


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


@pytest.mark.parametrize(
    "args, message",
    [
        (["schedule", "--in-modes", "7,4,7,4", "--out-modes", "4,8,4", "--ranks", "16"], "equal length"),
        (["schedule", "--in-modes", "4,4,4", "--out-modes", "4,4,4", "--ranks", "99,2"], "exceeds the maximal TT rank"),
        (["schedule", "--in-modes", "4,a", "--out-modes", "4,4", "--ranks", "2"], "not a comma-separated list"),
        (["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2", "--batch", "0"], "--batch"),
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
