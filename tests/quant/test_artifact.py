"""The compiled artifact: exact round trips, deterministic bytes, a loader that rejects bad files.

``doc_execute`` below is an executor written from ``docs/artifact.md`` alone (zipfile,
json and numpy; nothing from ttforge): it checks that the document is enough to run an
artifact. ``example_network`` builds the worked example printed in the document, and a
test keeps the document's numbers equal to what the code produces.
"""

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

from ttforge.cli import main
from ttforge.errors import ArtifactError, OutputError, TTForgeError
from ttforge.model import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.ir import artifact as A
from ttforge.ir.artifact import dumps_artifact, load_artifact, loads_artifact, save_artifact
from ttforge.ir.onchip import on_chip_bytes
from ttforge.ir.executor import IntLayer, IntNetwork, execute, execute_traced, layer_from_dense
from ttforge.quant.qat import calibrate, compile_network, quantize_model

from tests.support.nets import EXAMPLE_INPUT, example_network, random_float_network, small_net

DOC = Path(__file__).resolve().parents[2] / "docs" / "artifact.md"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def golden_case():
    q, x = small_net()
    net = compile_network(q)
    return net, net.quantize_input(x.numpy())


def unzip(data: bytes) -> tuple[dict, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return json.loads(z.read("manifest.json")), z.read("tensors.bin")


def rezip(manifest: dict | bytes, payload: bytes, fix_sums: bool = False) -> bytes:
    """A container with valid ZIP CRCs around an edited manifest/payload."""
    if fix_sums:
        for t in manifest["tensors"]:
            t["sha256"] = hashlib.sha256(payload[t["offset"]:t["offset"] + t["nbytes"]]).hexdigest()
        manifest["payload"]["sha256"] = hashlib.sha256(payload).hexdigest()
        manifest["payload"]["nbytes"] = len(payload)
    text = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", text)
        z.writestr("tensors.bin", payload)
    return buf.getvalue()


def reject(data: bytes, pattern: str) -> str:
    with pytest.raises(ArtifactError, match=pattern) as e:
        loads_artifact(data, "x.ttfa")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x.ttfa: ")
    return msg


def doc_execute(data: bytes, x: np.ndarray) -> np.ndarray:
    """Run an artifact from docs/artifact.md alone (no ttforge code)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        man = json.loads(z.read("manifest.json"))
        payload = z.read("tensors.bin")
    assert man["format"] == "ttforge-artifact" and man["format_version"] == 1
    tensors = {}
    for t in man["tensors"]:
        raw = payload[t["offset"]:t["offset"] + t["nbytes"]]
        tensors[t["name"]] = np.frombuffer(raw, "<i" + str(int(t["dtype"][3:]) // 8)).reshape(t["shape"])

    def sat(v, bits):
        return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)

    x = np.asarray(x, dtype=np.int64)
    for L in man["layers"]:
        sched = L["schedule"]
        x = np.pad(x, ((0, 0), (0, int(np.prod(sched["in_modes"])) - L["in_features"])))
        B = x.shape[0]
        for t, st in enumerate(sched["steps"]):
            C = tensors[L["cores"][st["core"]]].astype(np.int64).transpose(st["core_axes"])
            C = C.reshape(st["P"], st["K"])
            acc = np.einsum("pk,akq->apq", C, x.reshape(B * st["A"], st["K"], st["Q"])).reshape(B, -1)
            last = t == len(sched["steps"]) - 1
            if last and L["bias"] is not None:
                acc[:, :L["out_features"]] += tensors[L["bias"]]
            s = L["step_exps"][t] - L["acc_exps"][t]
            assert s == L["shifts"][t]
            acc = (acc + (1 << (s - 1))) >> s if s > 0 else acc << -s
            x = sat(acc, L["out_bits"] if last else L["inter_bits"])
        x = x[:, :L["out_features"]]
        if L["relu"]:
            x = np.maximum(x, 0)
    return x


def example_blocks() -> dict[str, object]:
    net = example_network()
    data = dumps_artifact(net)
    manifest, payload = unzip(data)
    tensors = {t["name"]: np.frombuffer(payload[t["offset"]:t["offset"] + t["nbytes"]],
                                        "<i" + str(int(t["dtype"][3:]) // 8)).tolist()
               for t in manifest["tensors"]}  # flat, row-major
    out, traces = execute_traced(net, EXAMPLE_INPUT)
    trace = {"input": EXAMPLE_INPUT.tolist(),
             "steps": [{"layer": t.layer, "step": t.step, "acc": t.acc.tolist(), "out": t.out.tolist()}
                       for t in traces],
             "output": out.tolist()}
    return {"manifest": manifest, "tensors": tensors, "trace": trace,
            "payload_hex": payload.hex(), "file_sha256": hashlib.sha256(data).hexdigest()}


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------
def test_round_trip_is_exact_and_keeps_meta(tmp_path):
    net, xi = golden_case()
    path = save_artifact(net, tmp_path / "net.ttfa", meta={"source": "small_net", "accuracy": 0.5})
    back = load_artifact(path)
    assert np.array_equal(execute(back, xi), execute(net, xi))
    assert back.meta == {"source": "small_net", "accuracy": 0.5}
    for a, b in zip(net.layers, back.layers):
        assert a.schedule == b.schedule and a.shifts() == b.shifts()
        assert all(np.array_equal(g, h) and h.dtype == np.int64 for g, h in zip(a.cores, b.cores))
        assert (a.bias is None) == (b.bias is None)
        fields = set(IntLayer.__dataclass_fields__) - {"cores", "bias", "schedule"}
        assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    # the independent, document-only executor agrees too
    assert np.array_equal(doc_execute(path.read_bytes(), xi), execute(net, xi))


def test_flipping_one_bit_of_a_loaded_core_breaks_equality(tmp_path):
    net, xi = golden_case()
    back = load_artifact(save_artifact(net, tmp_path / "net.ttfa"))
    cores = [np.array(c) for c in back.layers[1].cores]   # a layer's own cores are read-only
    cores[0].reshape(-1)[3] ^= 1 << 2
    back = IntNetwork((back.layers[0], dataclasses.replace(back.layers[1], cores=tuple(cores)), *back.layers[2:]))
    assert not np.array_equal(execute(back, xi), execute(net, xi))


def test_same_network_gives_identical_bytes(tmp_path):
    net, _ = golden_case()
    a = save_artifact(net, tmp_path / "a.ttfa", meta={"tool": "test"}).read_bytes()
    b = save_artifact(compile_network(small_net()[0]), tmp_path / "b.ttfa", meta={"tool": "test"}).read_bytes()
    assert a == b
    assert dumps_artifact(loads_artifact(a)) == a  # load -> save is the identity on bytes
    assert dumps_artifact(net, meta={"tool": "other"}) != a


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_float_network())
def test_random_networks_round_trip_exactly(case):
    net, cfg, in_f, seed = case
    torch.manual_seed(seed)
    for p in net.parameters():
        nn.init.normal_(p, 0, 0.7)
    x = torch.randn(9, in_f)
    inet = compile_network(calibrate(quantize_model(net, cfg), x, cfg.calibration))
    xi = inet.quantize_input(x.numpy())
    data = dumps_artifact(inet, meta={"seed": seed})
    back = loads_artifact(data)
    golden = execute(inet, xi)
    assert np.array_equal(execute(back, xi), golden)
    assert np.array_equal(doc_execute(data, xi), golden)
    assert dumps_artifact(back) == data


# ---------------------------------------------------------------------------------------
# corruption and bad input
# ---------------------------------------------------------------------------------------
def test_every_single_byte_flip_is_caught_or_harmless():
    """Flip one bit in every byte of the file: ArtifactError, or (a ZIP field with no
    meaning, e.g. a date) a network that computes exactly the same."""
    net, xi = golden_case()
    data = dumps_artifact(net)
    golden = execute(net, xi)
    caught = 0
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 1 << (i % 8)
        try:
            back = loads_artifact(bytes(bad))
        except ArtifactError as e:
            assert "\n" not in str(e)
            caught += 1
            continue
        assert np.array_equal(execute(back, xi), golden), f"byte {i} changed the network silently"
    assert caught > 0.95 * len(data)


def test_edited_manifests_with_valid_crc_never_crash_the_loader():
    """Edits behind the ZIP CRC: every one is an ArtifactError or still a valid network."""
    net, xi = golden_case()
    manifest, payload = unzip(dumps_artifact(net))
    text = A.dump_json(manifest).encode()
    for i in range(0, len(text), 2):
        bad = bytearray(text)
        bad[i] ^= 1 << (i % 7)
        try:
            back = loads_artifact(rezip(bytes(bad), payload))
        except ArtifactError as e:
            assert "\n" not in str(e)
            continue
        execute(back, xi)  # whatever loaded is a consistent network


def test_flipped_payload_byte_fails_the_checksum():
    net, _ = golden_case()
    data = dumps_artifact(net)
    manifest, payload = unzip(data)
    offset = data.index(payload)  # stored, so the payload appears verbatim
    bad = bytearray(data)
    bad[offset + 40] ^= 0x08
    reject(bytes(bad), r"corrupt: member tensors\.bin fails its ZIP check")
    # the same flip behind a valid ZIP CRC is caught by sha256
    p = bytearray(payload)
    p[40] ^= 0x08
    reject(rezip(manifest, bytes(p)), r"corrupt: payload sha256 mismatch")
    manifest["payload"]["sha256"] = hashlib.sha256(bytes(p)).hexdigest()
    reject(rezip(manifest, bytes(p)), r"corrupt: tensor layers\.\d\.\w+(\.\d)? fails its sha256 check")
    # and the unmodified container loads (the sibling that must pass)
    loads_artifact(rezip(*unzip(data)))


def test_truncated_and_foreign_files(tmp_path):
    net, _ = golden_case()
    data = dumps_artifact(net)
    for n in (10, 100, len(data) // 2, len(data) - 1):
        reject(data[:n], "truncated or damaged")
    reject(b"", r"empty \(0 bytes\)")
    reject(b"\x89PNG\r\n\x1a\n" + bytes(100), "not a ttforge artifact")
    reject(b'{"format": "ttforge-artifact"}', "not a ttforge artifact")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    reject(buf.getvalue(), r"no manifest\.json")
    manifest, payload = unzip(data)
    manifest["format"] = "onnx"
    reject(rezip(manifest, payload), "not a ttforge artifact")
    manifest["format"] = "ttforge-train-state"   # a train-int state: what takes it is named
    reject(rezip(manifest, payload), r"is a training state \(ttforge train-int\), not an artifact: .*generate --train")
    reject(rezip(b"[1, 2", payload), r"unreadable manifest\.json")
    # not Python's own advice (sys.set_int_max_str_digits) in the line
    reject(rezip(b'{"x": ' + b"9" * 5000 + b"}", payload), r"unreadable manifest\.json \(an integer of more than 4,300")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "missing.ttfa")
    with pytest.raises(ArtifactError, match="is a directory"):
        load_artifact(tmp_path)


@pytest.mark.parametrize("members, pattern", [
    (3, r"has the member 'x0' besides manifest\.json and tensors\.bin"),
    (70, r"has 70 members; it holds exactly manifest\.json and tensors\.bin"),
    (70_000, r"has more than 65,535 members"),
])
def test_many_members_are_refused_before_the_zip_directory_is_read(members, pattern):
    """Extra members are named; many are refused from the ZIP's end record, before
    zipfile reads a directory of them (100,000 empty members ran for minutes: every name
    was counted against every other), for artifacts and training states alike."""
    from ttforge.errors import ArtifactError
    from ttforge.ir.train_state import loads_state

    net, _ = golden_case()
    manifest, payload = unzip(dumps_artifact(net))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), ("tensors.bin", payload)]:
            z.writestr(name, data)
        for i in range(members - 2):
            z.writestr(zipfile.ZipInfo(f"x{i}"), b"")
    reject(buf.getvalue(), pattern)
    if members > 3:
        with pytest.raises(ArtifactError, match=pattern):
            loads_state(buf.getvalue(), "x.ttts")


@pytest.mark.parametrize("version, pattern", [
    (2, r"format_version 2, written by a newer ttforge .*; upgrade ttforge"),
    (0, "unknown format_version 0"),
    ("1", "unknown format_version '1'"),
])
def test_format_versions(version, pattern):
    manifest, payload = unzip(dumps_artifact(golden_case()[0]))
    manifest["format_version"] = version
    reject(rezip(manifest, payload), pattern)


def _edit(edit, pattern, fix_sums=False):
    manifest, payload = unzip(dumps_artifact(golden_case()[0]))
    payload = edit(manifest, bytearray(payload)) or payload
    return reject(rezip(manifest, bytes(payload), fix_sums), pattern)


def _set(path, value):
    def edit(m, p):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, pattern", [
    (_set(["arithmetic", "version"], 2), "arithmetic spec version 2; this ttforge implements 1; upgrade"),
    (_set(["arithmetic", "rounding"], "HALF_EVEN"), r"arithmetic\.rounding='HALF_EVEN'"),
    (_set(["layers", 0, "in_exp"], 1.5), r"layers\[0\]\.in_exp=1\.5 must be an integer"),
    (_set(["layers", 1, "w_bits"], True), r"layers\[1\]\.w_bits=True must be an integer"),
    (_set(["layers", 0, "w_bits"], 9), r"layers\[0\]\.w_bits=9 is out of range 2\.\.8"),
    (_set(["layers", 2, "relu"], 1), r"layers\[2\]\.relu=1 must be true or false"),
    (lambda m, p: m["layers"][0].pop("acc_bits") and None, r"layers\[0\]\.acc_bits is missing"),
    (_set(["layers", 0, "shifts"], [0, 6, 15]), r"layers\[0\]\.shifts=\[0, 6, 15\] do not match the exponents"),
    (_set(["layers", 0, "step_exps"], [-13, -12, -4]), r"layers\[0\]\.acc_exps=.* do not match"),
    (_set(["layers", 1, "core_exps"], [-7]), r"layers\[1\]\.core_exps has 1 entries; the schedule needs 2"),
    (_set(["layers", 0, "schedule", "order"], [0, 1, 2]), r"layers\[0\]\.schedule: schedule 'steps' do not match"),
    (_set(["layers", 0, "kind"], "dense"), r"layers\[0\]\.kind='dense' but its schedule has 3 cores"),
    (_set(["layers", 0, "acc_bits"], 20), r"layers\[0\]: step 1 \(core 1\) can reach 26-bit sums but acc_bits=20; raise acc_bits to 26"),
    (_set(["layers", 1, "bias"], None), r"layers\[1\]\.has_bias=True disagrees"),
    (_set(["layers", 0, "cores", 1], "nope"), r"names tensor 'nope', which the tensor table lacks"),
    (_set(["tensors", 0, "dtype"], "float32"), r"dtype 'float32'; .* never non-integer values"),
    (_set(["tensors", 0, "nbytes"], 3), r"tensor layers\.0\.cores\.0 has 3 bytes but shape"),
    (_set(["tensors", 0, "offset"], 10**6), r"past the \d+-byte payload"),
    (_set(["output", "exp"], 0), r"output=.* disagrees with the layers"),
    (_set(["meta"], [1]), r"meta must be a JSON object"),
])
def test_bad_manifest_fields_are_named(edit, pattern):
    _edit(edit, pattern)


def test_tensor_shape_inconsistent_with_the_schedule():
    def edit(m, p):
        t = m["tensors"][1]  # layers.0.cores.1, (4, 5, 3, 2) -> same bytes, permuted shape
        assert t["name"] == "layers.0.cores.1"
        t["shape"] = t["shape"][::-1]
    _edit(edit, r"layers\[0\] core 1 \(layers\.0\.cores\.1\) has shape \[2, 3, 5, 4\] but the schedule needs \[4, 5, 3, 2\]")


def test_out_of_range_core_value_is_rejected_even_with_valid_checksums():
    def edit(m, p):
        t = m["tensors"][0]
        assert t["dtype"] == "int8"
        p[t["offset"]] = 0x80  # -128: outside the narrow 8-bit range [-127, 127]
        return p
    _edit(edit, r"core 0 \(layers\.0\.cores\.0\) has values in \[-128, .*narrow range \[-127, 127\]", fix_sums=True)
    # the sibling: a legal change behind valid checksums loads (and computes differently)
    net, xi = golden_case()
    manifest, payload = unzip(dumps_artifact(net))
    p = bytearray(payload)
    p[manifest["tensors"][0]["offset"]] ^= 0x01
    back = loads_artifact(rezip(manifest, bytes(p), fix_sums=True))
    assert not np.array_equal(execute(back, xi), execute(net, xi))


def test_layers_that_do_not_chain():
    def edit(m, p):
        L = m["layers"][1]  # its input exponent no longer matches layer 0's output exponent
        L["in_exp"] += 1
        L["acc_exps"][0] += 1
        L["shifts"][0] -= 1
    _edit(edit, r"layers do not chain: layer 0 outputs 20 x \(8 bits, exp -4\) but layer 1 takes 20 x \(8 bits, exp -3\)")


def test_bias_outside_the_accumulator_range():
    def edit(m, p):
        m["layers"][2]["acc_bits"] = 8
        t = next(t for t in m["tensors"] if t["name"] == "layers.2.bias")
        p[t["offset"]:t["offset"] + 4] = (1000).to_bytes(4, "little", signed=True)
        return p
    _edit(edit, r"bias \(layers\.2\.bias\) leaves the 8-bit accumulator range", fix_sums=True)


# ---------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------
def test_failed_save_leaves_the_old_artifact_and_no_temporary(tmp_path, monkeypatch):
    net, _ = golden_case()
    path = save_artifact(net, tmp_path / "net.ttfa")
    before = path.read_bytes()
    with pytest.raises(ArtifactError, match="meta is not plain JSON data"):
        save_artifact(net, path, meta={"bad": object()})
    with pytest.raises(ArtifactError, match="meta is not plain JSON data"):
        save_artifact(net, path, meta={"nan": float("nan")})

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match="disk full"):  # one line, not a traceback
        save_artifact(net, path, meta={"new": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.ttfa"]
    with pytest.raises(ArtifactError, match="needs an IntNetwork"):
        save_artifact("not a network", tmp_path / "x.ttfa")


# ---------------------------------------------------------------------------------------
# on-chip bytes
# ---------------------------------------------------------------------------------------
def test_on_chip_bytes_by_hand():
    # TT 6 -> 4 (modes (2,2) x (3,2), rank 2), 3-bit cores, 8-bit in, 16-bit inter, 24-bit acc
    shape = TTShape((2, 2), (3, 2), (1, 2, 1))
    cores = tuple(np.ones(s, dtype=np.int64) for s in shape.core_shapes)  # 12 and 8 entries
    tt = IntLayer(in_features=5, out_features=4, schedule=ContractionSchedule(shape, (1, 0)),
                  cores=cores, core_exps=(0, 0), w_bits=3, in_bits=8, in_exp=0, inter_bits=16,
                  out_bits=8, step_exps=(0, 0), acc_bits=24, bias=np.zeros(4, dtype=np.int64))
    dense = layer_from_dense(np.ones((3, 4)), core_exps=(0,), w_bits=5, in_bits=8, in_exp=0,
                             inter_bits=16, out_bits=8, step_exps=(0,), acc_bits=24)
    got = on_chip_bytes(IntNetwork((tt, dense)))
    L0, L1, T = got["layers"][0], got["layers"][1], got["total"]
    # cores packed per core, rounded up: 12*3 = 36 bits -> 5 B; 8*3 = 24 bits -> 3 B
    assert L0["core_bytes_each"] == [5, 3] and L0["core_bytes"] == 8
    assert L0["bias_bytes"] == 4 * 24 // 8
    # input padded to 6 x 8 bits; step 0 (core 1) leaves n0 r1 m1 = 3*2*2 at 16 bits; step 1 m0 m1 = 4 at 8 bits
    assert L0["intermediate_bytes"] == [6, 24, 4] and L0["peak_intermediate_bytes"] == 24
    assert L0["on_chip_bytes"] == 8 + 12 + 24 and L0["dense_int8_bytes"] == 5 * 4
    assert L1["core_bytes"] == (12 * 5 + 7) // 8 and L1["bias_bytes"] == 0
    assert L1["intermediate_bytes"] == [4, 3] and L1["params"] == 12
    assert T["peak_intermediate_bytes"] == 24  # one buffer shared by the layers: max, not sum
    assert T["on_chip_bytes"] == 8 + 8 + 12 + 24 and T["dense_int8_bytes"] == 20 + 12
    assert T["ratio"] == T["on_chip_bytes"] / 32


# ---------------------------------------------------------------------------------------
# ttforge inspect
# ---------------------------------------------------------------------------------------
def test_inspect_table_and_json(tmp_path, capsys):
    net, _ = golden_case()
    path = save_artifact(net, tmp_path / "net.ttfa", meta={"source": "small_net"})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("Layers", "Arithmetic", "On-chip bytes", "total", "2,5,2", "1,4,2,1", "2,1,0",
                 "8/8/16/32", "0,6,16", "source=small_net"):
        assert text in out, text
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    mem = on_chip_bytes(net)
    assert info["total"] == mem["total"]
    assert [L["on_chip_bytes"] for L in info["layers"]] == [L["on_chip_bytes"] for L in mem["layers"]]
    assert info["layers"][0]["ranks"] == [1, 4, 2, 1] and info["layers"][2]["kind"] == "dense"
    assert info["layers"][0]["shifts"] == list(net.layers[0].shifts())


def test_inspect_bad_artifact_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.ttfa"
    bad.write_bytes(dumps_artifact(golden_case()[0])[:-7])
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ttforge inspect: error: ") and "truncated" in err
    # through the installed entry point, as a user runs it
    newer = tmp_path / "newer.ttfa"
    manifest, payload = unzip(dumps_artifact(golden_case()[0]))
    manifest["format_version"] = 7
    newer.write_bytes(rezip(manifest, payload))
    run = subprocess.run([sys.executable, "-m", "ttforge.cli", "inspect", str(newer)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().endswith("upgrade ttforge") and run.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------
def _doc_block(name: str) -> str:
    m = re.search(rf"<!-- example:{name} -->\s*```\w*\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/artifact.md lacks the example:{name} block"
    return m.group(1)


def test_the_documented_example_is_what_the_code_writes():
    blocks = example_blocks()
    assert json.loads(_doc_block("manifest")) == blocks["manifest"]
    assert json.loads(_doc_block("tensors")) == blocks["tensors"]
    assert json.loads(_doc_block("trace")) == blocks["trace"]
    assert _doc_block("payload").split() == re.findall(".{1,32}", blocks["payload_hex"])
    assert blocks["file_sha256"] in DOC.read_text()
    data = dumps_artifact(example_network())
    assert np.array_equal(doc_execute(data, EXAMPLE_INPUT), blocks["trace"]["output"])


def test_errors_are_ttforge_errors():
    assert issubclass(ArtifactError, TTForgeError)


if __name__ == "__main__":  # print the blocks of docs/artifact.md
    b = example_blocks()
    print(A.dump_json(b["manifest"]), A.dump_json(b["tensors"]), A.dump_json(b["trace"]), sep="\n\n")
    print("\n".join(re.findall(".{1,32}", b["payload_hex"])))
    print(b["file_sha256"])


def test_earlier_rounding_name_is_read_as_the_same_rule():
    """Manifests written before the rename call floor(v + 1/2) ``HALF_UP``; they load and
    execute the same, and the current name is what a writer emits."""
    from ttforge.ir.executor import execute

    case = golden_case()[0]
    manifest, payload = unzip(dumps_artifact(case))
    assert manifest["arithmetic"]["rounding"] == "FLOOR_PLUS_HALF"
    manifest["arithmetic"]["rounding"] = "HALF_UP"
    old = loads_artifact(rezip(manifest, payload))
    new = loads_artifact(dumps_artifact(case))
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(8, new.layers[0].in_features))
    assert np.array_equal(execute(old, x), execute(new, x))
