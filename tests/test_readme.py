"""The README's Python examples run, so they cannot rot."""

import pytest

from tests.support.markdown import ROOT, code_blocks

README = ROOT / "README.md"
BLOCKS = code_blocks(README, "python")


def test_readme_has_examples():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})


# The fresh-machine commands run as written for root (containers and CI images have no
# sudo) and for a user with sudo: apt-get is prefixed by a variable that is empty for root.
SHELL_BLOCKS = code_blocks(README, "sh")


def _apt_lines():
    return [line for block in SHELL_BLOCKS for line in block.splitlines() if "apt-get" in line]


def test_no_bare_sudo_in_the_readme_commands():
    assert _apt_lines(), "README.md lost its apt-get install line"
    for block in SHELL_BLOCKS:
        for line in block.splitlines():
            assert not line.lstrip().startswith("sudo "), f"fails as root without sudo: {line}"


@pytest.mark.parametrize("uid,prefix", [("0", ""), ("1000", "sudo ")])
def test_apt_get_runs_with_sudo_only_for_a_user(uid, prefix, tmp_path):
    """The README's line up to the venv, with id, sudo and apt-get replaced by echoes."""
    import subprocess

    for name, body in (("id", f"echo {uid}"), ("sudo", 'echo sudo "$@"'), ("apt-get", 'echo apt-get "$@"')):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    line = _apt_lines()[0].split(" && python3 -m venv")[0]
    r = subprocess.run(["sh", "-c", line], capture_output=True, text=True,
                       env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert [ln.split(" install")[0] for ln in r.stdout.splitlines()] == [
        f"{prefix}apt-get update", f"{prefix}apt-get"]


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the same pytest invocation as the README's fresh-machine line."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    readme_cmd = next(line for block in SHELL_BLOCKS for line in block.splitlines()
                      if "apt-get" in line).rsplit("&& ", 1)[1].strip()
    assert readme_cmd in [line.strip() for line in ci], readme_cmd
