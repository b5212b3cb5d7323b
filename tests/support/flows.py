"""Small flow configurations shared by the flow and sweep tests."""

from __future__ import annotations

#: a base flow small enough to train in seconds: one epoch, no rank adaptation, no QAT
TINY_FLOW_TOML = """
[flow]
name = "tiny"
[train]
data = "digits"
epochs = 1
finetune_epochs = 0
rank_adaptive = false
[train.model]
hidden = [16]
ranks = 2
[quant]
w_bits = 4
qat_epochs = 0
calib_samples = 128
[bitstream]
board = "icebreaker"
"""
