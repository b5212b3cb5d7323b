"""What ``ttforge --version``, ``--help`` and a hardware subcommand's ``--help`` import, and
how long they take, at a commit and (optionally) at an older one.

For each command: the median wall time of 5 fresh interpreters, the number of modules
``python -X importtime`` lists, and whether ``torch`` was imported. Each commit is
installed from git into a temporary directory (``pip install --no-deps --target``) and
measured with any editable install of ttforge taken off the import path, so the figures
come from committed trees, never from a working tree, and both rows from one run.

    python bench/bench_cli_import.py --before 3e81318
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, cpu_model, git, utc_now  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

COMMANDS = (["--version"], ["--help"], ["inspect", "--help"], ["generate", "--help"])
RESULT = ROOT / "bench" / "results" / "cli_import.json"


def _code(argv: list[str], root: str) -> str:
    # take any editable install off the path and put the installed commit first
    pre = ("import sys\nsys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
           f"sys.path.insert(0, {root!r})\n")
    return (pre + "from ttforge.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_ABSENT', file=sys.stderr)\n")


def measure(root: str, repeats: int = 5) -> dict[str, dict]:
    rows = {}
    for argv in COMMANDS:
        code = _code(argv, root)
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            walls.append(time.perf_counter() - t)
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                           text=True, check=False)
        rows[" ".join(argv)] = {
            "median_s": round(statistics.median(walls), 3),
            "modules": r.stderr.count("import time:") - 1,   # minus the header line
            "torch_imported": "TORCH_LOADED" in r.stderr,
        }
    return rows


def install_rev(rev: str, where: Path) -> str:
    tree = where / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                   capture_output=True)
    site = where / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(tree)], check=True, capture_output=True)
    return str(site)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    ap.add_argument("--before", metavar="REV", help="also measure this older commit")
    args = ap.parse_args()
    out = {"bench": "cli_import", "when": utc_now(), "commit": git("rev-parse", args.rev),
           "cpu": cpu_model(), "python": sys.version.split()[0]}
    for key, rev in (("after", args.rev), ("before", args.before)):
        if rev is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                site = install_rev(rev, Path(tmp))
                out[f"{key}_commit"] = git("rev-parse", rev)
                out[key] = measure(site)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "tree")],
                               cwd=ROOT, capture_output=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULT, json.dumps(out, indent=2) + "\n")
    print(f"{'command':<16} {'before s':>9} {'modules':>8} {'torch':>6} | {'after s':>8} {'modules':>8} {'torch':>6}")
    for cmd, a in out["after"].items():
        b = out.get("before", {}).get(cmd, {})
        print(f"{cmd:<16} {b.get('median_s', ''):>9} {b.get('modules', ''):>8} {str(b.get('torch_imported', '')):>6} | "
              f"{a['median_s']:>8} {a['modules']:>8} {str(a['torch_imported']):>6}")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
