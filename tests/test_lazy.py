"""``ttforge.model`` and ``ttforge.quant`` load their names on first use
(:mod:`ttforge._lazy`): what they export, ``dir()`` and submodule attributes are as when
their ``__init__`` imported everything (tests/test_torch_free.py: without torch)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["ttforge.model", "ttforge.quant"])
def test_every_exported_name_resolves_and_is_listed(package):
    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert value is getattr(importlib.import_module(pkg._EXPORTS[name]), name)
        assert name in dir(pkg)
    assert len(set(pkg.__all__)) == len(pkg.__all__)


def test_star_import_submodules_and_unknown_names():
    namespace: dict = {}
    exec("from ttforge.model import *", namespace)
    from ttforge.model.layers import TTLinear

    assert namespace["TTLinear"] is TTLinear
    import ttforge.model
    import ttforge.quant

    # a submodule is an attribute, as the eager imports made it (the function ``train``
    # is not exported: ``ttforge.model.train`` is the module)
    assert ttforge.model.train_config is importlib.import_module("ttforge.model.train_config")
    assert ttforge.model.train is importlib.import_module("ttforge.model.train")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ttforge.model.nope
    assert not hasattr(ttforge.quant, "TTLinear")
