"""Resources, Fmax and the critical path of the generated accelerator (what ``ttforge report``
runs).

Generates the Verilog of ``TTAccel`` for a configuration (the smallest that runs an
artifact, a JSON config file, or the default), synthesizes it with yosys and places and
routes it with nextpnr for ECP5-85F (ULX3S: CABGA381, speed grade 6) and/or iCE40UP5K
(iCEBreaker: SG48), and returns the figures as a JSON-ready dict (the command prints a table and writes JSON). See :mod:`ttforge.hw.synth`
for the flow and its I/O harness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig

__all__ = ["report", "resolve_config"]


def resolve_config(artifact: str | None = None, config_file: str | None = None,
                   lanes: int | None = None):
    """The :class:`AccelConfig` to report on: from ``config_file`` (JSON), else the
    smallest that runs ``artifact``, else the default; ``lanes`` overrides."""
    from ttforge.hw.config import AccelConfig

    if artifact and config_file:
        raise ConfigError("give an ARTIFACT or --config, not both")
    if config_file:
        cfg = AccelConfig.load(config_file)
        if lanes is not None and lanes != cfg.lanes:
            cfg = AccelConfig.from_dict({**cfg.to_dict(), "lanes": lanes}, source="--lanes")
    elif artifact:
        from ttforge.ir.artifact import load_artifact

        cfg = AccelConfig.for_network(load_artifact(artifact),
                                      **({} if lanes is None else {"lanes": lanes}))
    else:
        cfg = AccelConfig(**({} if lanes is None else {"lanes": lanes}))
    return cfg


def report(config: AccelConfig, devices: list[str], *, target_mhz: float | None = None, seed: int = 1,
           keep: str | None = None, router: str = "router1",
           frontend: str = "verilog") -> dict[str, Any]:
    """Implement ``config`` on each device; a JSON-ready dict. ``router`` is nextpnr's,
    ``frontend`` what Yosys reads (:mod:`ttforge.hw.synth`). The work directory ``keep``
    is held until the call returns."""
    from ttforge.atomic import command_inputs

    # the claim of keep ends with this call (called from Python outside a command, it
    # held keep until the interpreter exited, refusing a terminal's `report --keep`)
    with command_inputs():
        return _report(config, devices, target_mhz=target_mhz, seed=seed, keep=keep, router=router,
                       frontend=frontend)


def _report(config: AccelConfig, devices: list[str], *, target_mhz: float | None, seed: int,
            keep: str | None, router: str, frontend: str) -> dict[str, Any]:
    if not isinstance(config, AccelConfig):
        raise ConfigError(f"report needs an AccelConfig, got {type(config).__name__}")
    from ttforge.hw.target import SynthTarget
    from ttforge.hw.synth import DEVICES, FRONTENDS, accel_rtlil, implement, router_args
    from ttforge.hw.top import verilog

    router_args(router)                              # a bad name fails before any work
    if frontend not in FRONTENDS:
        raise ConfigError(f"frontend={frontend!r} is unknown; choose one of {', '.join(FRONTENDS)}")
    text = verilog(config)
    results = {}
    if keep is not None:
        from ttforge.atomic import claim_work_dir

        keep = str(claim_work_dir(keep, "--keep"))   # never a directory of the user's files
    for dev in devices:
        wd = None if keep is None else Path(keep) / dev
        # elaborated for the device's family (the ECP5: MULT18X18D with its registers,
        # ttforge.hw.ecp5_dsp); an unknown key is implement's one-line error
        target = SynthTarget(DEVICES[dev].family) if dev in DEVICES else None
        dtext = verilog(config, platform=target)
        il = accel_rtlil(config, platform=target) if frontend == "rtlil" else None
        results[dev] = implement(dtext, dev, target_mhz=target_mhz, seed=seed,
                                 workdir=wd, config=config, router=router, rtlil=il).to_dict()
    return {"config": config.to_dict(), "top": "ttforge_accel", "verilog_bytes": len(text.encode()),
            "router": router, "frontend": frontend, "devices": results}
