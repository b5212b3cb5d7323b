import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError, DataError, ShapeError
from ttforge.model.layers import TTLinear
from ttforge.model.onnx_export import DEFAULT_OPSET, build_onnx, check_onnx, export_onnx
from ttforge.ir.schedule import schedule_orders
from ttforge.ir.tt import factorize


def _run(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


def _torch(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).numpy()


def _random_net(seed: int) -> nn.Sequential:
    """A random MLP of TT and dense layers, sizes that need padding, random orders."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    sizes = [rnd(5, 40) for _ in range(rnd(2, 4))]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if i % 2 == 0 or rnd(0, 1):
            d = rnd(2, 4)
            layer = TTLinear(n_in, n_out, ranks=rnd(1, 5), in_modes=factorize(n_in, d),
                             out_modes=factorize(n_out, d), bias=bool(rnd(0, 1)))
            orders = schedule_orders(d)
            layer._set_schedule(orders[rnd(0, len(orders) - 1)])
        else:
            layer = nn.Linear(n_in, n_out, bias=bool(rnd(0, 1)))
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _matmuls(proto) -> int:
    return sum(n.op_type == "MatMul" for n in proto.graph.node)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [1, 37])
def test_random_networks_match_pytorch(tmp_path, seed, batch):
    torch.manual_seed(seed)
    model = _random_net(seed)
    path = export_onnx(model, tmp_path / "m.onnx")
    x = torch.randn(batch, model[1].in_features)
    np.testing.assert_allclose(_run(path, x), _torch(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order_index", range(8))
def test_every_schedule_order_padded_layer(tmp_path, order_index):
    # 26 -> padded to 27 = 3x3x3; 10 -> padded to 12 = 3x2x2: both Pad and Slice
    orders = schedule_orders(3)
    order = orders[order_index % len(orders)]
    torch.manual_seed(order_index)
    layer = TTLinear(26, 10, ranks=[3, 4], in_modes=[3, 3, 3], out_modes=[3, 2, 2], schedule=order)
    model = nn.Sequential(layer)
    proto = build_onnx(model)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Pad") == 1 and ops.count("Slice") == 1
    path = export_onnx(model, tmp_path / "m.onnx")
    for batch in (1, 37):
        x = torch.randn(batch, 26)
        np.testing.assert_allclose(_run(path, x), _torch(model, x), rtol=1e-5, atol=1e-5)


def test_mnist_sized_layer_keeps_tt_structure(tmp_path):
    torch.manual_seed(0)
    tt = TTLinear(784, 512, ranks=16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4])
    head = nn.Linear(512, 10)
    model = nn.Sequential(nn.Flatten(), tt, nn.ReLU(), head)
    proto = build_onnx(model)
    # one MatMul per core, the classifier is a Gemm, and no initializer is a dense M x N
    assert _matmuls(proto) == tt.tt_shape.d
    assert [n.op_type for n in proto.graph.node].count("Gemm") == 1
    sizes = [math.prod(t.dims) for t in proto.graph.initializer]
    assert 784 * 512 not in sizes
    assert max(sizes) < 784 * 512 // 10
    floats = sum(math.prod(t.dims) for t in proto.graph.initializer
                 if t.data_type == onnx.TensorProto.FLOAT)
    assert floats == tt.n_params + 512 + 512 * 10 + 10  # cores, TT bias, classifier
    # opset and metadata
    assert proto.opset_import[0].version == DEFAULT_OPSET
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["ttforge.opset"] == str(DEFAULT_OPSET)
    assert '"order"' in props["ttforge.layers"]
    path = export_onnx(model, tmp_path / "mnist.onnx")
    x = torch.randn(37, 784)
    np.testing.assert_allclose(_run(path, x), _torch(model, x), rtol=1e-5, atol=1e-5)


def test_several_tt_layers_matmul_count_and_dynamic_batch(tmp_path):
    torch.manual_seed(3)
    a = TTLinear(64, 48, ranks=4, in_modes=[4, 4, 4], out_modes=[4, 4, 3])
    b = TTLinear(48, 20, ranks=[3], in_modes=[8, 6], out_modes=[5, 4], schedule=[0, 1])
    model = nn.Sequential(a, nn.ReLU(), b)
    proto = build_onnx(model)
    assert _matmuls(proto) == 3 + 2
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    path = export_onnx(model, tmp_path / "m.onnx")
    for batch in (1, 2, 37, 300):
        x = torch.randn(batch, 64)
        np.testing.assert_allclose(_run(path, x), _torch(model, x), rtol=1e-5, atol=1e-5)


def test_image_input_shape_and_check_onnx(tmp_path):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), TTLinear(64, 32, ranks=4), nn.ReLU(), nn.Linear(32, 10))
    path = export_onnx(model, tmp_path / "img.onnx", input_shape=(8, 8))
    x = torch.randn(5, 8, 8)
    np.testing.assert_allclose(_run(path, x), _torch(model, x), rtol=1e-5, atol=1e-5)
    assert check_onnx(model, path, input_shape=(8, 8)) < 1e-5


def test_float64_model_is_exported_as_float32_and_not_changed(tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(TTLinear(30, 12, ranks=3, in_modes=[5, 6], out_modes=[3, 4])).double()
    path = export_onnx(model, tmp_path / "d.onnx", opset=18)
    assert next(model.parameters()).dtype == torch.float64
    assert onnx.load(str(path)).opset_import[0].version == 18
    assert check_onnx(model, path) < 1e-5


def test_atomic_write_leaves_no_temporary_and_replaces(tmp_path):
    model = nn.Sequential(TTLinear(16, 8, ranks=2, in_modes=[4, 4], out_modes=[2, 4]))
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    export_onnx(model, target)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    onnx.checker.check_model(onnx.load(str(target)))


def test_failed_export_keeps_previous_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(ConfigError, match="Conv2d"):
        export_onnx(nn.Sequential(nn.Conv2d(1, 1, 3)), target)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize(
    "model, kwargs, error, message",
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), {}, ConfigError, r"layer 1 \(Sigmoid\).*supported"),
        (nn.Linear(4, 4), {}, ConfigError, "nn.Sequential"),
        (nn.Sequential(), {}, ConfigError, "empty"),
        (nn.Sequential(nn.ReLU()), {}, ConfigError, "no TTLinear or nn.Linear"),
        (nn.Sequential(nn.Flatten(0)), {}, ConfigError, "start_dim"),
        (nn.Sequential(nn.Linear(4, 5), nn.Linear(6, 2)), {}, ShapeError, "layer 1 .*takes 6 features"),
        (nn.Sequential(nn.Linear(4, 4)), {"opset": 9}, ConfigError, "opset=9"),
        (nn.Sequential(nn.Linear(4, 4)), {"input_shape": (2, 2)}, ShapeError, "nn.Flatten"),
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), {"input_shape": (3, 2)}, ShapeError, "product is 4"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, model, kwargs, error, message):
    with pytest.raises(error, match=message) as e:
        export_onnx(model, tmp_path / "x.onnx", **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x.onnx").exists()


# -- command line ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from ttforge.model.network import ModelConfig
    from ttforge.model.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model=ModelConfig(hidden=(32,), ranks=4), epochs=1, batch_size=256)
    train(cfg, out, progress=False)
    return out


def test_cli_exports_a_trained_checkpoint(trained_run, tmp_path, capsys):
    from ttforge.cli import main
    from ttforge.model.train import load_trained

    out = tmp_path / "model.onnx"
    assert main(["export-onnx", str(trained_run / "last.pt"), "-o", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert "opset 18" in printed and "onnxruntime check" in printed
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version == 18
    model = load_trained(trained_run).model
    tt = [m for m in model if isinstance(m, TTLinear)]
    assert tt and _matmuls(proto) == sum(m.tt_shape.d for m in tt)
    x = torch.randn(37, model[1].in_features)
    np.testing.assert_allclose(_run(out, x), _torch(model, x), rtol=1e-5, atol=1e-5)
    # a run directory works too, and an image-shaped input
    assert main(["export-onnx", str(trained_run), "-o", str(out), "--input-shape", "8,8"]) == 0
    assert _run(out, torch.randn(2, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("args, message", [
    (["--opset", "7"], "opset=7 is not supported; use an opset from 13"),
    (["--input-shape", "3,3"], "--input-shape 3,3 has 9 values per sample"),
    (["--input-shape", ",".join(["64"] + ["1"] * 63)], "--input-shape has 64 axes; give at most 16"),
    # the flag, not the Python field input_shape=[0, 64], is named
    (["--input-shape", "0,64"], "--input-shape 0,64 must be a non-empty list of positive sizes"),
    # argparse took -8,-8 for an option: "--input-shape: expected one argument"
    (["--input-shape", "-8,-8"], "--input-shape -8,-8 must be a non-empty list of positive sizes"),
    (["--input-shape=-8,-8"], "--input-shape -8,-8 must be a non-empty list of positive sizes"),
])
def test_cli_bad_options_exit_2_with_one_line(trained_run, tmp_path, capsys, args, message):
    from ttforge.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(trained_run / "last.pt"), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_a_failing_check_leaves_no_file(trained_run, tmp_path, monkeypatch):
    """The onnxruntime check runs on the graph before it is written: when it fails, the
    command fails and -o is not written (nor a file already there replaced)."""
    import ttforge.model.onnx_export as onnx_export
    from ttforge.cli import main

    def broken(*a, **k):
        raise RuntimeError("onnxruntime failed")

    monkeypatch.setattr(onnx_export, "check_onnx", broken)   # export-onnx imports it when it runs
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(trained_run / "last.pt"), "-o", str(out)]) != 0
    assert not out.exists()
    out.write_bytes(b"previous")
    assert main(["export-onnx", str(trained_run / "last.pt"), "-o", str(out)]) != 0
    assert out.read_bytes() == b"previous"


def test_cli_corrupt_or_missing_checkpoint_exit_2(trained_run, tmp_path, capsys):
    from ttforge.cli import main

    bad = tmp_path / "bad.pt"
    raw = bytearray((trained_run / "last.pt").read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(bad), "-o", str(out)]) == 2
    assert "checksum" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "nope.pt"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(bad, tmp_path):
    """Before: written, and its check against PyTorch reported max |diff| = nan as a
    success."""
    model = nn.Sequential(TTLinear(64, 32, ranks=4, in_modes=[8, 8], out_modes=[4, 8]), nn.ReLU(),
                          nn.Linear(32, 10))
    with torch.no_grad():
        model[2].weight[1, 2] = bad
    with pytest.raises(DataError, match=r"layer 2 \(Linear\) holds NaN or infinite weights"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_an_export_that_disagrees_with_pytorch_is_refused(trained_run, tmp_path, capsys):
    """Weights near float32's limit made outputs overflow (inf in one, finite in the
    other): the check printed "nan" and the file was written, exit 0."""
    from ttforge.cli import main
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained_run / "last.pt")
    last = [k for k in payload["state_dict"] if k.endswith("weight") or "cores" in k][-1]
    payload["state_dict"][last].mul_(3e38)   # sums past float32 overflow
    save_checkpoint(tmp_path / "huge.pt", payload)
    out = tmp_path / "m.onnx"
    assert main(["export-onnx", str(tmp_path / "huge.pt"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from PyTorch" in err[0] and not out.exists()


@pytest.mark.parametrize("name", ["a\nb.onnx", "qo\x1b[31mRED.onnx", os.fsdecode(b"x\xff.onnx")])
def test_cli_names_the_written_file_as_text(trained_run, tmp_path, capsys, name):
    """export-onnx printed -o raw: a newline split the "wrote" line, an ESC sequence and a
    non-UTF-8 byte reached the terminal."""
    from ttforge.cli import main

    out = tmp_path / name
    assert main(["export-onnx", str(trained_run / "last.pt"), "-o", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"wrote {repr(str(out))} (opset "), first
    assert out.is_file()
