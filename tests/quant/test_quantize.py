"""PTQ / QAT of trained networks (ttforge.quant.ptq) and ``ttforge quantize``."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ttforge.cli import main
from ttforge.errors import ConfigError
from ttforge.model.data import load_dataset
from ttforge.model.network import ModelConfig
from ttforge.model.train import TrainConfig, load_trained, train
from ttforge.ir.artifact import load_artifact
from ttforge.ir.executor import IntNetwork, execute
from ttforge.quant.ptq import (
    NotBitExactError,
    check_accumulators,
    evaluate_quantized,
    make_config,
    parse_layer_bits,
    quantize_trained,
    weights_fingerprint,
)


def train_tiny(path: Path) -> Path:
    cfg = TrainConfig(data="digits", model=ModelConfig(kind="tt", hidden=(16,), n_cores=2, ranks=2),
                      epochs=3, seed=0)
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("quant") / "run")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_ptq_report_and_bit_exact(run_dir, digits):
    trained = load_trained(run_dir)
    before = weights_fingerprint(trained.model)
    qnet, inet, report = quantize_trained(trained, digits, make_config(2), calib_samples=256)
    assert report["qat"] is None
    assert report["ptq"]["bit_exact"] and report["ptq"]["int_acc"] == report["ptq"]["fake_quant_acc"]
    assert report["ptq"]["int_acc"] > 0.5 and abs(report["ptq"]["int_acc"] - report["float_acc"]) < 0.05
    assert report["calib_samples"] == 256 and report["n_test"] == 360
    assert report["on_chip"]["on_chip_bytes"] > 0 and [L["w_bits"] for L in report["layers"]] == [8, 8]
    golden = execute(inet, inet.quantize_input(digits.x_test.numpy()))
    assert np.array_equal(qnet.forward_int(digits.x_test), golden)
    assert weights_fingerprint(trained.model) == before  # the float model is untouched


def test_qat_is_deterministic_and_leaves_the_float_model_alone(run_dir, digits):
    trained = load_trained(run_dir)
    before = weights_fingerprint(trained.model)
    cfg = make_config(2, w_bits=4, calibration="mse")
    runs = [quantize_trained(trained, digits, cfg, calib_samples=256, qat_epochs=1, seed=3) for _ in range(2)]
    (_, a, ra), (_, b, rb) = runs
    assert ra["qat"]["epochs"] == 1 and len(ra["qat"]["history"]) == 1
    assert ra["qat"]["int_acc"] == rb["qat"]["int_acc"]
    for la, lb in zip(a.layers, b.layers):
        assert la.step_exps == lb.step_exps and la.core_exps == lb.core_exps
        assert all(np.array_equal(x, y) for x, y in zip(la.cores, lb.cores))
    assert weights_fingerprint(trained.model) == before
    assert ra["quant_fingerprint"] != before  # QAT moved the (copied) weights



@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_qat_inside_a_no_grad_host(run_dir, digits, context):
    """Called under torch.no_grad() QAT raised torch's "element 0 of tensors does not
    require grad"; under torch.inference_mode() (the network loaded there too, as a flow
    run inside it does) "abs(): functions with out=... arguments don't support automatic
    differentiation". The integers of a plain call."""
    cfg = make_config(2, w_bits=4)
    _, want, _ = quantize_trained(load_trained(run_dir), digits, cfg, calib_samples=128, qat_epochs=1)
    with context():
        _, got, _ = quantize_trained(load_trained(run_dir), digits, cfg, calib_samples=128, qat_epochs=1)
    for la, lb in zip(want.layers, got.layers):
        assert all(np.array_equal(x, y) for x, y in zip(la.cores, lb.cores))

def test_mixed_precision_per_layer(run_dir, digits):
    trained = load_trained(run_dir)
    _, inet, report = quantize_trained(trained, digits, make_config(2, w_bits=8, layer_bits={0: 3}),
                                       calib_samples=128)
    assert [layer.w_bits for layer in inet.layers] == [3, 8]
    assert all(np.abs(g).max() <= 3 for g in inet.layers[0].cores)
    assert [L["w_bits"] for L in report["layers"]] == [3, 8]


