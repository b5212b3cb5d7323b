"""The contract's subcommands: ``ttforge schedule`` (compare the contraction orders of one
TT layer) and ``ttforge inspect`` (what a compiled artifact holds). Neither needs torch."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ttforge.errors import ConfigError
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION, ROUNDING
from ttforge.ir.artifact import (ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, dump_json, layer_kind,
                                 load_artifact)
from ttforge.ir.executor import IntLayer
from ttforge.ir.onchip import on_chip_bytes
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape

__all__ = ["schedule_cli_spec", "inspect_cli_spec", "inspect_artifact", "parse_int_list"]



def parse_int_list(text: str) -> list[int]:
    """``"7,4,7,4"`` -> ``[7, 4, 7, 4]`` (for argparse ``type=``)."""
    try:
        return [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers (e.g. 7,4,7,4)"
        ) from None


def _schedule_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-modes", type=parse_int_list, required=True, help="e.g. 7,4,7,4")
    p.add_argument("--out-modes", type=parse_int_list, required=True, help="e.g. 4,8,4,4")
    p.add_argument("--ranks", type=parse_int_list, required=True,
                   help="one int (upper bound on every bond) or the d-1 internal ranks")
    p.add_argument("--batch", type=int, default=1, help="batch size for the costs (default 1)")
    p.add_argument("--objective", choices=["macs", "peak"], default="macs")
    p.add_argument("--json", action="store_true", help="print the chosen schedule as JSON")


def _schedule_run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ConfigError(f"--batch={args.batch} must be >= 1")
    ranks = args.ranks[0] if len(args.ranks) == 1 else args.ranks
    shape = TTShape(tuple(args.out_modes), tuple(args.in_modes), ranks)
    best = ContractionSchedule.optimal(shape, args.batch, args.objective)
    if args.json:
        print(json.dumps(best.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    dense = args.batch * shape.in_size * shape.out_size
    table = Table(title=f"TT {shape.out_size}x{shape.in_size}, ranks {list(shape.ranks)}, "
                        f"batch {args.batch} (dense: {dense:,} MACs)")
    for col in ("order", "MACs", "x dense", "peak elements", ""):
        table.add_column(col, justify="right")
    rows = [ContractionSchedule(shape, o) for o in schedule_orders(shape.d)]
    for s in sorted(rows, key=lambda s: (s.cost(args.batch).macs, s.cost(args.batch).peak_elements)):
        c = s.cost(args.batch)
        table.add_row(str(list(s.order)), f"{c.macs:,}", f"{c.macs / dense:.3f}",
                      f"{c.peak_elements:,}", "chosen" if s.order == best.order else "")
    Console().print(table)
    return 0


def schedule_cli_spec():
    return _schedule_arguments, _schedule_run


# ---------------------------------------------------------------------------------------
# ttforge inspect
# ---------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------
def _layer_summary(layer: IntLayer) -> dict[str, Any]:
    s = layer.schedule
    return {
        "kind": layer_kind(layer),
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "out_modes": list(s.shape.out_modes),
        "in_modes": list(s.shape.in_modes),
        "ranks": list(s.shape.ranks),
        "order": list(s.order),
        "w_bits": layer.w_bits,
        "in_bits": layer.in_bits,
        "inter_bits": layer.inter_bits,
        "out_bits": layer.out_bits,
        "acc_bits": layer.acc_bits,
        "in_exp": layer.in_exp,
        "core_exps": list(layer.core_exps),
        "step_exps": list(layer.step_exps),
        "shifts": list(layer.shifts()),
        "relu": layer.relu,
        "has_bias": layer.bias is not None,
        "macs": sum(st.macs for st in s.steps),
    }


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ttforge inspect --json`` prints: layers, widths, exponents and memory."""
    net = load_artifact(path)
    mem = on_chip_bytes(net)
    layers = [{**_layer_summary(layer), **b} for layer, b in zip(net.layers, mem["layers"])]
    return {
        "artifact": str(path),
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "arithmetic_version": ARITHMETIC_SPEC_VERSION,
        "rounding": ROUNDING,
        "meta": net.meta,
        "layers": layers,
        "total": mem["total"],
    }


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="a .ttfa file written by save_artifact")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def _fmt_list(v: list[int]) -> str:
    return ",".join(str(x) for x in v)


def _inspect_run(args: argparse.Namespace) -> int:
    from ttforge.ir.train_state import inspect_state_run, is_state_file

    if is_state_file(args.artifact):  # a training state (.ttts): its own tables
        return inspect_state_run(args.artifact, args.json)
    info = inspect_artifact(args.artifact)
    if args.json:
        print(dump_json(info))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    layers = info["layers"]
    console.print(f"[bold]{args.artifact}[/]: {info['format']} v{info['format_version']}, "
                  f"arithmetic spec v{info['arithmetic_version']}, rounding {info['rounding']}, "
                  f"{len(layers)} layers", highlight=False)
    if info["meta"]:
        console.print("meta: " + ", ".join(f"{k}={v}" for k, v in info["meta"].items()), highlight=False)

    def table(title: str, cols: tuple[str, ...], first_width: int = 1) -> Table:
        t = Table(title=title, title_justify="left")
        for col in cols:
            t.add_column(col, min_width=first_width if col == "#" else None, 
                         justify="left" if col in ("kind", "order") else "right", no_wrap=True)
        return t

    shape = table("Layers", ("#", "kind", "in->out", "m\n(out)", "n\n(in)", "ranks", "order", "MACs",
                             "relu", "bias"))
    arith = table("Arithmetic", ("#", "bits\nw/act/inter/acc", "in\nexp", "core\nexps", "step\nexps",
                                 "shifts"))
    for i, L in enumerate(layers):
        act = f"{L['out_bits']}" if L["in_bits"] == L["out_bits"] else f"{L['in_bits']}->{L['out_bits']}"
        shape.add_row(str(i), L["kind"], f"{L['in_features']}->{L['out_features']}",
                      _fmt_list(L["out_modes"]), _fmt_list(L["in_modes"]), _fmt_list(L["ranks"]),
                      _fmt_list(L["order"]), f"{L['macs']:,}", "yes" if L["relu"] else "no",
                      "yes" if L["has_bias"] else "no")
        arith.add_row(str(i), f"{L['w_bits']}/{act}/{L['inter_bits']}/{L['acc_bits']}", str(L["in_exp"]),
                      _fmt_list(L["core_exps"]), _fmt_list(L["step_exps"]), _fmt_list(L["shifts"]))
    mem = table("On-chip bytes per sample (cores bit-packed; peak intermediate incl. input)",
                ("#", "params", "cores", "bias", "peak\ninter.", "on-chip", "dense\nINT8", "ratio", "saving"), 5)

    def row(name: str, d: dict, end_section: bool = False) -> None:
        mem.add_row(name, f"{d['params']:,}", f"{d['core_bytes']:,}", f"{d['bias_bytes']:,}",
                    f"{d['peak_intermediate_bytes']:,}", f"{d['on_chip_bytes']:,}",
                    f"{d['dense_int8_bytes']:,}", f"{d['ratio']:.3f}", f"{1 / d['ratio']:.1f}x",
                    end_section=end_section)

    for i, L in enumerate(layers):
        row(str(i), L, end_section=i == len(layers) - 1)
    row("total", info["total"])
    for t in (shape, arith, mem):
        console.print(t)
    return 0


def inspect_cli_spec():
    return _inspect_arguments, _inspect_run
