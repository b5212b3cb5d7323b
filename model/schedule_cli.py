"""``ttforge schedule``: compare the contraction orders of one TT layer."""

from __future__ import annotations

import argparse
import json

from ttforge.errors import ConfigError
from ttforge.model.schedule import ContractionSchedule, schedule_orders
from ttforge.model.tt import TTShape

__all__ = ["cli_spec", "parse_int_list"]


def parse_int_list(text: str) -> list[int]:
    """``"7,4,7,4"`` -> ``[7, 4, 7, 4]`` (for argparse ``type=``)."""
    try:
        return [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers (e.g. 7,4,7,4)"
        ) from None


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-modes", type=parse_int_list, required=True, help="e.g. 7,4,7,4")
    p.add_argument("--out-modes", type=parse_int_list, required=True, help="e.g. 4,8,4,4")
    p.add_argument("--ranks", type=parse_int_list, required=True,
                   help="one int (upper bound on every bond) or the d-1 internal ranks")
    p.add_argument("--batch", type=int, default=1, help="batch size for the costs (default 1)")
    p.add_argument("--objective", choices=["macs", "peak"], default="macs")
    p.add_argument("--json", action="store_true", help="print the chosen schedule as JSON")


def _run(args: argparse.Namespace) -> int:
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


def cli_spec():
    return "Show the cost of every contraction order of a TT layer and the one chosen.", _add_arguments, _run
