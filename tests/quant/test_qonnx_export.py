"""QONNX export: the exported graph equals the integer executor exactly, or is refused.

Two evaluators run every exported graph: ``spec_execute`` below, written from the QONNX
operator documents (``intquant_v1.md``, ``trunc_v2.md`` of fastmachinelearning/qonnx)
and the ONNX operator definitions in float32 numpy, and, when the ``qonnx`` package is
installed, its own executor (``qonnx.core.onnx_exec.execute_onnx``). Both must give,
after dividing by ``2^out_exp``, exactly what ``ttforge.quant.execute`` gives.
"""

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ttforge.cli import main
from ttforge.errors import ConfigError
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.ir.arith import acc_bits_needed, int_range, rshift_round, value_range
from ttforge.ir.artifact import save_artifact
from ttforge.ir.executor import IntLayer, IntNetwork, execute, execute_traced, layer_from_dense
from ttforge.quant.qonnx_export import (
    FLOAT32_EXACT,
    QONNX_DOMAIN,
    build_qonnx,
    check_qonnx,
    export_qonnx,
    float32_bounds,
    run_qonnx,
    trunc_in_bits,
)

from tests.support.nets import EXAMPLE_INPUT, example_network
from ttforge.ir.random import random_inputs as _random_inputs
from ttforge.ir.random import shifted_network



# ---------------------------------------------------------------------------------------
# an evaluator written from the QONNX and ONNX operator documents (float32 numpy)
# ---------------------------------------------------------------------------------------
ROUNDING = {  # the QONNX rounding table (intquant_v1.md)
    "ROUND": np.round, "HALF_EVEN": np.round, "FLOOR": np.floor, "CEIL": np.ceil,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)),
}


def _bounds(signed, narrow, bits):
    assert signed == 1
    hi = 2.0 ** (bits - 1) - 1
    return (-hi if narrow else -hi - 1), hi


def spec_intquant(x, scale, zeropt, bits, signed=1, narrow=0, rounding_mode="ROUND"):
    y = x / scale + zeropt
    lo, hi = _bounds(signed, narrow, bits)
    y = np.clip(y, np.float32(lo), np.float32(hi))  # clamp, then round (as the document does)
    y = ROUNDING[rounding_mode](y)
    return ((y - zeropt) * scale).astype(np.float32)


def spec_trunc_v2(x, scale, zeropt, in_bits, out_scale, out_bits, signed=1, narrow=0, rounding_mode="FLOOR"):
    y = np.round(x / scale + zeropt)
    y = y / (2.0 ** np.round(np.log2(out_scale / scale))).astype(np.float32)
    lo, hi = _bounds(signed, narrow, out_bits)
    y = ROUNDING[rounding_mode](np.clip(y, np.float32(lo), np.float32(hi)))
    return ((y - zeropt / (out_scale / scale)) * out_scale).astype(np.float32)


