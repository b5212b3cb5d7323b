"""``ttforge generate``: everything needed to put one artifact on the accelerator.

``ttforge generate ARTIFACT [--config FILE] [--lanes L] -o DIR`` writes into ``DIR``:

| file | content |
|---|---|
| ``ttforge_accel.v`` | the Verilog of the engine for the config (``ttforge.hw.top.verilog``) |
| ``ttforge_accel.vlt`` | its Verilator lint waivers, each with its reason |
| ``config.json`` | the :class:`~ttforge.hw.config.AccelConfig` used |
| ``regmap.json``, ``ttforge_regs.h``, ``regmap.md`` | the register map (three views of one source) |
| ``load_image.json``, ``load_image.bin`` | the ordered AXI4-Lite writes that load the artifact |
| ``estimate.json`` | the analytic estimate per layer (cycles, MACs, utilization, memory bits) |
| ``generate.json`` | what was generated from what: versions, the artifact's digest, each file's sha256 |

and prints the estimate as a table. The files are written into a temporary directory
next to ``DIR`` and renamed into place, so ``DIR`` is either the complete new output or
untouched. An existing ``DIR`` is replaced only if it is empty or a previous
``ttforge generate`` output (it has a ``generate.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ttforge.atomic import check_output_dir, write_files_atomically
from ttforge.errors import ConfigError

__all__ = ["generate", "generate_cli_spec", "MARKER"]

#: The file that marks a directory as ``ttforge generate`` output.
MARKER = "generate.json"


def _resolve_config(net, config_file: str | None, lanes: int | None, stream_elems: int | None):
    from ttforge.hw.config import AccelConfig

    if config_file:
        cfg = AccelConfig.load(config_file)
        over = {k: v for k, v in (("lanes", lanes), ("stream_elems", stream_elems)) if v is not None}
        if over:
            cfg = AccelConfig.from_dict({**cfg.to_dict(), **over, "axil_addr_bits": None},
                                        source=f"{config_file} with --lanes/--stream-elems")
        bad = cfg.misfits(net)
        if bad:
            raise ConfigError(f"{config_file}: does not fit: " + "; ".join(bad))
        return cfg
    return AccelConfig.for_network(net, lanes=4 if lanes is None else lanes,
                                   stream_elems=1 if stream_elems is None else stream_elems)


def generate(artifact: str | os.PathLike, out_dir: str | os.PathLike, *,
             config_file: str | None = None, lanes: int | None = None,
             stream_elems: int | None = None, reset: str = "rst",
             verilog: bool = True) -> dict[str, Any]:
    """Generate the files of ``ttforge generate`` into ``out_dir`` (atomically).

    Returns the manifest written to ``generate.json`` plus the estimate object under
    ``"_estimate"``.
    """
    from ttforge import __version__
    from ttforge.hw.cycles import estimate
    from ttforge.hw.program import compile_program, load_image, load_image_to_bytes, load_image_to_json
    from ttforge.hw.regmap import REGMAP_VERSION, RegisterMap
    from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION
    from ttforge.ir.artifact import load_artifact

    out = check_output_dir(out_dir, "-o")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"-o {out}: is not empty and not a ttforge generate output; "
                          f"choose an empty or new directory")
    if reset not in ("rst", "aresetn"):
        raise ConfigError(f"--reset={reset!r} must be 'rst' or 'aresetn'")
    art = Path(artifact).expanduser()
    net = load_artifact(art)
    cfg = _resolve_config(net, config_file, lanes, stream_elems)
    program = compile_program(net, cfg)
    regmap = RegisterMap(cfg)
    writes = load_image(program, regmap)
    est = estimate(program)

    files: dict[str, bytes] = {}
    notes: list[str] = []
    if verilog:
        try:
            from ttforge.hw.top import verilog as emit, verilator_waivers
        except ImportError as e:  # pragma: no cover - the RTL is part of the package
            notes.append(f"Verilog not written: ttforge.hw.top is unavailable ({e})")
        else:
            files["ttforge_accel.v"] = emit(cfg, reset=reset).encode()
            files["ttforge_accel.vlt"] = verilator_waivers().encode()
    files["config.json"] = cfg.to_json().encode()
    files["regmap.json"] = regmap.to_json().encode()
    files["ttforge_regs.h"] = regmap.to_c_header().encode()
    files["regmap.md"] = ("# ttforge register map\n\n" + regmap.to_markdown()).encode()
    files["load_image.json"] = load_image_to_json(writes, regmap).encode()
    files["load_image.bin"] = load_image_to_bytes(writes)
    files["estimate.json"] = (json.dumps(est.to_dict(), indent=2) + "\n").encode()
    manifest: dict[str, Any] = {
        "format": "ttforge-generate",
        "version": 1,
        "producer": {"name": "ttforge", "version": __version__},
        "regmap_version": REGMAP_VERSION,
        "arithmetic_version": ARITHMETIC_SPEC_VERSION,
        "artifact": {"file": art.name, "sha256": hashlib.sha256(art.read_bytes()).hexdigest()},
        "config": cfg.to_dict(),
        "reset": reset,
        "program": {"steps": len(program.steps), "load_writes": len(writes), **program.globals},
        "notes": notes,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    files[MARKER] = (json.dumps(manifest, indent=2) + "\n").encode()
    _write_atomically(out, files)
    return {**manifest, "_estimate": est, "_config": cfg}


def _write_atomically(out: Path, files: dict[str, bytes]) -> None:
    """Kept for callers of the old name; :func:`ttforge.atomic.write_files_atomically`."""
    write_files_atomically(out, files)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="a compiled artifact (.ttfa, from ttforge quantize)")
    p.add_argument("-o", "--out", metavar="DIR", required=True,
                   help="output directory (created, or replaced if it holds a previous output)")
    p.add_argument("--config", metavar="FILE",
                   help="an AccelConfig as JSON or TOML (default: the smallest that runs ARTIFACT)")
    p.add_argument("--lanes", type=int, metavar="L",
                   help="MAC lanes (default 4; overrides the --config file's)")
    p.add_argument("--stream-elems", type=int, metavar="E",
                   help="elements per AXI4-Stream beat (default 1; overrides the --config file's)")
    p.add_argument("--reset", choices=["rst", "aresetn"], default="rst",
                   help="reset port of the Verilog top: rst (active high, default) or aresetn")
    p.add_argument("--no-verilog", action="store_true",
                   help="skip the Verilog (register map, load image and estimate only; fast)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON instead of a table")


def _kbits(bits: int) -> str:
    return f"{bits / 1024:.1f}k" if bits >= 1024 else str(bits)


def _run(args: argparse.Namespace) -> int:
    res = generate(args.artifact, args.out, config_file=args.config, lanes=args.lanes,
                   stream_elems=args.stream_elems, reset=args.reset, verilog=not args.no_verilog)
    est, cfg = res["_estimate"], res["_config"]
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    table = Table(title=f"ttforge generate: {cfg.summary()}", title_justify="left")
    for col in ("layer", "modes", "cycles", "MACs", "util", "core bits", "bias bits",
                "buf bits", "dense", "TT/dense"):
        table.add_column(col, justify="left" if col in ("layer", "modes") else "right")
    for x in est.layers:
        table.add_row(f"{x.layer}: {x.in_features}->{x.out_features}",
                      "".join(str(m) for m in x.modes), f"{x.cycles:,}",
                      f"{x.macs:,}", f"{x.utilization:.1%}", _kbits(x.core_bits), _kbits(x.bias_bits),
                      _kbits(x.buffer_bits), f"{x.dense_cycles:,}", f"{x.dense_ratio:.2f}")
    table.add_row("all + I/O", "", f"{est.cycles:,}", f"{est.macs:,}",
                  f"{est.utilization:.1%}", "", "", "", f"{est.dense_cycles:,}",
                  f"{est.cycles / est.dense_cycles:.2f}" if est.dense_cycles else "-")
    console.print(table)
    console.print("modes: one digit per step (0: lanes over q, 1: lanes over p); util: busy MAC-lane "
                  "cycles / (L x cycles); dense: ceil(M/L)*N cycles of a dense engine with the same L")
    for note in res["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {len(res['files']) + 1} files to {args.out}: "
                  + ", ".join(sorted([*res["files"], MARKER])))
    return 0


def generate_cli_spec():
    return ("Generate the accelerator's Verilog, register map, load image and estimate for an artifact.",
            _add_arguments, _run)