def test_a_corrupted_integer_network_is_not_bit_exact(run_dir, digits):
    trained = load_trained(run_dir)
    qnet, inet, _ = quantize_trained(trained, digits, make_config(2), calib_samples=128)
    evaluate_quantized(qnet, inet, digits.x_test, digits.y_test)
    cores = [np.array(c) for c in inet.layers[0].cores]   # a layer's own cores are read-only
    cores[0].reshape(-1)[3] ^= 1 << 4
    inet = IntNetwork((dataclasses.replace(inet.layers[0], cores=tuple(cores)), *inet.layers[1:]))
    with pytest.raises(NotBitExactError, match="first at sample"):
        evaluate_quantized(qnet, inet, digits.x_test, digits.y_test)


def test_config_errors_name_the_flag(run_dir):
    model = load_trained(run_dir).model
    with pytest.raises(ConfigError, match=r"--w-bits 9 is out of range; give an integer in 2\.\.8"):
        make_config(2, w_bits=9)
    with pytest.raises(ConfigError, match=r"--layer-bits: layer 2 does not exist; the network has 2"):
        make_config(2, layer_bits={2: 4})
    with pytest.raises(ConfigError, match="is not LAYER:BITS"):
        parse_layer_bits("0-4")
    assert parse_layer_bits("0:4, 1:8") == {0: 4, 1: 8}
    with pytest.raises(ConfigError, match=r"layer \d step \d: .* need a \d+-bit accumulator but --acc-bits is 12"):
        check_accumulators(model, make_config(2, act_bits=8, acc_bits=12))


def test_the_acc_bits_advice_fits_every_step(run_dir):
    """--acc-bits is one width for all steps: the advice names the widest need (it named
    the first step's, and the next step then overflowed the advised width)."""
    import re

    model = load_trained(run_dir).model
    with pytest.raises(ConfigError) as e:
        check_accumulators(model, make_config(2, act_bits=8, inter_bits=16, acc_bits=12))
    need = int(re.search(r"raise --acc-bits to (\d+)$", str(e.value)).group(1))
    assert "steps that overflow it" in str(e.value)
    check_accumulators(model, make_config(2, act_bits=8, inter_bits=16, acc_bits=need))
    with pytest.raises(ConfigError):
        check_accumulators(model, make_config(2, act_bits=8, inter_bits=16, acc_bits=need - 1))


