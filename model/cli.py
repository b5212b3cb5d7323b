"""The ``ttforge.model`` subcommands: ``train``, ``decompose``, ``export-onnx`` and ``train-int``.

Each ``*_cli_spec()`` returns ``(add_arguments, run)`` for :mod:`ttforge.cli`, which holds
the one-line help of every subcommand.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ttforge.atomic import atomic_write_bytes, check_output_file
from ttforge.errors import CheckpointError, ConfigError, show_path, shown
from ttforge.model.defaults import PRIORS
from ttforge.onnx_graph import DEFAULT_OPSET, MIN_OPSET

# The options are declared from torch-free modules only; what imports PyTorch is imported
# by the run functions: without torch, --help lists every option (the run is one line
# that names the install, exit 3: ttforge.cli).
if TYPE_CHECKING:
    from ttforge.model.train_config import TrainConfig

__all__ = ["train_cli_spec", "decompose_cli_spec", "export_onnx_cli_spec", "train_int_cli_spec"]


# -- train -----------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    from ttforge.ir.cli import parse_int_list

    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(parse_int_list(text))


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "Writes DIR/last.pt (checkpoint after every epoch), DIR/metrics.json and DIR/metrics.png; "
        "a run whose weights turn NaN or infinite stops (exit 2) and keeps the last epoch's. "
        "Options given on the command line override those of --config. Examples: "
        "'ttforge train --rank-adaptive --out runs/digits'; "
        "'ttforge train --model dense --out runs/digits-dense'; "
        "'ttforge train --data ../shared/data/mnist-t10k --hidden 256 --ranks 8 --epochs 20'."
    )
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="digits|DIR",
                   help="'digits' (embedded scikit-learn 8x8 digits, default) or a directory of MNIST "
                        "IDX files (t10k-images-idx3-ubyte[.gz] ...; 'idx:DIR' also works)")
    g.add_argument("--model", choices=["tt", "dense"], help="TT hidden layers (default) or a dense baseline")
    g.add_argument("--hidden", type=_int_list, metavar="N[,N...]",
                   help="hidden layer widths (default 64; 'none' for no hidden layer)")
    g.add_argument("--ranks", type=int, metavar="R", help="upper bound on every TT rank, clipped to each bond's maximal rank (default 8); exact per-layer ranks go in --config")
    g.add_argument("--n-cores", type=int, metavar="D", help="cores per TT layer (default: by size)")
    g.add_argument("--tt-last-layer", action="store_true", default=None,
                   help="make the classifier a TT layer too")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs (default 30)")
    g.add_argument("--batch-size", type=int, metavar="B", help="mini-batch size (default 64)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 1e-2)")
    g.add_argument("--weight-decay", type=float, metavar="W", help="Adam weight decay (default 0)")
    g.add_argument("--seed", type=int, metavar="S", help="seed of initialisation and shuffling (default 0)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads while training (default 1: fastest for small layers)")
    g = p.add_argument_group("rank-adaptive training")
    g.add_argument("--rank-adaptive", action="store_true", default=None,
                   help="learn the ranks with a low-rank prior, then truncate them")
    g.add_argument("--prior", choices=list(PRIORS), help="hyperprior of the rank variances (default log_uniform)")
    g.add_argument("--threshold", type=float, dest="truncation_threshold", metavar="T",
                   help="truncate rank indices with variance below this times their bond's max (default 0.01)")
    g.add_argument("--finetune-epochs", type=int, metavar="N",
                   help="epochs of plain training after truncation (default 10)")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="a .json or .toml file of TrainConfig fields "
                   "(data, epochs, ..., a [model] table; may also set out); a relative data "
                   "directory is relative to the file")
    g.add_argument("--out", metavar="DIR", help="run directory (default runs/<data>-<model>[-ra])")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar or tables")


def _read_config_file(path: str) -> dict[str, Any]:
    from ttforge.limits import MAX_CONFIG_BYTES, parse_config_text, read_bounded

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--config {path} does not exist; give a .json or .toml file")
    try:   # a regular file of bounded size: a FIFO or /dev/zero is refused, never read
        text = read_bounded(p, "--config", MAX_CONFIG_BYTES, ConfigError).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                          f"save it as UTF-8 JSON or TOML") from None
    if p.suffix not in (".toml", ".json"):
        raise ConfigError(f"--config {path}: unknown file type {p.suffix!r}; use .json or .toml")
    data = parse_config_text(text, p.suffix == ".toml", f"--config {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold an object/table of fields")
    return data


_TRAIN_FLAGS = ("data", "epochs", "batch_size", "lr", "weight_decay", "seed", "rank_adaptive",
                "prior", "truncation_threshold", "finetune_epochs", "threads")
_MODEL_FLAGS = {"model": "kind", "hidden": "hidden", "ranks": "ranks", "n_cores": "n_cores",
                "tt_last_layer": "tt_last_layer"}


def _config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    from ttforge.model.checkpoint import load_checkpoint
    from ttforge.model.network import ModelConfig
    from ttforge.model.train_config import CHECKPOINT_NAME, TrainConfig, _stored_config, default_out_dir

    file_out = None
    if args.config:
        data = _read_config_file(args.config)
        if isinstance(data.get("data"), str) and data["data"]:
            from ttforge.ir import absolute_data_spec

            # as in a flow config: the file's data is where the file says, from any directory;
            # a link to the file is resolved first, as flow does (its target's directory)
            data["data"] = absolute_data_spec(data["data"], Path(args.config).resolve().parent)
        file_out = data.pop("out", None)
        if file_out is not None and (not isinstance(file_out, str) or not file_out):
            raise ConfigError(f"--config {args.config}: out={file_out!r} must be a directory path "
                              f"(a string, e.g. \"runs/digits\")")
        base = TrainConfig.from_dict(data)
    else:
        base = TrainConfig()
    out = Path(args.out or file_out) if (args.out or file_out) else None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR, the run to continue")
        ckpt = out / CHECKPOINT_NAME
        if not ckpt.exists():
            raise CheckpointError(f"--resume: {ckpt} does not exist; drop --resume to start a new run")
        if not args.config:
            base = _stored_config(load_checkpoint(ckpt), ckpt)
    if args.ranks is not None and args.ranks < 1:
        raise ConfigError(f"--ranks={args.ranks} must be >= 1")
    train_kw = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    model_kw = {v: getattr(args, k) for k, v in _MODEL_FLAGS.items() if getattr(args, k) is not None}
    model = base.model
    if model_kw:
        d = model.to_dict()
        if any(k in model_kw and model_kw[k] != d[k] for k in ("kind", "n_cores", "tt_last_layer")) or (
            "hidden" in model_kw and list(model_kw["hidden"]) != d["hidden"]
        ):
            d["in_modes"] = d["out_modes"] = None  # explicit modes no longer fit a changed shape
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in model_kw.items()})
        model = ModelConfig.from_dict(d)
    cfg = replace(base, **train_kw, model=model) if (train_kw or model_kw) else base
    if train_kw or model_kw:
        cfg = TrainConfig.from_dict(cfg.to_dict())  # validate the combination
    return cfg, out if out is not None else default_out_dir(cfg)


def _run_train(args: argparse.Namespace) -> int:
    from ttforge.atomic import output_lock
    from ttforge.model.train import train

    cfg, out = _config_from_args(args)
    with output_lock(out, "--out"):   # one run at a time into a directory
        result = train(cfg, out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    return 0 if result.complete else 1


def train_cli_spec():
    return _add_train_arguments, _run_train


# -- decompose -------------------------------------------------------------------------
def _add_decompose_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Example: 'ttforge decompose runs/digits-dense/last.pt --rel-error 0.3 -o tt.pt'. "
                "The new checkpoint loads like a trained one (ttforge.model.train.load_trained).")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint of ttforge train (or its run directory)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rel-error", type=float, metavar="E",
                   help="relative Frobenius error bound per layer, guaranteed (e.g. 0.1)")
    g.add_argument("--max-rank", type=int, metavar="R", help="cap on every TT rank")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="file of the new TT checkpoint")
    p.add_argument("--skip-last", action="store_true", help="keep the classifier layer dense")
    p.add_argument("--data", metavar="digits|DIR", help="data to measure accuracy on (default: the "
                   "checkpoint's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_decompose(args: argparse.Namespace) -> int:
    from ttforge.model.decomposition import decompose

    report = decompose(args.checkpoint, args.out, rel_error=args.rel_error, max_rank=args.max_rank,
                       skip_last=args.skip_last, data=args.data)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    bound = f"rel. error <= {args.rel_error}" if args.rel_error is not None else f"max rank {args.max_rank}"
    t = Table(title=f"TT-SVD of {shown(args.checkpoint)} ({bound})")
    for col in ("layer", "shape", "modes in -> out", "ranks", "rel. error", "dense", "TT", "compression"):
        t.add_column(col, justify="right")
    for r in report["layers"]:
        t.add_row(r["name"], f"{r['in_features']} -> {r['out_features']}",
                  "x".join(map(str, r["in_modes"])) + " -> " + "x".join(map(str, r["out_modes"])),
                  ",".join(map(str, r["ranks"])), f"{r['rel_error']:.4f}", f"{r['dense_params']:,}",
                  f"{r['tt_params']:,}", f"{r['compression']:.2f}x")
    console = Console()
    console.print(t)
    console.print(f"test accuracy {100 * report['test_acc_before']:.2f}% -> "
                  f"{100 * report['test_acc_after']:.2f}%   parameters {report['params_before']:,} -> "
                  f"{report['params_after']:,}   written {shown(args.out)}", highlight=False)
    for r in report["layers"]:
        if r["compression"] < 1:
            console.print(f"[yellow]note:[/] layer {r['name']} holds more entries as TT than dense "
                          f"({r['compression']:.2f}x); a larger --rel-error or a smaller --max-rank "
                          f"compresses it")
    return 0


def decompose_cli_spec():
    return _add_decompose_arguments, _run_decompose


# -- export-onnx -----------------------------------------------------------------------
def _add_export_onnx_arguments(p: argparse.ArgumentParser) -> None:
    from ttforge.ir.cli import parse_int_list

    p.add_argument("checkpoint", help="checkpoint of ttforge train / decompose (or its run directory)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; {MIN_OPSET} or newer)")
    p.add_argument("--input-shape", type=parse_int_list, default=None,
                   help="shape of one input sample, e.g. 1,28,28 (default: flat in_features)")


def _run_export_onnx(args: argparse.Namespace) -> int:
    from ttforge.model.layers import TTLinear
    from ttforge.model.onnx_export import _layers, build_onnx, check_onnx, check_onnx_agrees
    from ttforge.model.train import load_trained

    out = check_output_file(args.output, "-o", example="model.onnx")  # before loading, not after
    model = load_trained(args.checkpoint).model
    proto = build_onnx(model, opset=args.opset, input_shape=args.input_shape,
                       input_shape_flag="--input-shape").SerializeToString()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        err = None
    else:  # the graph is checked before it is written: a failed check leaves no file
        err = check_onnx(model, proto, input_shape=args.input_shape)
        check_onnx_agrees(err)
    path = atomic_write_bytes(out, proto)
    n_mm = n_tt = 0
    for m in _layers(model):
        if isinstance(m, TTLinear):
            n_tt += 1
            n_mm += m.tt_shape.d
    print(f"wrote {show_path(path)} (opset {args.opset}; {n_tt} TT layer{'s' * (n_tt != 1)} as "
          f"{n_mm} MatMul steps)")
    if err is None:
        print("onnxruntime is not installed; skipped the check against PyTorch")
    else:
        print(f"onnxruntime check: max |onnx - pytorch| = {err:.3g} of the output scale on 37 random inputs")
    return 0


def export_onnx_cli_spec():
    return _add_export_onnx_arguments, _run_export_onnx


# -- train-int -------------------------------------------------------------------------
def train_int_cli_spec():
    """The integer step's command (:func:`ttforge.ir.cli.train_int_run`) with the project's data
    sets and plot (:mod:`ttforge.model.train_int`)."""
    from ttforge.ir.cli import train_int_arguments as arguments, train_int_run as run
    from ttforge.model.train_int import load_numpy, plot_int_history

    return arguments, lambda args: run(args, load_numpy, plot_int_history)
