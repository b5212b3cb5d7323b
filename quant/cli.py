"""The ``ttforge.quant`` subcommands: ``quantize``, ``diverge`` and ``export-qonnx``.

Each ``*_cli_spec()`` returns ``(add_arguments, run)`` for :mod:`ttforge.cli`, which holds
the one-line help of every subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ttforge.errors import ArtifactError, CheckpointError, ConfigError, DataError, TTForgeError, show, show_path, shown
from ttforge.limits import MAX_RATE
from ttforge.ir.arith import MAX_ACC_BITS
# The options are declared from torch-free modules only (qonnx_export needs numpy, and
# onnx when it runs); what imports PyTorch is imported by the run functions: without
# torch, --help lists every option (the run is one line that names the install, exit 3:
# ttforge.cli).
from ttforge.quant.defaults import PTQ_DEFAULTS
from ttforge.quant.qonnx_export import (DEFAULT_OPSET, MAX_QONNX_BATCH, MAX_QONNX_CHECK, MIN_OPSET, QUANT_OPS,
                                        REQUANT_MODES, _qonnx, build_qonnx, check_qonnx, float32_bounds)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ttforge.model.data import Dataset
    from ttforge.quant.qat import QuantNetwork

__all__ = ["quantize_cli_spec", "diverge_cli_spec", "export_qonnx_cli_spec", "PTQ_DEFAULTS"]


# -- quantize --------------------------------------------------------------------------
def _add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    D = PTQ_DEFAULTS
    p.epilog = ("Examples: 'ttforge quantize runs/digits-tt -o digits.ttfa'; 'ttforge quantize "
                "runs/digits-tt --w-bits 4 --qat-epochs 5 -o digits-w4.ttfa'; mixed precision: "
                "'--w-bits 8 --layer-bits 0:4' (4-bit cores in layer 0, 8 elsewhere). Check the "
                "result with 'ttforge diverge CHECKPOINT --artifact OUT' (after QAT give the "
                "checkpoint written by --save-checkpoint).")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR",
                   help="a checkpoint of ttforge train / decompose, or its run directory")
    p.add_argument("-o", "--out", required=True, metavar="OUT.ttfa", help="artifact to write")
    g = p.add_argument_group("widths (two's complement bits)")
    g.add_argument("--w-bits", type=int, default=D["w_bits"], metavar="B",
                   help=f"TT core / weight bits, 2..8 (default {D['w_bits']})")
    g.add_argument("--act-bits", type=int, default=D["act_bits"], metavar="B",
                   help=f"bits of the input and of every layer output, 2..16 (default {D['act_bits']})")
    g.add_argument("--inter-bits", type=int, default=D["inter_bits"], metavar="B",
                   help=f"bits of the intermediates between contraction steps, 2..16 (default {D['inter_bits']})")
    g.add_argument("--acc-bits", type=int, default=D["acc_bits"], metavar="B",
                   help=f"accumulator bits, 8..{MAX_ACC_BITS} (default {D['acc_bits']})")
    g.add_argument("--layer-bits", default=D["layer_bits"], metavar="L:B[,L:B...]",
                   help="core bits per linear layer, overriding --w-bits (e.g. 0:4,1:8)")
    g = p.add_argument_group("calibration and fine-tuning")
    g.add_argument("--calibration", choices=["max", "mse"], default=D["calibration"],
                   help="exponent choice: least squared error (mse, default; much better below 8 "
                        "bits, see docs/benchmarks.md) or no saturation on the calibration data (max)")
    g.add_argument("--calib-samples", type=int, default=D["calib_samples"], metavar="N",
                   help=f"training samples to calibrate on (default {D['calib_samples']})")
    g.add_argument("--qat-epochs", type=int, default=0, metavar="N",
                   help="epochs of quantization-aware fine-tuning after PTQ (default 0)")
    g.add_argument("--lr", type=float, default=1e-3, help="QAT Adam learning rate (default 1e-3)")
    g.add_argument("--batch-size", type=int, default=64, metavar="B", help="QAT batch size (default 64)")
    g.add_argument("--keep-exponents", action="store_true",
                   help="keep the PTQ exponents during QAT (default: re-calibrate after every epoch)")
    g.add_argument("--seed", type=int, default=D["seed"],
                   help=f"calibration sample choice and QAT order (default {D['seed']})")
    g = p.add_argument_group("run")
    g.add_argument("--data", metavar="digits|DIR", help="data set (default: the checkpoint's)")
    g.add_argument("--save-checkpoint", metavar="PT",
                   help="also write the fine-tuned float weights as a checkpoint (what "
                        "'ttforge diverge' needs after QAT)")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument("--quiet", action="store_true", help="no progress lines")


def _check_out(path: str, flag: str) -> Path:
    from ttforge.atomic import check_output_file

    return check_output_file(path, flag, example="model.ttfa")


def _run_quantize(args: argparse.Namespace) -> int:
    from ttforge.atomic import check_not_input
    from ttforge.model.train import data_record, load_trained
    from ttforge.ir.artifact import absolute_data_spec, save_artifact, source_name
    from ttforge.quant.ptq import (QUANTIZE_INT_RANGES, _linear_layers, check_accumulators, is_positive_number,
                                   make_config, parse_layer_bits, quantize_trained)

    out = _check_out(args.out, "-o")
    ckpt_out = _check_out(args.save_checkpoint, "--save-checkpoint") if args.save_checkpoint else None
    if ckpt_out is not None and ckpt_out.resolve() == out.resolve():
        raise ConfigError("--save-checkpoint and -o name the same file; give two different files")
    for key, (lo, hi) in QUANTIZE_INT_RANGES.items():
        if not lo <= getattr(args, key) <= hi:
            raise ConfigError(f"--{key.replace('_', '-')} {getattr(args, key)} must be in {lo}..{hi:,}")
    if not is_positive_number(args.lr):
        raise ConfigError(f"--lr {args.lr} must be a positive number up to {MAX_RATE:g} (e.g. 1e-3)")
    layer_bits = parse_layer_bits(args.layer_bits)
    src = Path(args.checkpoint)
    if not src.exists():
        raise CheckpointError(f"checkpoint {src} does not exist; give a checkpoint file or a run directory")
    trained = load_trained(src)
    # the run's files load_trained just took as inputs (RUN given as a directory): refused
    # now, not after the quantization
    for path, flag in ((out, "-o"), (ckpt_out, "--save-checkpoint")):
        if path is not None:
            check_not_input(path, flag)
    cfg = make_config(len(_linear_layers(trained.model)), args.w_bits, args.act_bits, args.inter_bits,
                      args.acc_bits, layer_bits, args.calibration)
    check_accumulators(trained.model, cfg)
    log = None if (args.quiet or args.json) else (lambda s: print(s, flush=True))
    ds = trained.dataset(args.data)   # the run's, checked against its digest, or --data
    # the data as a run records it (absolute: the same bytes however --data was typed)
    data_spec = absolute_data_spec(args.data) if args.data else trained.config.data
    with calibration_warnings("quantize"):
        qnet, inet, report = quantize_trained(
            trained, ds, cfg, calib_samples=args.calib_samples, qat_epochs=args.qat_epochs,
            lr=args.lr, batch_size=args.batch_size, seed=args.seed, recalibrate=not args.keep_exponents,
            log=log)
    final = report["qat"] or report["ptq"]
    meta = {
        "source": source_name(src),   # not the path as typed: the same run gives the same bytes
        "data": data_spec,
        "data_sha256": report["data_sha256"],
        "method": "qat" if report["qat"] else "ptq",
        "calibration": args.calibration,
        "qat_epochs": args.qat_epochs,
        "seed": args.seed,
        "float_acc": report["float_acc"],
        "test_acc": final["int_acc"],
        "weights_fingerprint": report["quant_fingerprint"],
    }
    report["artifact"] = str(out)
    if ckpt_out is not None:
        from torch import nn

        from ttforge.model.checkpoint import save_checkpoint

        float_model = nn.Sequential(*[m for m in _float_modules(qnet, trained.model)])
        payload = {
            "kind": trained.payload.get("kind", "ttforge.train"),
            # the data it was calibrated (and with --qat-epochs fine-tuned) on: a later
            # quantize of the checkpoint reads and checks that, not the run's
            "config": dataclasses.replace(trained.config, data=data_spec).to_dict(),
            "model_config": trained.model_config.to_dict(),
            "state_dict": float_model.state_dict(),
            "optimizer": None,
            "epoch": trained.payload.get("epoch", 0),
            "history": trained.payload.get("history", []),
            "truncation": None,
            "prior": None,
            "quantization": {k: v for k, v in report.items() if k != "layers"},
            "data": data_record(ds) if args.data else trained.payload.get("data"),
        }
        report["checkpoint"] = str(ckpt_out)
    # rendered before anything is written: what prints the report cannot fail after the
    # outputs exist (a rich MarkupError on 'q[/].ttfa' made a written artifact exit 70)
    text = json.dumps(report, indent=2) + "\n" if args.json else _render_summary(report)
    if ckpt_out is not None:
        save_checkpoint(ckpt_out, payload)
    save_artifact(inet, out, meta)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


@contextlib.contextmanager
def calibration_warnings(command: str):
    """Each distinct :class:`~ttforge.quant.qat.CalibrationWarning` raised inside, once, as
    one line on stderr (``ttforge quantize: warning: ...``), when the block ends, error or
    not (QAT re-calibrates after every epoch: one line, not one per epoch)."""
    import warnings

    from ttforge.errors import one_line
    from ttforge.quant.qat import CalibrationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        try:
            yield
        finally:
            seen = []
            for w in caught:
                if not issubclass(w.category, CalibrationWarning):   # shown as before
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
                elif str(w.message) not in seen:
                    seen.append(str(w.message))
            for text in seen:
                print(f"ttforge {command}: warning: {one_line(text)}", file=sys.stderr, flush=True)


def _float_modules(qnet: QuantNetwork, template: nn.Sequential) -> list[nn.Module]:
    """The template's modules with each linear layer replaced by the (fine-tuned) one in ``qnet``."""
    from torch import nn

    from ttforge.model.layers import TTLinear

    qi = iter(ql.layer for ql in qnet.qlayers)
    return [next(qi) if isinstance(m, (TTLinear, nn.Linear)) else m for m in template.children()]


