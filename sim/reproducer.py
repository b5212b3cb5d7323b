"""Reproducers of failing ``ttforge regress`` cases: written by :func:`write_reproducer`,
rerun by :func:`replay` (``ttforge regress --replay DIR``)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np

from ttforge.atomic import atomic_dir
from ttforge.errors import ConfigError, show, show_path
from ttforge.hw.faults import FAULTS
from ttforge.limits import MAX_CONFIG_BYTES, MAX_SEED, read_bounded
from ttforge.sim.cases import RegressCase
from ttforge.sim.check import REGRESS_SIMULATORS, CaseResult, describe, run_case
from ttforge.sim.runner import check_pauses

__all__ = ["write_reproducer", "replay", "replay_command", "REPLAY", "REPLAY_FROM", "REPRODUCER_FILES"]

#: The files :func:`write_reproducer` writes (and its waveform, any ``waves.*``): a
#: directory holding anything else is the user's too (``regress`` leaves it).
REPRODUCER_FILES = frozenset({"case.json", "artifact.ttfa", "config.json", "load_image.json", "inputs.npy",
                              "expected.npy", "got.npy", "divergence.txt", "waves_error.txt"})


#: Where :data:`REPLAY`, the command ``case.json`` holds, is run.
REPLAY_FROM = "the reproducer's directory (the one holding this case.json)"


def replay_command(directory: str | os.PathLike) -> str:
    """The command that reruns the reproducer ``directory``, quoted for a POSIX shell
    (``--out 'rq o;$(touch PWN)'`` gave a command that ran ``touch PWN`` when pasted)."""
    return shlex.join(["ttforge", "regress", "--replay", os.fsdecode(directory)])


#: The replay command a reproducer's ``case.json`` holds, run in :data:`REPLAY_FROM`: it
#: names the directory as ``.``, so it holds wherever the directory is moved, copied or
#: unpacked (a cluster worker's comes home as a tar archive) and names no path of the
#: machine that wrote it. It held ``--out`` as typed, relative to where ``regress`` ran,
#: and failed from anywhere else.
REPLAY = replay_command(".")


def write_reproducer(case: RegressCase, sim: str, res: CaseResult, prog, expected, got,
                     out_dir, *, fault=None, build_root=None, waves=True) -> Path:
    """``<out_dir>/repro-<sim>-seed<N>/``: ``case.json`` (seed, sim, fault, pauses, the
    verdict and the divergence), ``artifact.ttfa``, ``config.json``, ``load_image.json``,
    ``inputs.npy``, ``expected.npy``, ``got.npy``, ``divergence.txt`` and a waveform of
    the first failing vector (``waves.fst`` or ``dump.vcd``)."""
    final = Path(out_dir) / (f"repro-{sim}-seed{case.seed}" if fault is None
                             else f"repro-{sim}-{fault}-seed{case.seed}")
    with atomic_dir(final) as d:  # a complete reproducer or none (never half of one)
        _fill_reproducer(d, case, sim, res, prog, expected, got, fault=fault,
                         build_root=build_root, waves=waves)
    return final


def _fill_reproducer(d: Path, case: RegressCase, sim: str, res: CaseResult, prog,
                     expected, got, *, fault, build_root, waves) -> None:
    from ttforge.hw.program import load_image, load_image_to_json
    from ttforge.ir.artifact import save_artifact

    save_artifact(case.net, d / "artifact.ttfa", meta={"regress_seed": case.seed})
    (d / "config.json").write_text(case.config.to_json())
    (d / "load_image.json").write_text(load_image_to_json(load_image(prog)))
    np.save(d / "inputs.npy", case.inputs)
    np.save(d / "expected.npy", expected)
    if got is not None:
        np.save(d / "got.npy", got)
    wave = None
    first = (res.divergence or {}).get("output")
    if waves and first is not None and first.get("vector") is not None and res.result == "FAIL":
        try:
            from ttforge.sim.runner import build, run_inference

            wb = build(case.config, sim, fault=fault, build_root=build_root, waves=True)
            v = first["vector"]
            r = run_inference(wb, prog, case.inputs[v:v + 1], seed=case.seed, waves=True,
                              workdir=d / "waves_run")
            if r.waves is not None:
                wave = d / r.waves.name
                shutil.move(str(r.waves), wave)
            shutil.rmtree(d / "waves_run", ignore_errors=True)
        except Exception as e:  # noqa: BLE001
            (d / "waves_error.txt").write_text(f"{type(e).__name__}: {e}\n")
    info = {"seed": case.seed, "sim": sim, "fault": fault, "vectors": len(case.inputs),
            "gaps": case.gaps, "backpressure": case.backpressure, "shape": case.shape,
            "result": res.result, "reason": res.reason, "divergence": res.divergence,
            "waves": wave.name if wave else None,
            "replay": REPLAY, "replay_from": REPLAY_FROM}
    (d / "case.json").write_text(json.dumps(info, indent=1, default=str))
    (d / "divergence.txt").write_text(describe(res) + "\n")


def replay(directory: str | os.PathLike, *, sim: str | None = None,
           build_root: str | os.PathLike | None = None) -> CaseResult:
    """Rerun a reproducer directory (its artifact, config and inputs, on its simulator
    unless ``sim`` is given); the divergence is located again if it still fails."""
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.artifact import load_artifact

    d = Path(directory)
    info_path = d / "case.json"
    if not info_path.is_file():
        raise ConfigError(f"--replay {d}: no case.json there; give a directory written by "
                          f"ttforge regress (repro-<sim>-seed<N>)")
    try:
        info = json.loads(read_bounded(info_path, "--replay case.json", MAX_CONFIG_BYTES, ConfigError))
        seed, sim_name = info["seed"], sim or info["sim"]
        gaps, backpressure = info.get("gaps", 0.0), info.get("backpressure", 0.0)
        fault = info.get("fault")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise ConfigError(f"--replay {show_path(d)}: case.json is damaged ({type(e).__name__}: "
                          f"{show(str(e))}); give a directory written by ttforge regress") from None
    # every field checked here: a damaged value must not read as the hardware's failure
    where = f"--replay {show_path(d)}: case.json "
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where}seed={show(seed)} must be an integer in 0..{MAX_SEED}")
    if sim_name not in REGRESS_SIMULATORS:
        raise ConfigError(f"{where}sim={show(sim_name)} must be one of {', '.join(REGRESS_SIMULATORS)}")
    if fault is not None and fault not in FAULTS:
        raise ConfigError(f"{where}fault={show(fault)} is unknown; use one of {', '.join(FAULTS)} or null")
    check_pauses(gaps, backpressure, where)
    net = load_artifact(d / "artifact.ttfa")
    cfg = AccelConfig.load(d / "config.json")
    from ttforge.limits import read_array

    X = read_array(d / "inputs.npy", "--replay inputs", ConfigError)
    case = RegressCase(seed, net, cfg, X, gaps, backpressure)
    return run_case(case, sim_name, fault=fault, build_root=build_root, out_dir=None)
