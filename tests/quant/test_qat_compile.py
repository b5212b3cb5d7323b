"""``torch.compile`` and ``torch.export`` of a quantized (QAT) network: one graph with no
break, and in eval mode the integer executor's outputs bit for bit, with inductor too.

Before: the rounding was a custom autograd node with a ``jvp`` (dynamo breaks the graph
there) and the exponents were read with ``int()``; the frames between the breaks took the
bit widths as symbolic integers, and inductor wrote ``1 << (bits - 1)`` in 32-bit
arithmetic: every output of a layer with a 32-bit bias saturated."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.ir.executor import execute
from ttforge.model.layers import TTLinear
from ttforge.quant import calibrate, compile_network, quantize_model

needs_cxx = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                               reason="inductor's CPU code needs a C++ compiler")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _qnet(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4))
    q = quantize_model(net)
    calibrate(q, torch.randn(256, 784))
    return q


def _golden(q, x: torch.Tensor) -> np.ndarray:
    inet = compile_network(q)
    return execute(inet, inet.quantize_input(x.numpy()))


def _as_int(q, y: torch.Tensor) -> np.ndarray:
    return (y.double() * 2.0 ** -q.output_exp()).numpy().astype(np.int64)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_quantized_network_compiles_to_one_graph(training):
    q = _qnet().train(training)
    explained = torch._dynamo.explain(q)(torch.randn(32, 784))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=needs_cxx)])
def test_compiled_eval_is_the_integer_executor_bit_for_bit(backend):
    """Also after a new calibration: the exponents are read when the graph runs (a
    recompile would fail)."""
    q = _qnet().eval()
    compiled = torch.compile(q, backend=backend, dynamic=True)
    for i, seed in enumerate((1, 2)):
        torch.manual_seed(seed)
        x = torch.randn(300, 784)
        if i:
            before = q.qlayers[0].step_exps.clone()
            calibrate(q, 4 * torch.randn(256, 784)).eval()  # other exponents
            assert not torch.equal(before, q.qlayers[0].step_exps)
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"), torch.no_grad():
            y = compiled(x)
        golden = _golden(q, x)
        assert np.array_equal(_as_int(q, y), golden)
        assert np.array_equal(q.forward_int(x), golden)


@needs_cxx
def test_a_corrupted_core_is_caught_by_the_comparison():
    """Sibling: one bit of one core flipped, the compiled network's outputs differ from
    the integer executor of the network before."""
    q = _qnet().eval()
    x = torch.randn(300, 784)
    golden = _golden(q, x)
    core = q.qlayers[0].layer.cores[1].data
    core.view(-1).view(torch.int32)[7] ^= 1 << 30
    with torch.no_grad():
        y = torch.compile(q)(x)
    assert not np.array_equal(_as_int(q, y), golden)


def test_compiled_training_step_gives_the_eager_loss_and_gradients():
    """Train mode (float32 fake quantization, straight-through rounding): the compiled
    step's loss and gradients are the eager step's (AOT autograd: the same kernels)."""
    q = _qnet().train()
    x, labels = torch.randn(64, 784), torch.randint(0, 10, (64,))
    results = []
    for module in (torch.compile(q, backend="aot_eager", fullgraph=True), q):
        q.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(module(x), labels)
        loss.backward()
        results.append([loss.detach(), *(p.grad for p in q.parameters() if p.requires_grad)])
    assert len(results[0]) > 2 and all(g is not None for g in results[0])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=needs_cxx)])
def test_fake_quant_with_a_tensor_exponent_is_the_integer_ones(backend):
    """An exponent tensor gives the powers of two of an integer exponent exactly, from
    -1000 to 1000 (float64), compiled once for all of them."""
    from ttforge.quant import fake_quant

    compiled = torch.compile(lambda v, e: fake_quant(v, 16, e), backend=backend, dynamic=True)
    torch.manual_seed(3)
    v = torch.randn(1000, dtype=torch.float64) * 1e3
    for e in range(-1000, 1001, 5):
        x = v * 2.0 ** e
        with torch.compiler.set_stance("fail_on_recompile" if e > -1000 else "default"):
            got = compiled(x, torch.tensor(e))
        assert torch.equal(got, fake_quant(x, 16, e)), e
        assert torch.equal(fake_quant(x, 16, torch.tensor(e)), fake_quant(x, 16, e)), e


def test_torch_export_records_the_eval_network_with_a_dynamic_batch():
    """``torch.export`` (it failed at the exponents' ``int()``, a data-dependent value):
    the exported graph, at batch sizes other than the example's, gives the integer
    executor's outputs bit for bit."""
    q = _qnet().eval()
    exported = torch.export.export(q, (torch.randn(64, 784),),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    for batch in (1, 33, 200):
        x = torch.randn(batch, 784)
        with torch.no_grad():
            y = exported.module()(x)
        assert np.array_equal(_as_int(q, y), _golden(q, x))


@pytest.mark.parametrize("backend, method", [("aot_eager", "max"), ("aot_eager", "mse"),
                                             pytest.param("inductor", "max", marks=needs_cxx),
                                             pytest.param("inductor-options", "mse", marks=needs_cxx)])
def test_calibration_in_a_compiled_network_picks_the_eager_exponents(backend, method):
    """Calibrating through the compiled network (its graph breaks where an exponent is
    chosen, and the frames between the breaks take the bit widths as symbolic
    integers) picks the exponents an eager calibration picks; and the bit-width range
    with a symbolic width is right up to 32 bits (2^31 wrapped in inductor's shift)."""
    import copy

    from ttforge.quant import fake_quant

    q = _qnet()
    again = copy.deepcopy(q)
    x = torch.randn(256, 784)
    q(x, calibrate=method)
    from ttforge.quant import COMPILE_OPTIONS

    options = dict(COMPILE_OPTIONS) if backend == "inductor-options" else None
    backend = backend.removesuffix("-options")
    torch.compile(again, backend=backend, options=options)(x, calibrate=method)
    for a, b in zip(q.qlayers, again.qlayers):
        for name in ("in_exp", "core_exps", "step_exps"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    ranged = torch.compile(lambda v, bits: fake_quant(v, bits, 0), backend=backend, dynamic=True,
                           options=options)
    v = torch.tensor([1e12, -1e12, 3.0], dtype=torch.float64)
    for bits in (8, 16, 31, 32):
        assert torch.equal(ranged(v, bits), fake_quant(v, bits, 0)), bits


@pytest.mark.parametrize("kwargs, expected", [
    ({}, {"realize_opcount_threshold": 4}),
    ({"options": {"realize_opcount_threshold": 9, "max_autotune": False}},
     {"realize_opcount_threshold": 9, "max_autotune": False}),
    ({"mode": "max-autotune"}, None),
    ({"backend": "aot_eager"}, None),
], ids=["default", "own-options-win", "mode", "other-backend"])
def test_network_compile_passes_the_inductor_options(monkeypatch, kwargs, expected):
    """``QuantNetwork.compile`` adds :data:`COMPILE_OPTIONS` under inductor only, under
    the caller's own options, and not beside ``mode`` (``torch.compile`` refuses both)."""
    from ttforge.quant import COMPILE_OPTIONS

    seen = {}

    def spy(fn, **kw):
        seen.update(kw)
        return fn

    monkeypatch.setattr(torch, "compile", spy)
    _qnet().compile(**kwargs)
    assert seen.get("options") == expected
    assert dict(COMPILE_OPTIONS) == {"realize_opcount_threshold": 4}
    assert {k: v for k, v in seen.items() if k != "options"} == {k: v for k, v in kwargs.items() if k != "options"}


@needs_cxx
def test_network_compiled_with_its_options_is_exact_and_trains():
    """With :data:`COMPILE_OPTIONS` (other generated code): eval is the integer
    executor's bit for bit, at a batch of 1 and of 300; a training step's loss and
    gradients are eager's within float32 rounding (inductor's own kernels)."""
    q = _qnet().eval()
    q.compile()
    for batch in (1, 300):
        x = torch.randn(batch, 784)
        with torch.no_grad():
            y = q(x)
        assert np.array_equal(_as_int(q, y), _golden(q, x))
    q.train()
    x, labels = torch.randn(64, 784), torch.randint(0, 10, (64,))
    grads = []
    for compiled in (True, False):
        q.zero_grad(set_to_none=True)
        call = q if compiled else q._call_impl  # the module's own, uncompiled call
        nn.functional.cross_entropy(call(x), labels).backward()
        grads.append([p.grad for p in q.parameters() if p.requires_grad])
    assert all(g is not None for g in grads[0]) and len(grads[0]) > 2
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _inductor_code(fn, *args):
    """The C++ of the graphs inductor compiles while ``fn(*args)`` runs (forward, then
    backward if ``fn`` runs one)."""
    from torch._inductor.utils import run_and_get_code

    return run_and_get_code(fn, *args)[1]


def _fake_quantizations(q) -> int:
    """Fake quantizations in one forward: the input, every core, every step, the biases."""
    return sum(layer.first + 2 * len(layer.core_exps) + (layer.layer.bias is not None)
               for layer in q.qlayers)


@needs_cxx
@pytest.mark.parametrize("options", [True, False], ids=["options", "inductor-defaults"])
def test_with_the_options_each_fake_quantization_is_computed_once(options):
    """What :data:`COMPILE_OPTIONS` changes in the generated forward: each rounding
    (``floor``) is computed once; with inductor's defaults the quantizations of the step
    outputs are inlined into both of their consumers (the permutation into the next
    step's layout and the backward's mask) and computed again (the sibling)."""
    from ttforge.quant import COMPILE_OPTIONS

    q = _qnet().train()
    compiled = torch.compile(q, dynamic=True, options=dict(COMPILE_OPTIONS) if options else None)
    forward = _inductor_code(compiled, torch.randn(16, 784))[0]
    floors = forward.count(".floor()") + forward.count("std::floor(")
    assert _fake_quantizations(q) == 17
    assert (floors == 17) is options, floors


@needs_cxx
def test_no_index_of_a_compiled_dynamic_batch_divides_by_the_batch():
    """A contraction step keeps the batch an axis of its own (``ContractionStep.apply``):
    merged with the step's outer modes, inductor indexed every permutation after it
    through a modulo (an integer division an element) by the symbolic batch's extent
    (``ks0``), 13 of them in this network's forward and backward with the options."""
    import re

    from ttforge.quant import COMPILE_OPTIONS

    q = _qnet().train()
    compiled = torch.compile(q, dynamic=True, options=dict(COMPILE_OPTIONS))

    def step(x):
        compiled(x).sum().backward()

    code = "\n".join(_inductor_code(step, torch.randn(16, 784)))
    assert "ks0" in code  # the batch is symbolic
    assert not re.findall(r"%\s*static_cast<int64_t>\([^;]*?ks\d", code)