def _render_summary(r: dict[str, Any]) -> str:
    """The report as tables, as the terminal shows them."""
    from rich.console import Console

    console = Console(highlight=False)
    with console.capture() as captured:
        _print_summary(console, r)
    return captured.get()


def _print_summary(console, r: dict[str, Any]) -> None:
    from rich.table import Table

    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    # paths and data names are the user's text, never markup ('q[/].ttfa'): shown()
    t = Table(title=f"test accuracy ({shown(r['data'])}, {r['n_test']} samples)", title_justify="left")
    for col in ("network", "fake-quant (eval)", "integer executor", "vs float", "bit-exact"):
        t.add_column(col, justify="left" if col == "network" else "right")
    t.add_row("float", pct(r["float_acc"]), "-", "-", "-")
    n_ep = r["qat"]["epochs"] if r["qat"] else 0
    rows = [("PTQ", r["ptq"])] + ([(f"QAT ({n_ep} epoch{'s' * (n_ep != 1)})", r["qat"])] if r["qat"] else [])
    for name, d in rows:
        t.add_row(name, pct(d["fake_quant_acc"]), pct(d["int_acc"]),
                  f"{100 * (d['int_acc'] - r['float_acc']):+.2f} pp", "yes" if d["bit_exact"] else "NO")
    console.print(t)
    lt = Table(title=f"widths (calibration {r['calibration']}, {r['calib_samples']} samples)",
               title_justify="left")
    for col in ("#", "kind", "in->out", "ranks", "cores", "act", "inter", "acc"):
        lt.add_column(col, justify="right")
    for L in r["layers"]:
        lt.add_row(str(L["index"]), L["kind"], f"{L['in_features']}->{L['out_features']}",
                   ",".join(map(str, L["ranks"])), str(L["w_bits"]), str(L["act_bits"]),
                   str(L["inter_bits"]), str(L["acc_bits"]))
    console.print(lt)
    m = r["on_chip"]
    console.print(f"on-chip bytes per sample: {m['on_chip_bytes']:,} (cores {m['core_bytes']:,}, "
                  f"bias {m['bias_bytes']:,}, peak intermediate {m['peak_intermediate_bytes']:,}) vs "
                  f"dense INT8 weights {m['dense_int8_bytes']:,}: ratio {m['ratio']:.3f}", soft_wrap=True)
    extra = f" and {shown(r['checkpoint'])}" if r.get("checkpoint") else ""
    # soft_wrap: a path is never broken across lines (it is copied from the terminal)
    console.print(f"written {shown(r['artifact'])}{extra}", soft_wrap=True)
    if r["qat"] and not r.get("checkpoint"):
        console.print("note: QAT changed the float weights; to check this artifact with 'ttforge diverge', "
                      "rerun with --save-checkpoint PT and give that checkpoint", soft_wrap=True)


