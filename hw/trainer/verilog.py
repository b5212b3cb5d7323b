"""The generated files of the training top, written atomically into one directory.

:func:`generate_train_verilog` is the Verilog text of ``TrainAccel(config)`` (module
``ttforge_train``); :func:`generate_train` writes it with its Verilator waivers, the
configuration and the training register map (JSON, C header, Markdown) into ``out_dir``,
like ``ttforge generate`` does for the inference top: the directory is replaced as a
whole, and only if it is empty or a previous output of this function (recognised by its
``generate_train.json`` manifest and the checksums of every file in it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ttforge.atomic import check_output_dir, check_owned_dir, write_files_atomically
from ttforge.errors import ConfigError
from ttforge.hw.trainer.top import TRAIN_TOP_NAME, verilator_waivers
from ttforge.hw.trainer.top import verilog as _verilog

__all__ = ["generate_train_verilog", "generate_train", "train_regmap_files", "TRAIN_MARKER"]

TRAIN_MARKER = "generate_train.json"


def generate_train_verilog(config, *, reset: str = "rst", name: str = TRAIN_TOP_NAME) -> str:
    """The Verilog of ``TrainAccel(config)`` as module ``name`` (``ttforge_train``;
    byte-identical for the same inputs)."""
    return _verilog(config, reset=reset, name=name)


def _own(out: Path) -> None:
    check_owned_dir(out, TRAIN_MARKER, "ttforge-generate-train", lambda m: m["files"], flag="out_dir",
                    command="ttforge.hw.trainer.verilog.generate_train")


def train_regmap_files(regmap) -> dict[str, bytes]:
    """The training register map's files, by name, as ``generate --train`` and ``build
    --train`` write them: ``train_regmap.json``, ``ttforge_train_regs.h`` (the header
    ``ttforge_train_driver.h`` includes) and ``train_regmap.md``."""
    return {"train_regmap.json": regmap.to_json().encode(),
            "ttforge_train_regs.h": regmap.to_c_header().encode(),
            "train_regmap.md": ("# ttforge training register map\n\n" + regmap.to_markdown()).encode()}


def generate_train(config, out_dir: str | os.PathLike, *, reset: str = "rst",
                   verilog: bool = True, name: str | None = None) -> dict[str, Any]:
    """Write ``ttforge_train.v`` (unless ``verilog=False``), ``ttforge_train.vlt``,
    ``train_config.json``, ``train_regmap.json``, ``ttforge_train_regs.h`` and
    ``train_regmap.md`` into ``out_dir``; returns the manifest. ``name`` replaces
    ``ttforge_train`` as the module and the Verilog files' stem
    (:func:`ttforge.hw.emit.check_module_name`)."""
    from dataclasses import asdict

    from ttforge import __version__
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.regmap import TRAIN_REGMAP_VERSION, train_register_map

    if not isinstance(config, TrainEngineConfig):
        raise ConfigError(f"generate_train needs a TrainEngineConfig, got {type(config).__name__}")
    if reset not in ("rst", "aresetn"):
        raise ConfigError(f"reset={reset!r} must be 'rst' or 'aresetn'")
    from ttforge.hw.emit import check_module_name

    name = check_module_name(TRAIN_TOP_NAME if name is None else name, "name")
    out = check_output_dir(out_dir, "out_dir")
    _own(out)
    rm = train_register_map(config)
    files: dict[str, bytes] = {}
    if verilog:
        files[f"{name}.v"] = generate_train_verilog(config, reset=reset, name=name).encode()
        files[f"{name}.vlt"] = verilator_waivers(name=name).encode()
    cfg = asdict(config)
    files["train_config.json"] = (json.dumps(cfg, indent=2, default=str) + "\n").encode()
    files.update(train_regmap_files(rm))
    manifest = {
        "format": "ttforge-generate-train", "version": 1,
        "producer": {"name": "ttforge", "version": __version__},
        "regmap_version": TRAIN_REGMAP_VERSION, "reset": reset, "module": name, "config": cfg,
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in sorted(files.items())},
    }
    files[TRAIN_MARKER] = (json.dumps(manifest, indent=2, default=str) + "\n").encode()
    write_files_atomically(out, files, owner=_own)
    return manifest