# -- CLI --------------------------------------------------------------------------------
def test_cli_writes_an_artifact_equal_to_the_report(run_dir, tmp_path, capsys, digits):
    out = tmp_path / "m.ttfa"
    ckpt = tmp_path / "qat.pt"
    assert main(["quantize", str(run_dir), "-o", str(out), "--w-bits", "6", "--layer-bits", "1:8",
                 "--qat-epochs", "1", "--calib-samples", "128", "--save-checkpoint", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    inet = load_artifact(out)
    assert [layer.w_bits for layer in inet.layers] == [6, 8]
    assert inet.meta["method"] == "qat" and inet.meta["test_acc"] == report["qat"]["int_acc"]
    golden = execute(inet, inet.quantize_input(digits.x_test.numpy()))
    assert np.mean(np.argmax(golden, axis=1) == digits.y_test.numpy()) == report["qat"]["int_acc"]
    # the saved fine-tuned checkpoint is the float model the artifact was compiled from
    assert weights_fingerprint(load_trained(ckpt).model) == inet.meta["weights_fingerprint"]


def test_calibration_data_of_only_zeros_is_one_warning_line(run_dir, tmp_path, capsys):
    """Training images all zero: exit 0 with an input exponent of 0 (21.5% against the float
    model's 82.5%) and no word; now one warning line naming the tensors, once (probe D, F5a)."""
    from sklearn.datasets import load_digits

    from tests.support.data import idx_bytes

    x, y = load_digits(return_X_y=True)
    data = tmp_path / "data"
    data.mkdir()
    pixels = (x * 255 / 16).round().reshape(-1, 8, 8)
    for name, arr in (("train-images-idx3-ubyte", np.zeros((50, 8, 8))), ("train-labels-idx1-ubyte", np.zeros(50)),
                      ("t10k-images-idx3-ubyte", pixels[:200]), ("t10k-labels-idx1-ubyte", y[:200])):
        (data / name).write_bytes(idx_bytes(arr))
    out = tmp_path / "q.ttfa"
    assert main(["quantize", str(run_dir), "--data", str(data), "-o", str(out), "--qat-epochs", "1",
                 "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ttforge quantize: warning: calibration saw only zeros for "
                                               "layer 0 input, layer 0 step 0")
    assert out.is_file() and load_artifact(out).layers[0].in_exp == 0
    assert main(["quantize", str(run_dir), "-o", str(tmp_path / "ok.ttfa"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""   # the sibling: the run's own data warn of nothing
    # diverge's PTQ in memory warns the same way (it printed Python's two-line warning, review V8)
    main(["diverge", str(run_dir), "--data", str(data), "--samples", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith("ttforge diverge: warning: calibration saw only zeros"), err
    assert not any("CalibrationWarning" in line for line in err), err


def test_a_qat_that_diverges_names_the_learning_rate(run_dir, tmp_path, capsys):
    """--lr 1e30 (accepted, up to MAX_RATE) turned the weights NaN, and the re-calibration
    after the epoch blamed "the model and data"; now one line naming the epoch and --lr,
    exit 2, nothing written (probe D, F5b)."""
    out = tmp_path / "q.ttfa"
    assert main(["quantize", str(run_dir), "-o", str(out), "--qat-epochs", "2", "--lr", "1e30",
                 "--calib-samples", "64", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ttforge quantize: error: QAT diverged in epoch ")
    assert err[0].endswith("the weights hold NaN or infinite values; lower the learning rate (lr 1e+30: --lr of "
                           "ttforge quantize, [quant] lr of a flow config)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("acc_bits", [33, 48])
def test_accumulators_wider_than_32_bits_quantize_bit_exact(run_dir, digits, acc_bits):
    """--acc-bits 33..48 (the help's and the contract's range): PTQ and a QAT epoch give
    a bit-exact artifact of that width (the bias's fake quantization refused widths
    above 32, the widest operand)."""
    trained = load_trained(run_dir)
    qnet, inet, report = quantize_trained(trained, digits, make_config(2, acc_bits=acc_bits), calib_samples=64,
                                          qat_epochs=1)
    assert report["ptq"]["bit_exact"] and report["qat"]["bit_exact"]
    assert [layer.acc_bits for layer in inet.layers] == [acc_bits] * 2
    golden = execute(inet, inet.quantize_input(digits.x_test.numpy()))
    assert np.array_equal(qnet.forward_int(digits.x_test), golden)
    # sibling: one bias bit flipped in the wide accumulator's integers must disagree
    bias = np.array(inet.layers[-1].bias)   # a layer's own bias is read-only
    bias[0] ^= 1 << (acc_bits - 8)
    inet = IntNetwork((*inet.layers[:-1], dataclasses.replace(inet.layers[-1], bias=bias)))
    assert not np.array_equal(qnet.forward_int(digits.x_test), execute(inet, inet.quantize_input(digits.x_test.numpy())))


def test_cli_table(run_dir, tmp_path, capsys):
    out = tmp_path / "t.ttfa"
    assert main(["quantize", str(run_dir), "-o", str(out), "--calib-samples", "64", "--quiet"]) == 0
    text = capsys.readouterr().out
    for word in ("float", "PTQ", "integer executor", "on-chip bytes", "ratio", str(out)):
        assert word in text
    assert out.is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--w-bits", "9"], "--w-bits 9 is out of range"),
        (["--act-bits", "1"], "--act-bits 1 is out of range"),
        (["--inter-bits", "17"], "--inter-bits 17 is out of range"),
        (["--layer-bits", "5:4"], "layer 5 does not exist"),
        (["--layer-bits", "0:1"], "layer 0 bits 1 is out of range"),
        (["--layer-bits", "zero:4"], "is not LAYER:BITS"),
        (["--act-bits", "16", "--acc-bits", "20"], "need a 27-bit accumulator but --acc-bits is 20 (the widest of 3 steps that overflow it); raise --acc-bits to 27"),
        (["--calib-samples", "0"], "--calib-samples 0 must be in 1..1,048,576"),
        (["--qat-epochs", "100001"], "--qat-epochs 100001 must be in 0..100,000"),
        (["--lr", "-1"], "--lr -1.0 must be a positive number"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "bad.ttfa"
    assert main(["quantize", str(run_dir), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("ttforge quantize: error:")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "x.ttfa"
    assert main(["quantize", str(tmp_path / "nope"), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not out.exists()


def test_cli_bad_calibration_choice(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(run_dir), "-o", str(tmp_path / "x.ttfa"), "--calibration", "minmax"])
    assert e.value.code == 2
    assert "invalid choice: 'minmax'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_quant_quick(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "q.json"
    res = subprocess.run([sys.executable, str(root / "bench" / "bench_quant.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert all(r["runs"][0]["bit_exact"] for r in data["rows"] if r["config"] != "float")
    assert "| digits | 8-bit cores" in res.stdout


def test_cli_prints_paths_as_they_are(run_dir, tmp_path, capsys):
    """A path is the user's text, never rich markup: 'q[/].ttfa' was written and then the
    summary raised a MarkupError (exit 70 after the output existed)."""
    d = tmp_path / "w[bold]"
    d.mkdir()
    out, ckpt = d / "q[/].ttfa", d / "c[/red].pt"
    assert main(["quantize", str(run_dir), "-o", str(out), "--save-checkpoint", str(ckpt),
                 "--calib-samples", "64", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"written {out} and {ckpt}" in " ".join(captured.out.split()) and captured.err == ""
    assert load_artifact(out).layers and ckpt.is_file()


def test_cli_report_is_rendered_before_the_outputs_are_written(run_dir, tmp_path, capsys, monkeypatch):
    """Whatever fails while printing the report fails before any output exists."""
    import ttforge.quant.cli as qcli

    def broken(r):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(qcli, "_render_summary", broken)
    out = tmp_path / "m.ttfa"
    assert main(["quantize", str(run_dir), "-o", str(out), "--calib-samples", "64", "--quiet"]) == 70
    assert not out.exists()


def _edited_checkpoint(run_dir, out, edit):
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(Path(run_dir) / "last.pt")
    edit(payload["state_dict"])
    save_checkpoint(out, payload)
    return out


def _inf_bias(sd):
    sd["3.bias"][0] = float("inf")


def _nan_core(sd):
    sd["1.cores.0"].view(-1)[0] = float("nan")


@pytest.mark.parametrize("edit, message", [
    (_inf_bias, "layer 1 (Linear) holds NaN or infinite weights"),
    (_nan_core, "layer 0 (TTLinear) holds NaN or infinite weights"),
])
def test_non_finite_weights_are_named_not_an_accumulator_width(run_dir, tmp_path, capsys, edit, message):
    """An infinite bias said 'step 0 (core 0) can reach 33-bit sums ...; raise acc_bits
    to 33': the layer holding it is named instead."""
    ckpt = _edited_checkpoint(run_dir, tmp_path / "bad.pt", edit)
    out = tmp_path / "m.ttfa"
    assert main(["quantize", str(ckpt), "-o", str(out), "--calib-samples", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "acc_bits" not in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("acc_bits", ["32", "48"])
def test_a_bias_too_large_for_the_weights_scale_is_named_never_past_48_bits(run_dir, tmp_path, capsys,
                                                                             acc_bits):
    """Weights scaled by 1e-44 put the bias at a scale of 2^-158: that needs ~157 bits. It
    said 'raise acc_bits to 33' (and, at --acc-bits 48, to 49: out of range)."""
    ckpt = _edited_checkpoint(run_dir, tmp_path / "tiny.pt", lambda sd: sd["3.weight"].mul_(1e-44))
    out = tmp_path / "m.ttfa"
    assert main(["quantize", str(ckpt), "-o", str(out), "--calib-samples", "64", "--acc-bits", acc_bits]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 1 (Linear): its bias" in err[0] and "more than the 48" in err[0], err
    assert "raise" not in err[0] and not out.exists()


def test_a_bias_that_needs_a_wider_accumulator_names_the_width(run_dir, digits):
    """Within 48 bits the fix is the width to give, with the layer."""
    trained = load_trained(run_dir)
    with torch.no_grad():
        trained.model[3].bias.mul_(1e4)
    with pytest.raises(ConfigError, match=r"^layer 1 \(Linear\): its bias .* needs a (\d+)-bit accumulator "
                                          r"but acc_bits is 16; raise --acc-bits to \1$"):
        quantize_trained(trained, digits, make_config(2, act_bits=4, inter_bits=4, acc_bits=16), calib_samples=64)


def test_an_output_that_is_a_file_of_the_run_is_refused_before_the_work(run_dir, tmp_path, capsys, monkeypatch):
    """``quantize RUN -o RUN/last.pt``: the run's checkpoint became an input only when it
    was loaded, so the refusal came after the whole quantization (QAT included)."""
    import shutil

    import ttforge.quant.ptq as ptq

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = (run / "last.pt").read_bytes()
    # quantize imports it when it runs
    monkeypatch.setattr(ptq, "quantize_trained", lambda *a, **k: pytest.fail("quantized first"))
    assert main(["quantize", str(run), "-o", str(run / "last.pt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the input" in err[0] and (run / "last.pt").read_bytes() == before