def quantize_cli_spec():
    return _add_quantize_arguments, _run_quantize


# -- diverge ---------------------------------------------------------------------------
def _is_artifact(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _add_diverge_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Examples: 'ttforge diverge runs/digits-tt --artifact digits.ttfa' (does the artifact "
                "compute what the checkpoint's quantized model computes?); 'ttforge diverge "
                "digits.ttfa' (the artifact alone: float stage = its dequantized weights); 'ttforge "
                "diverge runs/digits-tt --w-bits 4' (PTQ in memory, then compare). Exit status 0: the "
                "integer stages agree exactly; 1: they diverge (the first layer/step/element is named); "
                "2: bad input.")
    p.add_argument("source", metavar="CHECKPOINT_OR_ARTIFACT",
                   help="a checkpoint of ttforge train/quantize (or its run directory), or an artifact")
    p.add_argument("--artifact", metavar="A.ttfa",
                   help="the artifact to check against the checkpoint (its widths and exponents are used)")
    g = p.add_argument_group("inputs")
    g.add_argument("--data", metavar="digits|DIR",
                   help="data set (default: the checkpoint's, or the one the artifact records)")
    g.add_argument("--split", choices=["test", "train"], default="test", help="which split (default test)")
    g.add_argument("--samples", type=int, default=16, metavar="N", help="samples to run (default 16)")
    g.add_argument("--start", type=int, default=0, metavar="I", help="first sample (default 0)")
    g.add_argument("--input", metavar="X.npy", help="real inputs (batch, features) instead of --data")
    g = p.add_argument_group("comparison")
    g.add_argument("--tolerance-lsb", type=float, default=1.0, metavar="T",
                   help="float vs fake-quant: report elements off by more than T output LSBs (default 1)")
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g = p.add_argument_group("PTQ when no artifact is given (as in ttforge quantize)")
    for flag, kw in (("--w-bits", dict(type=int, metavar="B")), ("--act-bits", dict(type=int, metavar="B")),
                     ("--inter-bits", dict(type=int, metavar="B")), ("--acc-bits", dict(type=int, metavar="B")),
                     ("--layer-bits", dict(metavar="L:B[,L:B...]")), ("--calibration", dict(choices=["max", "mse"])),
                     ("--calib-samples", dict(type=int, metavar="N")), ("--seed", dict(type=int))):
        default = PTQ_DEFAULTS[flag[2:].replace("-", "_")]
        g.add_argument(flag, help=f"(default {default if default != '' else 'none'})", **kw)


def _diverge_ptq(args: argparse.Namespace, artifact: bool) -> None:
    """With an artifact the PTQ options do not apply (it has its widths and exponents):
    one given is a one-line error (it was ignored silently); without, unset ones take
    :data:`PTQ_DEFAULTS`."""
    for key, default in PTQ_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
        elif artifact:
            raise ConfigError(f"--{key.replace('_', '-')}: applies to the PTQ done when no artifact is given; "
                              f"drop it (the artifact's widths and exponents are used)")


def _inputs(args: argparse.Namespace, dataset: Callable[[], Dataset] | None,
            n_features: int) -> tuple[torch.Tensor | np.ndarray, str]:
    """The samples to compare: ``--input``, else ``dataset()``'s split (None: no data)."""
    if args.input:
        from ttforge.limits import read_array

        path = Path(args.input)
        # bounded, regular, never a pickle, not empty, integers or finite reals in float32's range
        x = read_array(path, "--input", DataError)
        if x.ndim != 2 or x.shape[1] != n_features:
            raise DataError(f"--input {path} has shape {x.shape} ({x.dtype}); give (batch, {n_features}) numbers")
        # as read: find_divergence converts a chunk at a time (float64 of a whole 256 MiB
        # uint8 file would be 2 GiB)
        return x, f"{path} ({x.shape[0]} samples)"
    if dataset is None:
        raise ConfigError("no data: give --data digits|DIR or --input X.npy")
    ds = dataset()
    if ds.n_features != n_features:
        raise DataError(f"data {ds.name} has {ds.n_features} features but the network takes {n_features}; "
                        f"give the matching --data")
    x = ds.x_test if args.split == "test" else ds.x_train
    if args.start >= x.shape[0]:
        raise ConfigError(f"--start {args.start} is past the {x.shape[0]} {args.split} samples")
    x = x[args.start:args.start + args.samples]
    return x.double(), f"{ds.name} {args.split} samples {args.start}..{args.start + x.shape[0] - 1}"


def _artifact_dataset(data: str | None, meta: dict, src: Path) -> Callable[[], Dataset] | None:
    """How ``diverge ARTIFACT`` loads its data (when it needs it): ``--data`` as given,
    else the data the artifact records (``meta['data']``), checked against the digest
    ``quantize`` records beside it (``data_sha256``; artifacts written before are not
    checked); None when it records none."""
    from ttforge.model.data import load_dataset
    from ttforge.model.train import recorded_dataset

    if data:
        return lambda: load_dataset(data)
    spec, digest = meta.get("data"), meta.get("data_sha256")
    if not isinstance(spec, str) or not spec:
        return None
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        # present but no sha256: never read as "written before digests" (unchecked)
        raise ArtifactError(f"{show_path(src)}: meta.data_sha256 is {show(digest)}, not a sha256 of its "
                            f"data; give --data DIR to choose the data yourself")
    return lambda: recorded_dataset(spec, digest, src, "give --data DIR to use other data on purpose",
                                    did="was calibrated on")


def _run_diverge(args: argparse.Namespace) -> int:
    from torch import nn

    from ttforge.ir.artifact import load_artifact
    from ttforge.model.layers import TTLinear
    from ttforge.quant.diverge import check_sample_values, find_divergence, float_model_of, quant_network_for
    from ttforge.quant.ptq import (calibration_samples, make_config, parse_layer_bits, ptq,
                                   weights_fingerprint)

    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples} must be >= 1")
    if args.start < 0:
        raise ConfigError(f"--start {args.start} must be >= 0")
    if not (args.tolerance_lsb >= 0):
        raise ConfigError(f"--tolerance-lsb {args.tolerance_lsb} must be >= 0")
    src = Path(args.source)
    if not src.exists():
        raise CheckpointError(f"{src} does not exist; give a checkpoint, a run directory or an artifact")
    notes = []
    _diverge_ptq(args, bool(args.artifact) or _is_artifact(src))
    if _is_artifact(src):
        if args.artifact:
            raise ConfigError("the source is already an artifact; drop --artifact or give a checkpoint as source")
        inet = load_artifact(src)
        check_sample_values(inet)   # before the stages are built or run
        qnet = quant_network_for(float_model_of(inet), inet)
        dataset = _artifact_dataset(args.data, inet.meta, src)
        stages = f"artifact {src} (float stage: its dequantized weights)"
    else:
        from ttforge.model.train import load_trained

        trained = load_trained(src)
        # loaded once, when needed (not for --input with an artifact); the run's data is
        # checked against the digest the run records
        dataset = functools.cache(lambda: trained.dataset(args.data))
        if args.artifact:
            apath = Path(args.artifact)
            if not apath.is_file():
                raise ArtifactError(f"--artifact {apath} does not exist; give a file written by ttforge quantize")
            inet = load_artifact(apath)
            check_sample_values(inet)
            qnet = quant_network_for(trained.model, inet)
            fp = inet.meta.get("weights_fingerprint")
            if fp and fp != weights_fingerprint(trained.model):
                notes.append(f"note: the weights of {src} are not the ones {apath} was compiled from "
                             f"(after QAT give the checkpoint written by 'ttforge quantize --save-checkpoint')")
            stages = f"checkpoint {src} vs artifact {apath}"
        else:
            check_sample_values(trained.model)   # before the calibration runs
            n_layers = sum(isinstance(m, (TTLinear, nn.Linear)) for m in trained.model.children())
            cfg = make_config(n_layers, args.w_bits, args.act_bits, args.inter_bits, args.acc_bits,
                              parse_layer_bits(args.layer_bits), args.calibration)
            with calibration_warnings("diverge"):
                qnet = ptq(trained.model, calibration_samples(dataset(), args.calib_samples, args.seed), cfg)
            from ttforge.quant.qat import compile_network

            inet = compile_network(qnet)
            stages = f"checkpoint {src}, PTQ in memory (w{args.w_bits}/a{args.act_bits}/i{args.inter_bits})"
    x, what = _inputs(args, dataset, inet.in_features)
    report = find_divergence(qnet, inet, x, args.tolerance_lsb)
    if args.json:
        print(json.dumps({"source": str(src), "artifact": args.artifact, "inputs": what, "notes": notes,
                          **report.to_dict()}, indent=2))
    else:
        print(f"stages: float -> fake-quant (eval) -> integer executor; {stages}")
        print(f"inputs: {what}")
        print(report.format())
        for n in notes:
            print(n)
    sys.stdout.flush()
    return 0 if report.equal else 1