def spec_execute(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    env = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env["input"] = np.asarray(x, dtype=np.float32)
    for node in model.graph.node:
        a = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
        a = {k: v.decode() if isinstance(v, bytes) else v for k, v in a.items()}
        ins = [env[i] for i in node.input]
        op = node.op_type
        if node.domain == QONNX_DOMAIN and op in ("IntQuant", "Quant"):
            out = spec_intquant(*ins, **a)
        elif node.domain == QONNX_DOMAIN and op == "Trunc":
            out = spec_trunc_v2(*ins, **a)
        elif op == "MatMul":
            out = np.matmul(ins[0], ins[1])
        elif op == "Add":
            out = ins[0] + ins[1]
        elif op == "Reshape":
            out = ins[0].reshape(ins[1])
        elif op == "Pad":
            p = ins[1]
            out = np.pad(ins[0], list(zip(p[: len(p) // 2], p[len(p) // 2:])))
        elif op == "Slice":
            out = ins[0][:, ins[1][0]:ins[2][0]]
        elif op == "Relu":
            out = np.maximum(ins[0], np.float32(0))
        else:
            raise AssertionError(f"spec_execute does not know {node.domain}:{op}")
        assert out.dtype == np.float32, (node.name, out.dtype)
        env[node.output[0]] = out
    return env["output"]


def ints_of(net: IntNetwork, y: np.ndarray) -> np.ndarray:
    """Graph output (real values) -> integers of the output format, exactly."""
    return np.ldexp(y.astype(np.float64), -net.layers[-1].out_exp)


def reals_of(net: IntNetwork, xi: np.ndarray) -> np.ndarray:
    return np.ldexp(xi.astype(np.float64), net.layers[0].in_exp).astype(np.float32)


def assert_exact(net, model, xi, qonnx_too=True):
    want = execute(net, xi)
    assert np.array_equal(ints_of(net, spec_execute(model, reals_of(net, xi))), want)
    if qonnx_too:
        assert np.array_equal(ints_of(net, run_qonnx(model, reals_of(net, xi))), want)


# ---------------------------------------------------------------------------------------
# random integer networks (ttforge.ir.random.shifted_network): full-range cores, random
# exponents, shifts of both signs
# ---------------------------------------------------------------------------------------
def random_inputs(net, n, seed):
    return _random_inputs(net, n, np.random.default_rng(seed), extremes=True)


# ---------------------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("requant", ["intquant", "trunc"])
@pytest.mark.parametrize("quant_op", ["IntQuant", "Quant"])
def test_documented_example_is_exact(requant, quant_op):
    net = example_network()
    xi = np.concatenate([EXAMPLE_INPUT, random_inputs(net, 30, 1)])
    model = build_qonnx(net, batch=len(xi), requant=requant, quant_op=quant_op)
    assert_exact(net, model, xi)


@pytest.mark.parametrize("seed", range(24))
def test_random_networks_are_exact_or_refused_for_float32(seed):
    net = shifted_network(seed)
    bounds = float32_bounds(net)
    if not all(b.exact for b in bounds):
        with pytest.raises(ConfigError, match=r"can reach sums of [\d,]+ \(> 2\^24 = 16,777,216\)"):
            build_qonnx(net)
        return
    xi = random_inputs(net, 48, seed)
    requant = "trunc" if seed % 3 == 2 else "intquant"
    assert_exact(net, build_qonnx(net, batch=len(xi), requant=requant), xi)


def test_most_random_networks_are_exportable():
    exported = sum(all(b.exact for b in float32_bounds(shifted_network(s))) for s in range(24))
    assert exported >= 18


def test_a_calibrated_network_is_exact_with_qonnx():
    from tests.support.nets import small_net
    from ttforge.quant.qat import compile_network

    q, x = small_net(inter_bits=8, w_bits=6)
    net = compile_network(q)
    model = build_qonnx(net, batch=64)
    assert check_qonnx(net, model, n=64) == 64
    # real (unquantized) inputs: the graph quantizes them exactly like quantize_input
    got = run_qonnx(model, x.numpy())
    assert np.array_equal(ints_of(net, got), execute(net, net.quantize_input(x.numpy())))


def test_input_quantization_is_exact_for_every_float32():
    net = example_network()
    e = net.layers[0].in_exp
    ties = (np.arange(-140, 140, dtype=np.float64) + 0.5) * 2.0 ** e  # exact ties, both signs
    near = np.concatenate([np.nextafter(ties.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(ties.astype(np.float32), np.float32(-np.inf))])
    special = np.array([0.0, -0.0, 2.0 ** -149, -(2.0 ** -149), 0.5 - 2.0 ** -25, -0.5 + 2.0 ** -25,
                        3e38, -3e38, np.inf, -np.inf, 2.0 ** 30 + 0.5, 1e-30, -1e-30], dtype=np.float64)
    v = np.concatenate([ties.astype(np.float32), near, (special * 2.0 ** e).astype(np.float32)])
    v = v[: len(v) // 5 * 5].reshape(-1, 5).astype(np.float32)
    want = execute(net, net.quantize_input(v.astype(np.float64)))
    model = build_qonnx(net, batch=len(v))
    with np.errstate(invalid="ignore", over="ignore"):
        assert np.array_equal(ints_of(net, spec_execute(model, v)), want)
        assert np.array_equal(ints_of(net, run_qonnx(model, v)), want)


def test_bounds_hold_the_traced_accumulators_and_are_attained():
    for seed in range(12):
        net = shifted_network(seed)
        xi = random_inputs(net, 64, seed)
        _, traces = execute_traced(net, xi)
        bounds = {(b.layer, b.step): b.bound for b in float32_bounds(net)}
        for tr in traces:
            layer = net.layers[tr.layer]
            s = layer.shifts()[tr.step]
            half = 1 << (s - 1) if s >= 1 else 0
            assert np.abs(tr.acc).max() <= bounds[(tr.layer, tr.step)]
            assert np.abs(tr.acc + half).max() <= bounds[(tr.layer, tr.step)]
    # step 0 of layer 0 (input range, no bias): the extreme inputs reach the bound exactly
    net = example_network()  # step 0: (A, K, Q) = (3, 2, 1); the padded zero is in block a = 2
    layer = net.layers[0]
    C = layer.core_matrix(0)
    lo, hi = int_range(layer.in_bits)
    rows = []
    for p in range(C.shape[0]):
        for sign in (1, -1):
            x = np.zeros(5, dtype=np.int64)
            x[:2] = np.where(sign * C[p] > 0, hi, lo)
            rows.append(x)
    _, traces = execute_traced(net, np.array(rows))
    half = 1 << (layer.shifts()[0] - 1)
    assert np.abs(traces[0].acc).max() + half == float32_bounds(net)[0].bound


# ---------------------------------------------------------------------------------------
# tests that must fail
# ---------------------------------------------------------------------------------------
def _flip_weight_bit(model, name, index, bit, exp):
    init = next(t for t in model.graph.initializer if t.name == name)
    w = numpy_helper.to_array(init).copy()
    q = np.ldexp(w.astype(np.float64), -exp).astype(np.int64)
    q.reshape(-1)[index] ^= 1 << bit
    init.CopyFrom(numpy_helper.from_array(np.ldexp(q.astype(np.float64), exp).astype(np.float32), name))


def test_one_flipped_core_bit_in_the_graph_breaks_equality():
    net = example_network()
    xi = np.concatenate([EXAMPLE_INPUT, random_inputs(net, 30, 2)])
    model = build_qonnx(net, batch=len(xi))
    want = execute(net, xi)
    _flip_weight_bit(model, "l0_step0_core1_weight", 3, 1, net.layers[0].core_exps[1])
    assert not np.array_equal(ints_of(net, spec_execute(model, reals_of(net, xi))), want)
    assert not np.array_equal(ints_of(net, run_qonnx(model, reals_of(net, xi))), want)
    with pytest.raises(AssertionError, match="differs from the integer executor at sample"):
        check_qonnx(net, model, n=len(xi))


def test_one_flipped_bit_of_the_expected_output_breaks_equality():
    net = example_network()
    xi = random_inputs(net, 16, 3)
    got = ints_of(net, spec_execute(build_qonnx(net, batch=16), reals_of(net, xi)))
    want = execute(net, xi).copy()
    assert np.array_equal(got, want)
    want[5, 1] ^= 1
    assert not np.array_equal(got, want)


def test_qonnx_half_up_is_not_ttforge_rounding():
    """QONNX's HALF_UP rounds ties away from zero; ttforge's floor(v + 1/2) does not. A graph
    that used it instead of Add(half) + FLOOR is caught on negative ties."""
    assert ROUNDING["HALF_UP"](np.float32(-2.5)) == -3 and int(rshift_round(np.int64(-5), 1)) == -2
    from qonnx.custom_op.general.intquant import resolve_rounding_mode

    assert resolve_rounding_mode("HALF_UP")(np.float32(-2.5)) == -3
    net = example_network()
    xi = random_inputs(net, 64, 4)
    model = build_qonnx(net, batch=64)
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.endswith("_plus_half")
            and n.name != "input_plus_half"]
    assert adds
    for add in adds:  # requantize with rounding_mode HALF_UP instead of Add(half) + FLOOR
        consumer = next(n for n in model.graph.node if add.output[0] in n.input)
        consumer.input[0] = add.input[0]
        next(a for a in consumer.attribute if a.name == "rounding_mode").s = b"HALF_UP"
        model.graph.node.remove(add)
    assert not np.array_equal(ints_of(net, spec_execute(model, reals_of(net, xi))), execute(net, xi))


# ---------------------------------------------------------------------------------------
# refusals and the graph's shape
# ---------------------------------------------------------------------------------------
def wide_network(inter_bits):
    """One 3-core layer whose middle step contracts K = 16 full-range 8-bit weights."""
    shape = TTShape((2, 2, 2), (4, 4, 4), (1, 4, 4, 1))
    cores = tuple(np.full(s, 127, dtype=np.int64) for s in shape.core_shapes)
    layer = IntLayer(in_features=64, out_features=8, schedule=ContractionSchedule(shape, (0, 1, 2)),
                     cores=cores, core_exps=(-7, -7, -7), w_bits=8, in_bits=8, in_exp=-7,
                     inter_bits=inter_bits, out_bits=8, step_exps=(-6, -6, -3), acc_bits=40)
    return IntNetwork((layer,))


def test_wide_accumulators_are_refused_with_the_width_that_fits():
    with pytest.raises(ConfigError) as e:
        build_qonnx(wide_network(16))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("layer 0 step 1 (core 1) can reach sums of ")
    width = int(msg.split("inter_bits <= ")[1].split()[0])
    assert f"(ttforge quantize --inter-bits {width})" in msg
    build_qonnx(wide_network(width))  # the suggested width exports ...
    with pytest.raises(ConfigError):
        build_qonnx(wide_network(width + 1))  # ... and is the largest that does
    assert max(b.bound for b in float32_bounds(wide_network(width))) <= FLOAT32_EXACT


def two_failures_network(act_bits=16, inter_bits=16):
    """Two layers whose steps overflow float32 at different input widths: layer 0's
    steps 1 and 2 (K = 16 and 32, exact at inter_bits <= 14 and <= 13) and layer 1's
    step 0 (K = 16 on the activations, exact at act_bits <= 14)."""
    layers = []
    for shape, in_exp, relu in ((TTShape((4, 4, 4), (4, 4, 4), (1, 4, 8, 1)), -7, True),
                                (TTShape((2, 2, 2), (16, 2, 2), (1, 2, 2, 1)), -3, False)):
        layers.append(IntLayer(
            in_features=shape.in_size, out_features=shape.out_size, schedule=ContractionSchedule(shape, (0, 1, 2)),
            cores=tuple(np.full(s, 127, dtype=np.int64) for s in shape.core_shapes), core_exps=(-7, -7, -7),
            w_bits=8, in_bits=act_bits, in_exp=in_exp, inter_bits=inter_bits, out_bits=act_bits,
            step_exps=(-6, -6, -3), acc_bits=48, relu=relu))
    return IntNetwork(tuple(layers))


def test_the_advice_names_one_width_per_flag_that_makes_every_step_exact(tmp_path, capsys):
    """The advice named the width of the first inexact step only (--inter-bits 14): with
    it, layer 0 step 2 (and layer 1 step 0) still failed, one refusal after another.
    Applied as ``ttforge quantize`` would (the flag sets its width in every layer), the
    advice now exports, and is the largest width per flag that does."""
    art = save_artifact(two_failures_network(), tmp_path / "two.ttfa")
    assert main(["export-qonnx", str(art), "-o", str(tmp_path / "two.onnx"), "--check", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    flags = err.split("(ttforge quantize ")[1].split(")")[0].split()
    advice = dict(zip(flags[::2], map(int, flags[1::2])))
    widths = {"act_bits": advice.get("--act-bits", 16), "inter_bits": advice.get("--inter-bits", 16)}
    art = save_artifact(two_failures_network(**widths), tmp_path / "fixed.ttfa")
    assert main(["export-qonnx", str(art), "-o", str(tmp_path / "fixed.onnx"), "--check", "0"]) == 0, \
        capsys.readouterr().err
    assert "and so can 2 more steps: layer 0 (step 2), layer 1 (step 0)" in err, err
    for name in widths:  # one bit more for either flag is not exact
        with pytest.raises(ConfigError):
            build_qonnx(two_failures_network(**{**widths, name: widths[name] + 1}))


def test_the_advised_width_fits_the_steps_that_pass_too():
    """A flag sets its width in every layer: layer 0's first step, exact at its own 8-bit
    input, is not at the 14 bits layer 1's first step would allow (K = 32), so the advice
    is 13 bits, at which both are exact."""
    first = TTShape((8, 8), (32, 2), (1, 2, 1))
    second = two_failures_network().layers[1]
    net = IntNetwork((IntLayer(in_features=64, out_features=64, schedule=ContractionSchedule(first, (0, 1)),
                               cores=tuple(np.full(s, 127, dtype=np.int64) for s in first.core_shapes),
                               core_exps=(-7, -7), w_bits=8, in_bits=8, in_exp=-7, inter_bits=16, out_bits=16,
                               step_exps=(-6, -3), acc_bits=48, relu=True), second))
    with pytest.raises(ConfigError) as e:
        build_qonnx(net)
    assert "(ttforge quantize --act-bits 13)" in str(e.value), e.value
    fixed = IntNetwork(tuple(replace(layer, in_bits=13, out_bits=13) for layer in net.layers))
    build_qonnx(fixed)
    with pytest.raises(ConfigError, match="layer 0 step 0"):
        build_qonnx(IntNetwork(tuple(replace(layer, in_bits=14, out_bits=14) for layer in net.layers)))


def test_a_step_no_width_fixes_is_named_beside_the_advice():
    """Layer 0's first step sums 2^17 products: no activation width is small enough, so
    the advice for its second step (--inter-bits) says that the first needs fewer w_bits
    or smaller modes/ranks."""
    shape = TTShape((1, 4), (1 << 17, 4), (1, 4, 1))
    layer = IntLayer(in_features=shape.in_size, out_features=shape.out_size,
                     schedule=ContractionSchedule(shape, (0, 1)),
                     cores=tuple(np.full(s, 127, dtype=np.int64) for s in shape.core_shapes), core_exps=(-7, -7),
                     w_bits=8, in_bits=8, in_exp=-7, inter_bits=16, out_bits=8, step_exps=(-6, -3), acc_bits=48)
    with pytest.raises(ConfigError) as e:
        build_qonnx(IntNetwork((layer,)))
    msg = str(e.value)
    assert "\n" not in msg and "(ttforge quantize --inter-bits 14)" in msg and "--act-bits" not in msg, msg
    assert msg.endswith("; at layer 0 (step 0) only fewer w_bits or smaller modes/ranks will do"), msg


def test_bad_options_are_named(tmp_path):
    net = example_network()
    for kwargs, pattern in (({"batch": 0}, "batch=0"), ({"requant": "shift"}, "requant='shift'"),
                            ({"quant_op": "QuantizeLinear"}, "quant_op="), ({"opset": 9}, "opset=9")):
        with pytest.raises(ConfigError, match=pattern):
            build_qonnx(net, **kwargs)
    with pytest.raises(ConfigError, match="IntNetwork or the path"):
        build_qonnx(42)
    with pytest.raises(ConfigError, match="is a directory"):
        export_qonnx(net, tmp_path)


def test_graph_keeps_the_tt_chain_and_declares_its_formats(tmp_path):
    net = example_network()
    path = export_qonnx(net, tmp_path / "m.onnx", batch=2)
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMul") == sum(layer.schedule.shape.d for layer in net.layers)
    assert set(ops) <= {"IntQuant", "Add", "Pad", "Reshape", "MatMul", "Slice", "Relu"}
    biggest_core = max(g.size for layer in net.layers for g in layer.cores)
    assert max(np.prod(t.dims) for t in model.graph.initializer) <= biggest_core
    quant = [n for n in model.graph.node if n.op_type == "IntQuant"]
    assert all(n.domain == QONNX_DOMAIN for n in quant)
    modes = {n.name: onnx.helper.get_attribute_value(
        next(a for a in n.attribute if a.name == "rounding_mode")).decode() for n in quant}
    assert all(m == "FLOOR" for k, m in modes.items() if "weight" not in k and "bias" not in k)
    assert {o.domain: o.version for o in model.opset_import} == {"": 17, QONNX_DOMAIN: 1}
    props = {p.key: p.value for p in model.metadata_props}
    assert props["ttforge.output"] == '{"features": 3, "bits": 8, "exp": -1}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind
    trunc = build_qonnx(net, requant="trunc")
    assert {o.domain: o.version for o in trunc.opset_import}[QONNX_DOMAIN] == 2
    assert [n.op_type for n in trunc.graph.node].count("Trunc") == 3


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------
def test_cli_names_the_written_file_as_text(tmp_path, capsys):
    """export-qonnx printed -o raw: an ESC sequence in the name reached the terminal."""
    art = save_artifact(example_network(), tmp_path / "net.ttfa")
    out = tmp_path / "qo\x1b[31mRED.onnx"
    assert main(["export-qonnx", str(art), "-o", str(out), "--check", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {repr(str(out))} (QONNX"), "the name is quoted"
    assert out.is_file()


def test_cli_writes_a_checked_model(tmp_path, capsys):
    art = save_artifact(example_network(), tmp_path / "net.ttfa")
    out = tmp_path / "net.onnx"
    assert main(["export-qonnx", str(art), "-o", str(out), "--check", "8"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "<= 2^24" in text
    assert "qonnx check: 8 inputs, outputs equal to the integer executor" in text
    model = onnx.load(str(out))
    assert check_qonnx(example_network(), model, n=4) == 4


def test_cli_refusal_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    art = save_artifact(wide_network(16), tmp_path / "wide.ttfa")
    out = tmp_path / "wide.onnx"
    out.write_bytes(b"previous")
    assert main(["export-qonnx", str(art), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ttforge export-qonnx: error: layer 0 step 1")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.onnx", "wide.ttfa"]
    assert main(["export-qonnx", str(tmp_path / "missing.ttfa"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export-qonnx", str(art), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# bounded work: the float32 bounds and the check
# ---------------------------------------------------------------------------------------
def _step_bound_per_element(layer, t, lo, hi):
    """The bound as first written: every output element, as Python integers."""
    C = layer.core_matrix(t)
    pos = np.maximum(0, np.maximum(C * lo, C * hi)).sum(axis=1)
    neg = np.maximum(0, -np.minimum(C * lo, C * hi)).sum(axis=1)
    bound = int(max(pos.max(initial=0), neg.max(initial=0)))
    step = layer.schedule.steps[t]
    shift = layer.shifts()[t]
    half = 1 << (shift - 1) if shift >= 1 else 0
    if t != len(layer.schedule.steps) - 1:
        return bound + half
    rows = np.broadcast_to(np.arange(step.P)[None, :, None], (step.A, step.P, step.Q)).reshape(-1)
    top, bot = [int(v) for v in pos[rows]], [-int(v) for v in neg[rows]]
    if layer.bias is not None:
        b = [int(v) for v in layer.bias] + [0] * (rows.size - layer.out_features)
        top, bot = [a + c for a, c in zip(top, b)], [a + c for a, c in zip(bot, b)]
        bound = max(bound, *(abs(v) for v in top + bot))
    return max(bound, *(abs(v + half) for v in top + bot))


def _bias_layer(bias, step_exps=(-6, -6), acc_bits=48):
    shape = TTShape((4, 3), (2, 5), (1, 3, 1))
    rng = np.random.default_rng(len(bias))
    cores = tuple(rng.integers(-127, 128, size=s).astype(np.int64) for s in shape.core_shapes)
    return IntLayer(in_features=10, out_features=len(bias), schedule=ContractionSchedule(shape, (1, 0)),
                    cores=cores, core_exps=(0, 0), w_bits=8, in_bits=8, in_exp=-6, inter_bits=16,
                    out_bits=8, step_exps=step_exps, acc_bits=acc_bits, relu=False,
                    bias=np.asarray(bias, dtype=np.int64))


def test_step_bounds_equal_the_per_element_bounds():
    """The bound of the last step comes from each row's extreme biases, not from every
    output element (2^24 of them, as Python integers, took 15 s and 2.4 GB): the same
    integers, also for biases near the 48-bit accumulator's ends (int64 never wraps)."""
    from ttforge.quant.qonnx_export import _in_interval, _step_bound

    nets = [shifted_network(seed) for seed in range(40)]
    big = 1 << 45   # the 48-bit accumulator holds it with the sums
    nets += [IntNetwork((_bias_layer(b),)) for b in (
        [big, -big - 1, 5, 0, -7, 3, 1, 2, 9, 11, -4, 6], [-big - 1] * 11, [big] * 12, [0] * 10)]
    for net in nets:
        for li, layer in enumerate(net.layers):
            for t in range(len(layer.schedule.steps)):
                lo, hi = _in_interval(net, li, t)
                assert _step_bound(layer, t, lo, hi) == _step_bound_per_element(layer, t, lo, hi)


def test_step_bound_of_a_wide_layer_is_quick_and_small():
    """A 4096 x 4096 layer (2^24-element intermediates, the limit) is bounded in well under
    a second and a few of its intermediates' bytes."""
    import time
    import tracemalloc

    shape = TTShape((4096, 4096), (8, 8), (1, 1, 1))
    cores = tuple(np.ones(s, dtype=np.int64) for s in shape.core_shapes)
    layer = IntLayer(in_features=64, out_features=4096 * 4096, schedule=ContractionSchedule(shape, (0, 1)),
                     cores=cores, core_exps=(0, 0), w_bits=8, in_bits=8, in_exp=-6, inter_bits=16,
                     out_bits=8, step_exps=(-6, -6), acc_bits=32, relu=False)
    net = IntNetwork((layer,))
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        bounds = float32_bounds(net)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [b.bound for b in bounds] == [1024, 262144]
    assert took < 3 and peak < 64 << 20, (took, peak)


def test_check_runs_in_chunks_with_the_whole_runs_result(monkeypatch):
    """check_qonnx holds a chunk of inputs at a time (10,000 inputs of a wide graph ran all
    at once); a corrupted graph's first differing sample is the whole run's."""
    pytest.importorskip("qonnx")
    import ttforge.limits as chunks   # chunk_rows reads its budget there
    import ttforge.quant.qonnx_export as qe

    net = example_network()
    model = build_qonnx(net, batch=2)
    seen = []
    real = qe.execute
    monkeypatch.setattr(qe, "execute", lambda n, x: seen.append(len(x)) or real(n, x))
    per_sample = qe._values_per_sample(qe._wrapper(model), net)
    monkeypatch.setattr(chunks, "MAX_CHUNK_VALUES", 5 * per_sample)
    assert check_qonnx(net, model, n=23) == 23
    assert seen == [4] * 5 + [3]
    _flip_weight_bit(model, "l0_step0_core1_weight", 3, 1, net.layers[0].core_exps[1])
    with pytest.raises(AssertionError) as chunked:
        check_qonnx(net, model, n=23)
    monkeypatch.setattr(chunks, "MAX_CHUNK_VALUES", 1 << 40)
    with pytest.raises(AssertionError) as whole:
        check_qonnx(net, model, n=23)
    assert str(chunked.value) == str(whole.value)


# -- the check's memory: tensors dropped after their last use; a batch above the bound refused
def _chain(d: int, n_layers: int) -> IntNetwork:
    """``n_layers`` TT layers of ``d`` cores of modes 4 and rank 1 (4^d features each),
    every step's exponent -4 (each core's takes the drift), so any depth stays in
    float32's exponents."""
    from ttforge.ir.random import random_layer

    rng = np.random.default_rng(0)
    layers = []
    for _ in range(n_layers):
        L = random_layer(rng, [4] * d, [4] * d, [1] * (d + 1), tuple(range(d)), w_bits=8, in_bits=8,
                         in_exp=-4, inter_bits=16, out_bits=8, bias=False, relu=False,
                         in_features=4 ** d, out_features=4 ** d, acc_bits=32, jitter=None)
        se = (-4,) + L.step_exps
        layers.append(replace(L, core_exps=tuple(c - (se[t + 1] - se[t]) for t, c in enumerate(L.core_exps)),
                              step_exps=(-4,) * d))
    return IntNetwork(tuple(layers))


def test_the_check_runs_the_graph_as_execute_onnx_does():
    """run_qonnx (node by node, each tensor dropped after its last reader) gives what
    qonnx's own execute_onnx gives, bit for bit."""
    pytest.importorskip("qonnx")
    from qonnx.core.onnx_exec import execute_onnx

    import ttforge.quant.qonnx_export as qe

    net = example_network()
    model = build_qonnx(net, batch=4)
    x = np.ldexp(_random_inputs(net, 4, np.random.default_rng(3), extremes=True).astype(np.float64),
                 net.layers[0].in_exp).astype(np.float32)
    want = execute_onnx(qe._wrapper(model), {"input": x})["output"]
    assert np.array_equal(run_qonnx(model, x), want)


def test_the_checks_peak_memory_does_not_grow_with_the_layers():
    """execute_onnx kept every tensor of the graph (4 layers of 2^20 features: 1.1 GB,
    1 layer 0.6 GB); measured with numpy's allocations, 4 layers of 2^16 features now
    peak within 1.5 times 1 layer (they took 2.8 times)."""
    pytest.importorskip("qonnx")
    import tracemalloc

    peaks = []
    for n_layers in (1, 4):
        net = _chain(8, n_layers)
        model = build_qonnx(net)
        tracemalloc.start()
        try:
            assert check_qonnx(net, model, n=2) == 2
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_a_check_one_batch_of_which_is_above_the_bound_is_refused_first(monkeypatch, tmp_path, capsys):
    """A chunk is at least one graph batch: above MAX_CHUNK_VALUES, no chunking bounds it
    (the forged 11 KB artifact of 2^24 features took 267 s and 4.5 GB with --check 16):
    one line naming --check 0, exit 2, nothing written, no input run."""
    pytest.importorskip("qonnx")
    import ttforge.limits as limits
    import ttforge.quant.qonnx_export as qe

    net = example_network()
    model = build_qonnx(net, batch=3)
    monkeypatch.setattr(limits, "MAX_CHUNK_VALUES", 2 * net.in_features)   # below 3 inputs' graph
    monkeypatch.setattr(qe, "execute", lambda *a: pytest.fail("an input ran"))
    with pytest.raises(qe.ConfigError, match=r"qonnx check of a batch of 3 .*MAX_CHUNK_VALUES.*--check 0"):
        check_qonnx(net, model, n=5)
    art = save_artifact(net, tmp_path / "net.ttfa")
    out = tmp_path / "net.onnx"
    assert main(["export-qonnx", str(art), "-o", str(out), "--batch", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--check 0" in err and not out.exists(), err


# ---------------------------------------------------------------------------------------
# Trunc's declared input width holds what reaches it (acc + bias + half an output LSB)
# ---------------------------------------------------------------------------------------
def _trunc_inputs_exceeding(model: onnx.ModelProto, xr: np.ndarray) -> list[str]:
    """Run ``model`` with qonnx's executor and name every ``Trunc`` whose input (in units
    of its scale) leaves the signed range of its declared ``in_bitwidth``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    ctx = execute_onnx(ModelWrapper(proto), {"input": xr.astype(np.float32)}, return_full_exec_context=True)
    bad = []
    for node in model.graph.node:
        if node.op_type != "Trunc":
            continue
        scale, in_bits = (float(np.ravel(ctx[name])[0]) for name in (node.input[1], node.input[3]))
        v = ctx[node.input[0]].astype(np.float64) / scale  # exact: scale is 2^e
        assert np.array_equal(v, np.round(v))
        lo, hi = value_range(int(in_bits))
        if v.min() < lo or v.max() > hi:
            bad.append(f"{node.name}: [{v.min():.0f}, {v.max():.0f}] outside {lo}..{hi}")
    return bad


def _attaining_layer(K, bits, shift, acc_bits=None, bias=None):
    """Cores all ``-(2^(bits-1) - 1)``: the input ``-2^(bits-1)`` attains the accumulator's top."""
    W = np.full((2, K), -((1 << (bits - 1)) - 1), dtype=np.int64)
    need = acc_bits_needed(K, bits, bits, 0 if bias is None else int(np.abs(bias).max()))
    return layer_from_dense(W, core_exps=(0,), w_bits=bits, in_bits=bits, in_exp=0, inter_bits=8,
                            out_bits=8, step_exps=(shift,), acc_bits=need if acc_bits is None else acc_bits,
                            bias=bias, relu=False)


@pytest.mark.parametrize("K, bits, shift, bias", [
    (4, 8, 10, None),                               # the probe's layer: 65024 + 512 = 2^16
    (4, 8, 10, np.array([511, -7])),                # + the bias, at acc_bits_needed with it
    (1, 2, 10, None),                               # the shift past acc_bits: 2 + 512
    (4, 8, 0, None),                                # no half LSB: acc_bits as before
])
def test_every_value_reaching_a_trunc_fits_its_declared_in_bitwidth(K, bits, shift, bias):
    net = IntNetwork((_attaining_layer(K, bits, shift, bias=bias),))
    lo, hi = int_range(bits)
    xi = np.array([[lo] * K, [hi] * K, [0] * K])
    model = build_qonnx(net, requant="trunc", batch=len(xi))
    assert _trunc_inputs_exceeding(model, reals_of(net, xi)) == []
    assert_exact(net, model, xi)


def test_trunc_in_bitwidth_holds_the_traced_values_of_random_networks():
    for seed in range(6):
        net = shifted_network(seed)
        xi = random_inputs(net, 32, seed)
        if not all(sb.exact for sb in float32_bounds(net)):
            continue
        assert _trunc_inputs_exceeding(build_qonnx(net, requant="trunc", batch=32), reals_of(net, xi)) == []


def test_trunc_in_bits_is_acc_bits_plus_the_half_lsb():
    assert [trunc_in_bits(17, s) for s in (-3, 0, 1, 10, 17, 18, 30)] == [17, 17, 18, 18, 18, 19, 31]
