"""The board tops as their platforms elaborate them: every pin is requested with
``dir="-"`` and goes through an ``amaranth.lib.io`` buffer, so preparing a board top for
its platform (every ``elaborate``, the clock domains, the pin buffers) warns about
nothing (Amaranth 0.5 deprecates ``platform.request`` without ``dir="-"``)."""

from __future__ import annotations

import gc
import warnings

import pytest

from ttforge.firmware.board import BOARDS, BoardTop
from ttforge.firmware.uart import UARTRx, UARTTx
from ttforge.hw.config import AccelConfig

# the config `ttforge build` picks for tests/quant/test_golden.small_net (docs/boards.md)
SMALL = dict(act_bits=8, core_bits=8, inter_bits=16, acc_bits=27, bias_bits=19, core_depth=376,
             bias_depth=40, buf_depth=80, desc_depth=6, stream_elems=1)


def _config(key: str) -> AccelConfig:
    b = BOARDS[key]
    return AccelConfig.from_dict({**SMALL, "lanes": b.default_lanes, **dict(b.config_overrides)},
                                 source=f"the {key} test config")


@pytest.mark.parametrize("key", sorted(BOARDS))
def test_board_top_prepares_without_warnings(key):
    b = BOARDS[key]
    gc.collect()    # unused elaboratables of earlier tests warn when collected, not here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.platform().prepare(BoardTop(key, _config(key)))
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("port", [UARTRx, UARTTx])
def test_bad_divisor_is_an_error_not_an_unused_elaboratable(port):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="divisor=3"):
            port(3)
        gc.collect()
    assert [str(w.message) for w in caught] == []