def diverge_cli_spec():
    return _add_diverge_arguments, _run_diverge


# -- export-qonnx ----------------------------------------------------------------------
def _add_export_qonnx_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="a compiled artifact (.ttfa) from ttforge quantize")
    p.add_argument("-o", "--output", required=True, help="QONNX file to write, e.g. model.onnx")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size of the graph (default 1)")
    p.add_argument("--requant", choices=REQUANT_MODES, default="intquant",
                   help="requantize accumulators with IntQuant (default) or Trunc (QONNX opset 2)")
    p.add_argument("--quant-op", choices=QUANT_OPS, default="IntQuant",
                   help="name of the quantization op (Quant for tools that predate IntQuant)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset of the standard ops (default {DEFAULT_OPSET}; {MIN_OPSET} or newer)")
    p.add_argument("--check", type=int, default=16, metavar="N",
                   help="run N inputs with the qonnx executor before writing and require exact "
                        "equality with the integer executor (default 16; 0 skips; needs qonnx)")


def _run_export_qonnx(args: argparse.Namespace) -> int:
    import sys

    from ttforge.atomic import atomic_write_bytes, check_output_file
    from ttforge.ir.artifact import load_artifact

    out = check_output_file(args.output, "-o", example="model.onnx")
    if not 0 <= args.check <= MAX_QONNX_CHECK:
        raise ConfigError(f"--check={args.check} must be in 0..{MAX_QONNX_CHECK:,} inputs")
    if not 1 <= args.batch <= MAX_QONNX_BATCH:   # before the artifact is read
        raise ConfigError(f"--batch={args.batch} must be in 1..{MAX_QONNX_BATCH:,} (the graph's fixed batch size)")
    net = load_artifact(args.artifact)
    proto = build_qonnx(net, batch=args.batch, requant=args.requant, quant_op=args.quant_op,
                        opset=args.opset)
    checked = None
    if args.check:
        try:
            _qonnx()
        except TTForgeError:
            print("qonnx is not installed; skipped the check with the qonnx executor (pip install qonnx)")
        else:
            try:
                checked = check_qonnx(net, proto, n=args.check)
            except AssertionError as e:  # a ttforge bug: never write a graph that disagrees
                print(f"ttforge export-qonnx: {e}; nothing written (please report this)", file=sys.stderr)
                return 1
    path = atomic_write_bytes(out, proto.SerializeToString())
    n_mm = sum(len(layer.schedule.steps) for layer in net.layers)
    worst = max(sb.bound for sb in float32_bounds(net))
    print(f"wrote {show_path(path)} (QONNX, opset {args.opset}; {len(net.layers)} layers as {n_mm} MatMul steps; "
          f"requant {args.requant}; largest float32 sum {worst:,} <= 2^24)")
    if checked:
        print(f"qonnx check: {checked} inputs, outputs equal to the integer executor (np.array_equal)")
    return 0


def export_qonnx_cli_spec():
    return _add_export_qonnx_arguments, _run_export_qonnx
