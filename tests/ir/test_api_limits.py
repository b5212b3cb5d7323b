"""The public ``ttforge.ir`` API on bad or huge arguments: a one-line ttforge error naming
the argument, in bounded time, never a builtin exception or a wrong integer."""

import time

import numpy as np
import pytest

from ttforge.errors import LimitError, ShapeError
from ttforge.ir import schedule_orders
from ttforge.limits import MAX_SEARCH_CORES


@pytest.mark.parametrize("d", [MAX_SEARCH_CORES + 1, 22, 40, 10**9])
def test_schedule_orders_is_bounded_like_the_search(d):
    t0 = time.monotonic()
    with pytest.raises(LimitError, match=f"at most {MAX_SEARCH_CORES} cores"):
        schedule_orders(d)
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize("d", [0, -1, 1.5, True, "3"])
def test_schedule_orders_refuses_a_non_count(d):
    with pytest.raises(ShapeError, match=r"d=.* cores; give an integer >= 1"):
        schedule_orders(d)


def test_schedule_orders_at_the_limit():
    assert len(schedule_orders(np.int64(MAX_SEARCH_CORES))) == 2 ** (MAX_SEARCH_CORES - 1)


# -- ttforge schedule: modes and ranks bounded before any work ---------------------------
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ttforge.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:   # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag, value", [
    ("--in-modes", ",".join(["9" * 300] * 12)),
    ("--in-modes", "9" * 4000 + ",2"),
    ("--ranks", "9" * 5000),
    ("--out-modes", "4611686018427387904,1"),
])
def test_schedule_refuses_huge_modes_and_ranks_naming_the_flag(capsys, flag, value):
    args = {"--in-modes": "4,4", "--out-modes": "4,4", "--ranks": "2", flag: value}
    t0 = time.monotonic()
    code, _, err = _cli(capsys, "schedule", *[x for kv in args.items() for x in kv])
    assert code == 2 and time.monotonic() - t0 < 5
    assert len(err.strip().splitlines()) == 1 and f"argument {flag}" in err and "2^62 - 1" in err


def test_schedule_refuses_a_product_above_the_limit_naming_the_flag(capsys):
    code, _, err = _cli(capsys, "schedule", "--in-modes", "2147483648,2147483648", "--out-modes", "4,4",
                        "--ranks", "2")
    assert code == 2 and "--in-modes multiply to more than 2^62 - 1" in err


def test_tt_shape_refuses_a_size_above_the_limit():
    from ttforge.ir import TTShape

    with pytest.raises(LimitError, match=r"in_modes=.* multiply to more than 2\^62 - 1"):
        TTShape((2, 2), (10**300, 10**300), 2)
    assert TTShape((1,), ((1 << 62) - 1,), 1).in_size == (1 << 62) - 1


# -- ttforge inspect: a file's meta and its path are text, never markup or terminal codes --
_META = {"a": "[/]", "b": "[bold]x[/bold]", "c": "\x1b[31mred", "d": "left\u202eright", "e": "[link=http://x]y[/link]",
         "f": ":smile:"}


def _assert_shown_as_written(out: str, path) -> None:
    assert "\x1b" not in out and "\u202e" not in out
    for text in ("a=[/]", "b=[bold]x[/bold]", "c=\\x1b[31mred", "d=left\\u202eright", "e=[link=http://x]y[/link]",
                 "f=:smile:", str(path)):
        assert text in out, text


def test_inspect_prints_artifact_meta_and_path_as_text(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")   # one line each, not wrapped
    from ttforge.ir import IntNetwork, layer_from_dense, save_artifact

    net = IntNetwork((layer_from_dense(np.array([[3, -2], [1, 5]]), w_bits=8, in_bits=8, in_exp=0, inter_bits=16,
                                       out_bits=16, step_exps=(2,), core_exps=(0,), acc_bits=32),))
    (tmp_path / "q[").mkdir()
    path = tmp_path / "q[" / "[/]m.ttfa"
    save_artifact(net, path, meta=_META)
    code, out, err = _cli(capsys, "inspect", str(path))
    assert code == 0, err
    _assert_shown_as_written(out, path)


def test_inspect_prints_state_meta_and_path_as_text(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    from ttforge.ir import ContractionSchedule, TTShape
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_state import save_state

    st = init_state([(16, 3, ContractionSchedule(TTShape((3,), (16,), (1, 1)), (0,)))], TrainConfig(), seed=1)
    path = tmp_path / "[/]s.ttts"
    save_state(st.replace(meta=_META), path)
    code, out, err = _cli(capsys, "inspect", str(path))
    assert code == 0, err
    _assert_shown_as_written(out, path)


def test_an_empty_batch_gives_an_empty_result():
    from ttforge.ir import IntNetwork, execute, execute_traced, layer_from_dense

    net = IntNetwork((layer_from_dense(np.array([[3, -2], [1, 5], [0, 1]]), w_bits=8, in_bits=8, in_exp=0,
                                       inter_bits=16, out_bits=16, step_exps=(2,), core_exps=(0,), acc_bits=32),))
    empty = np.zeros((0, 2), dtype=np.int64)
    assert execute(net, empty).shape == (0, 3)
    out, traces = execute_traced(net, empty)
    assert out.shape == (0, 3) and out.dtype == np.int64 and traces == []


@pytest.mark.parametrize("name", ["loads_artifact", "loads_state"])
def test_loads_of_a_string_is_one_line(name):
    from ttforge.errors import ArtifactError
    from ttforge.ir import artifact, train_state

    fn = getattr(artifact if name == "loads_artifact" else train_state, name)
    with pytest.raises(ArtifactError, match=f"{name} takes the file's bytes, got str"):
        fn("hello")
