"""What a training run shows and records: the progress bar and per-epoch lines, the
parameter counts, ``metrics.json`` and the final summary tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ttforge.atomic import atomic_write_text
from ttforge.errors import shown
from ttforge.model.layers import TTLinear
from ttforge.model.network import describe, describe_table
from ttforge.model.train_config import CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME


class _Progress:
    """A rich progress bar plus one line per epoch, or nothing."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.task = self.bar.add_task("training", total=total_steps, completed=done_steps)

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self.enabled:
            self.bar.update(self.task, description=text)

    def step(self) -> None:
        if self.enabled:
            self.bar.advance(self.task)

    def log(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text, highlight=False, markup=False)   # paths, as text


def _tt_ranks(model: nn.Module) -> dict[str, list[int]]:
    return {n: list(m.ranks) for n, m in model.named_modules() if isinstance(m, TTLinear)}


def _tt_params(model: nn.Module) -> tuple[int, int]:
    """(core entries, dense weight entries) over the TT layers."""
    rows = [m for m in model.modules() if isinstance(m, TTLinear)]
    return sum(m.n_params for m in rows), sum(m.in_features * m.out_features for m in rows)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _summary(cfg, model, ds, history, truncation, elapsed) -> dict[str, Any]:
    last = history[-1] if history else {}
    tt, tt_dense = _tt_params(model)
    rows = describe(model)
    s = {
        "data": ds.name,
        "n_train": int(ds.x_train.shape[0]),
        "n_test": int(ds.x_test.shape[0]),
        "model": cfg.model.kind,
        "epochs": last.get("epoch", 0),
        "seed": cfg.seed,
        "train_acc": last.get("train_acc"),
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "params": _n_params(model),
        "dense_params": sum(r["dense_params"] for r in rows),
        "tt_params": tt,
        "tt_dense_params": tt_dense,
        "tt_compression": (tt_dense / tt) if tt else None,
        "ranks": _tt_ranks(model),
        "elapsed_s": elapsed,
    }
    if truncation:
        s["truncation"] = truncation
    return s


def _write_metrics(out_dir, cfg, model_cfg, history, truncation, summary) -> Path:
    doc = {
        "config": cfg.to_dict(),
        "model_config": model_cfg.to_dict(),
        "history": history,
        "truncation": truncation,
        "summary": summary,
    }
    return atomic_write_text(out_dir / METRICS_NAME, json.dumps(_json_ready(doc), indent=2) + "\n")


def _print_summary(model, summary, complete, out_dir) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(describe_table(model, title="network"))
    t = Table(title="run summary" + ("" if complete else " (stopped early; --resume to continue)"))
    t.add_column("", justify="left")
    t.add_column("value", justify="right")
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    t.add_row("data", f"{shown(summary['data'])} ({summary['n_train']} train / {summary['n_test']} test)")
    t.add_row("model", summary["model"])
    t.add_row("epochs", str(summary["epochs"]))
    t.add_row("train accuracy", pct(summary["train_acc"]))
    t.add_row("test accuracy", pct(summary["test_acc"]))
    t.add_row("parameters", f"{summary['params']:,} (dense MLP: {summary['dense_params']:,})")
    if summary["tt_params"]:
        t.add_row("TT layers", f"{summary['tt_params']:,} core entries vs {summary['tt_dense_params']:,} "
                               f"dense ({summary['tt_compression']:.1f}x)")
    tr = summary.get("truncation")
    if tr:
        for name, v in tr["layers"].items():
            t.add_row(f"ranks, layer {name}", f"{v['before']} -> {v['after']}")
        t.add_row("TT entries before -> after truncation", f"{tr['tt_params_before']:,} -> {tr['tt_params_after']:,}")
        t.add_row("test accuracy before -> after truncation",
                  f"{pct(tr['test_acc_before'])} -> {pct(tr['test_acc_after'])}")
    t.add_row("time", f"{summary['elapsed_s']:.1f} s")
    t.add_row("written", f"{shown(out_dir)}/{{{CHECKPOINT_NAME}, {METRICS_NAME}, {PLOT_NAME}}}")
    console.print(t)
