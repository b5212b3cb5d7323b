"""Paths given to the library: ``str``, ``os.PathLike`` and ``bytes`` (the OS's names)
work alike; anything else is one line naming the parameter and the in-memory way (a
``BytesIO`` as the output of ``save_artifact``, or a bytes path to ``load_artifact``,
raised pathlib's TypeError; probe Y)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.ir import execute, load_artifact, save_artifact
from ttforge.ir.artifact import dumps_artifact
from ttforge.ir.random import random_inputs, random_network


def test_a_bytes_path_is_a_path(tmp_path):
    net = random_network(np.random.default_rng(3))
    p = tmp_path / "m.ttfa"
    save_artifact(net, os.fsencode(p))
    assert p.read_bytes() == dumps_artifact(net)
    back = load_artifact(os.fsencode(p))
    x = random_inputs(net, 3, np.random.default_rng(4))
    assert np.array_equal(execute(back, x), execute(net, x))


@pytest.mark.parametrize("call", [lambda net: save_artifact(net, io.BytesIO()),
                                  lambda net: load_artifact(io.BytesIO(dumps_artifact(net))),
                                  lambda net: load_artifact(3)])
def test_anything_else_is_one_line_naming_the_in_memory_way(call):
    net = random_network(np.random.default_rng(3))
    with pytest.raises(ConfigError, match=r"^path must be a file path \(str or os.PathLike\), got \w+; "
                                          r"for bytes in memory use the dumps_\*/loads_\* functions"):
        call(net)
