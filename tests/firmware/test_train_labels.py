"""A state whose classes the training engine's label stream cannot carry (labels travel as
signed ``act_bits`` stream elements) is refused by ``train-board`` (simulated and on a
board), ``generate --train`` and ``build --train`` in one line, exit status 2, before any
step, data, port, toolchain or file; one bit more of ``act_bits`` is accepted."""

from __future__ import annotations

from argparse import Namespace

import pytest

from ttforge.cli import main

LINE = ("10 classes need labels up to 9, which the training engine carries in signed 4-bit stream elements "
        "(act_bits=4, labels up to 7); train the state with act_bits >= 5 (ttforge train-int --act-bits 5)")


def _state(tmp_path, act_bits):
    """The default digits network of ``ttforge train-int`` (64 -> TT 64 -> 10)."""
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers
    from ttforge.ir.train_state import save_state

    cfg = TrainConfig(act_bits=act_bits)
    a = Namespace(hidden=None, cores=None, ranks=None, in_modes=None, out_modes=None)
    st = init_state(tt_layers(a, 64, 10, True), cfg, seed=0, lr_shift=7, in_exp=-(cfg.act_bits - 1))
    path = tmp_path / f"a{act_bits}.ttts"
    save_state(st.replace(meta={"batch": 8, "seed": 0}), path)
    return path


@pytest.fixture
def nothing_reached(monkeypatch):
    """The board, the data and the toolchain are never reached (an internal error, exit 70)."""
    import ttforge.firmware.build as fb
    import ttforge.firmware.train_board as tb
    import ttforge.firmware.train_cli as tc

    def boom(*a, **k):
        raise AssertionError("reached")

    monkeypatch.setattr(tb, "open_train_device", boom)
    monkeypatch.setattr(fb, "toolchain_env", boom)
    real = tc.train_board_run
    monkeypatch.setattr(tc, "train_board_run", lambda args, load_data: real(args, boom))


@pytest.mark.parametrize("argv", [
    ["train-board", "{s}", "--sim", "--steps", "3", "-o", "{o}/out.ttts"],
    ["train-board", "{s}", "--port", "{s}", "-o", "{o}/out.ttts"],
    ["generate", "--train", "{s}", "--batch", "8", "--no-verilog", "-o", "{o}/gen"],
    ["build", "--board", "icebreaker", "--train", "{s}", "-o", "{o}/build"],
])
def test_classes_beyond_the_label_stream_are_one_line_before_any_work(tmp_path, capsys, nothing_reached, argv):
    s = _state(tmp_path, 4)
    out = tmp_path / "out"
    out.mkdir()
    rc = main([a.format(s=s, o=out) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.splitlines() == [f"ttforge {argv[0]}: error: {LINE}"]
    assert list(out.iterdir()) == []


def test_sibling_one_more_act_bit_is_accepted(tmp_path, capsys):
    s = _state(tmp_path, 5)
    rc = main(["generate", "--train", str(s), "--batch", "8", "--no-verilog", "-o", str(tmp_path / "gen")])
    assert rc == 0, capsys.readouterr().err
