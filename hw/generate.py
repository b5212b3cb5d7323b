"""Everything needed to put one artifact on the accelerator (what ``ttforge generate`` runs).

:func:`generate` (``ttforge generate ARTIFACT [--config FILE] [--lanes L] -o DIR``) writes
into ``DIR``:

| file | content |
|---|---|
| ``ttforge_accel.v`` | the Verilog of the engine for the config (``ttforge.hw.top.verilog``) |
| ``ttforge_accel.vlt`` | its Verilator lint waivers, each with its reason |
| ``config.json`` | the :class:`~ttforge.hw.config.AccelConfig` used |
| ``regmap.json``, ``ttforge_regs.h``, ``regmap.md`` | the register map (three views of one source) |
| ``load_image.json``, ``load_image.bin`` | the ordered AXI4-Lite writes that load the artifact |
| ``estimate.json`` | the analytic estimate per layer (cycles, MACs, utilization, memory bits) |
| ``generate.json`` | what was generated from what: versions, the artifact's digest, each file's sha256 |

and returns the manifest and the estimate (the command prints it as a table). The files are written into a temporary directory
next to ``DIR`` and renamed into place, so ``DIR`` is either the complete new output or
untouched. An existing ``DIR`` is replaced only if it is empty or a previous
``ttforge generate`` output, recognised by content: its ``generate.json`` lists every
other file in it with the sha256 it was written with (a file the user added or
changed there is never deleted: the command refuses instead).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ttforge.atomic import check_output_dir, check_owned_dir, write_files_atomically
from ttforge.errors import ConfigError, bytes_escaped

__all__ = ["generate", "MARKER", "file_name_record"]

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
             verilog: bool = True, name: str | None = None) -> dict[str, Any]:
    """Generate the files of ``ttforge generate`` into ``out_dir`` (atomically).

    ``name`` is the Verilog module and the stem of its ``.v``/``.vlt`` files (default
    ``ttforge_accel``; :func:`ttforge.hw.emit.check_module_name`). Returns the manifest written to
    ``generate.json`` plus the estimate object under ``"_estimate"``.
    """
    from ttforge import __version__
    from ttforge.hw.cycles import estimate
    from ttforge.hw.program import compile_program, load_image, load_image_to_bytes, load_image_to_json
    from ttforge.hw.regmap import REGMAP_VERSION, RegisterMap
    from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION
    from ttforge.ir.artifact import load_artifact

    from ttforge.hw.emit import check_module_name
    from ttforge.hw.top import TOP_NAME

    name = check_module_name(TOP_NAME if name is None else name, "name")
    out = check_output_dir(out_dir, "-o")
    owner = _own_output
    owner(out)  # before the work: a directory holding anything else is never replaced
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
        from ttforge.hw.top import verilog as emit, verilator_waivers

        files[f"{name}.v"] = emit(cfg, reset=reset, name=name).encode()
        files[f"{name}.vlt"] = verilator_waivers(name=name).encode()
    files["config.json"] = cfg.to_json().encode()
    files["regmap.json"] = regmap.to_json().encode()
    files["ttforge_regs.h"] = regmap.to_c_header().encode()
    files["regmap.md"] = ("# ttforge register map\n\n" + regmap.to_markdown()).encode()
    files["load_image.json"] = load_image_to_json(writes, regmap).encode()
    files["load_image.bin"] = load_image_to_bytes(writes, cfg)
    files["estimate.json"] = (json.dumps(est.to_dict(), indent=2) + "\n").encode()
    manifest: dict[str, Any] = {
        "format": "ttforge-generate",
        "version": 1,
        "producer": {"name": "ttforge", "version": __version__},
        "regmap_version": REGMAP_VERSION,
        "arithmetic_version": ARITHMETIC_SPEC_VERSION,
        "artifact": {**file_name_record(art.name),
                     "sha256": hashlib.sha256(art.read_bytes()).hexdigest()},
        "config": cfg.to_dict(),
        "reset": reset,
        "module": name,
        "program": {"steps": len(program.steps), "load_writes": len(writes), **program.globals},
        "notes": notes,
        "files": {n: hashlib.sha256(data).hexdigest() for n, data in sorted(files.items())},
    }
    files[MARKER] = (json.dumps(manifest, indent=2) + "\n").encode()
    write_files_atomically(out, files, owner=owner)
    return {**manifest, "_estimate": est, "_config": cfg}


def file_name_record(name: str) -> dict[str, str]:
    """A file name as JSON that every strict parser reads: ``{"file": name}``.

    A name whose bytes are not UTF-8 reaches Python with each such byte as a lone
    surrogate (``\\udcff``), which ``json.dumps`` writes as is and serde or Go refuse
    or mangle; there ``file`` shows those bytes as ``\\xff`` (readable, valid text) and
    ``file_bytes`` holds the name's bytes in hex (exact). UTF-8 names are unchanged.
    """
    text = bytes_escaped(name)
    return {"file": text} if text == name else {"file": text, "file_bytes": os.fsencode(name).hex()}


def _own_output(out: Path) -> None:
    """An existing ``out`` is replaced only if it is empty or a previous ``ttforge
    generate`` output, recognised by content: a ``generate.json`` of format
    ``ttforge-generate`` whose file list (with sha256) covers every other file in it."""
    check_owned_dir(out, MARKER, "ttforge-generate", lambda m: m["files"], flag="-o",
                    command="ttforge generate")
