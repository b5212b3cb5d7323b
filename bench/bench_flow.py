"""Wall time of ``ttforge flow`` on the embedded default, per stage.

    python bench/bench_flow.py            # the whole default, iCEBreaker bitstream included
    python bench/bench_flow.py --short    # the --short form (no bitstream), for a quick look

Three runs of the same config into a fresh build directory:

1. **cold**: ``ttforge flow --out DIR`` as a user types it, with empty simulator caches
   (``TTFORGE_NATIVE_CACHE`` / ``TTFORGE_SIM_CACHE`` point into a temporary directory,
   so the native harness is compiled as on a fresh machine); wall time of the process
   and each stage's time from its ``stage.json``;
2. **again**: the same command; every stage is skipped (wall time of the process:
   Python start-up, imports, fingerprints and hash checks);
3. the same in-process (``ttforge.flow.run_flow``), for the time of each skipped stage.

Writes ``bench/results/flow.json`` and the "Flow" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, output_path, result_path, utc_now  # noqa: E402
from _docsection import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "flow.json"
DEFAULT_DOC = None  # docs/benchmarks.md is rendered from the JSON: python bench/_docgen.py
SECTION = "## Flow"
GENERATED_END = "<!-- end of the generated flow tables; the text below is kept by bench_flow.py -->"


def environment() -> dict:
    from ttforge import __version__

    return {"date_utc": utc_now(),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "ttforge": __version__,
            "loadavg_before": [round(v, 2) for v in os.getloadavg()],
            "git_commit": git("rev-parse", "HEAD") or None,
            "git_dirty": git_dirty("flow", "model", "quant", "hw",
                                   "sim", "firmware", "examples", "bench/bench_flow.py")}


def _ttforge(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    exe = Path(sys.executable).parent / "ttforge"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "ttforge.cli"]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ttforge {' '.join(args)} failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc


def measure(short: bool, workdir: Path) -> dict:
    from ttforge.flow import STAGES, default_config, run_flow

    env = dict(os.environ)
    env["TTFORGE_NATIVE_CACHE"] = str(workdir / "native-cache")
    env["TTFORGE_SIM_CACHE"] = str(workdir / "sim-cache")
    env["COLUMNS"] = "120"
    build = workdir / "build" / "digits-icebreaker"
    args = ["flow", "--out", str(build)] + (["--short"] if short else [])
    cold_wall, _ = _ttforge(args, env)
    cold = {}
    for s in STAGES:
        p = build / s / "stage.json"
        if p.is_file():
            rec = json.loads(p.read_text())
            cold[s] = {"status": "ran", "seconds": rec["seconds"], "figure": rec["figure"]}
        else:
            cold[s] = {"status": "not run", "seconds": None, "figure": ""}
    again_wall, proc = _ttforge(args, env)
    res = run_flow(default_config(), build, short=short)
    again = {r.name: {"status": r.status, "seconds": round(r.seconds, 4)} for r in res.stages}
    if any(v["status"] == "ran" for v in again.values()):
        raise SystemExit(f"the second run re-ran stages: {again}")
    return {"cold": {"wall_s": round(cold_wall, 2), "stages": cold},
            "again": {"wall_s": round(again_wall, 2), "stages": again}}


def section(result: dict) -> str:
    env, m = result["environment"], result["measurement"]
    short = result["settings"]["short"]
    lines = [
        SECTION, "",
        f"Wall time of `ttforge flow{' --short' if short else ''}` on the embedded default "
        f"(`examples/digits-icebreaker.toml`: rank-adaptive TT-MLP on digits, 4-bit cores, "
        f"iCEBreaker) on this machine ({env['cpus']} CPUs, shared; load average before "
        f"{', '.join(map(str, env['loadavg_before']))}), measured {env['date_utc'][:10]}, "
        f"commit {(env['git_commit'] or '?')[:10]}. The cold run starts with empty simulator "
        f"caches (the native Verilator harness is compiled); the second run of the same command "
        f"skips every stage. Regenerate:", "",
        "```", result["command"], "```", "",
        "| stage | cold run | key figure | second run |",
        "|---|---|---|---|",
    ]
    def t(v, digits):
        return "" if v is None else f"{v:.{digits}f} s"

    for name, c in m["cold"]["stages"].items():
        a = m["again"]["stages"].get(name, {})
        cold = f"{t(c['seconds'], 1)} ({c['status']})" if c["seconds"] is not None else c["status"]
        again = a.get("status", "-") + (f", {1000 * a['seconds']:.0f} ms" if a.get("seconds") is not None
                                        and a.get("status") != "not run" else "")
        lines.append(f"| {name} | {cold} | {c['figure']} | {again} |")
    lines.append(f"| **whole command** (process wall time) | **{m['cold']['wall_s']:.1f} s** | | "
                 f"**{m['again']['wall_s']:.1f} s** |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="the --short flow (no bitstream)")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT, help="result JSON")
    p.add_argument("--doc", type=output_path("section.md"), default=DEFAULT_DOC, help="also write the long-form Markdown section into this file "
                   "(docs/benchmarks.md itself is rendered from the JSON by bench/_docgen.py)")
    p.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    args = p.parse_args(argv)
    from ttforge.atomic import atomic_write_text

    env = environment()
    work = Path(tempfile.mkdtemp(prefix="ttforge-bench-flow-"))
    try:
        m = measure(args.short, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python bench/bench_flow.py" + (" --short" if args.short else "")
    result = {"benchmark": "flow", "format_version": 1, "command": command,
              "settings": {"short": args.short, "config": "examples/digits-icebreaker.toml"},
              "environment": env, "measurement": m}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    text = section(result)
    print(text)
    if not args.no_doc:
        update_section(args.doc, SECTION, text, GENERATED_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
