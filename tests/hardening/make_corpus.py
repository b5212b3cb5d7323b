"""Regenerate the binary files of the bad-input corpus (``corpus/``).

Run ``python -m tests.hardening.make_corpus`` from the repository root after a format
change. The text cases (configs, the CLI table in ``cases.toml``) are written by hand;
this script writes the artifacts, checkpoints, IDX directories and ONNX files, each
derived deterministically from one small valid network so the corpus is reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"


def _unzip(data: bytes) -> tuple[dict, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return json.loads(z.read("manifest.json")), z.read("tensors.bin")


def _rezip(manifest: dict | bytes, payload: bytes, fix_sums: bool = True,
           names: tuple[str, str] = ("manifest.json", "tensors.bin")) -> bytes:
    """A container with valid ZIP CRCs (and, with ``fix_sums``, valid sha256s)."""
    if fix_sums and isinstance(manifest, dict):
        for t in manifest.get("tensors", []):
            if isinstance(t, dict) and isinstance(t.get("offset"), int) and isinstance(t.get("nbytes"), int):
                t["sha256"] = hashlib.sha256(payload[t["offset"]:t["offset"] + t["nbytes"]]).hexdigest()
        manifest["payload"]["sha256"] = hashlib.sha256(payload).hexdigest()
        manifest["payload"]["nbytes"] = len(payload)
    text = manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=1).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in zip(names, (text, payload)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)
    return buf.getvalue()


def valid_artifact() -> bytes:
    from ttforge.ir.artifact import dumps_artifact
    from ttforge.quant.qat import compile_network

    from tests.support.nets import small_net

    q, _ = small_net()
    return dumps_artifact(compile_network(q), {"source": "tests/hardening corpus"})


def _edited(base: bytes, edit) -> bytes:
    m, p = _unzip(base)
    p = bytearray(p)
    edit(m, p)
    return _rezip(m, bytes(p))


def artifacts(base: bytes) -> dict[str, bytes]:
    m0, p0 = _unzip(base)
    out: dict[str, bytes] = {}
    out["empty.ttfa"] = b""
    out["bad_magic.ttfa"] = b"GIF89a" + bytes(range(64))
    out["text_file.ttfa"] = b"this is not an artifact\n"
    out["truncated_half.ttfa"] = base[: len(base) // 2]
    out["truncated_header.ttfa"] = base[:10]
    out["truncated_tail.ttfa"] = base[:-30]

    def flip_payload(fix_crc: bool) -> bytes:
        # the first core's first byte: inside tensors.bin
        i = base.index(p0[:64]) + 3
        data = bytearray(base)
        data[i] ^= 0x01
        if not fix_crc:
            return bytes(data)
        m, p = _unzip_nocrc(bytes(data))
        return _rezip(m, p, fix_sums=False)

    out["payload_bitflip.ttfa"] = flip_payload(False)
    out["payload_checksum.ttfa"] = flip_payload(True)

    def setter(path, value):
        def edit(m, p):
            obj = m
            for k in path[:-1]:
                obj = obj[k]
            if value is _DELETE:
                del obj[path[-1]]
            else:
                obj[path[-1]] = value
        return edit

    edits = {
        "format_version_99.ttfa": (("format_version",), 99),
        "format_version_string.ttfa": (("format_version",), "1"),
        "format_other.ttfa": (("format",), "onnx"),
        "arithmetic_version_99.ttfa": (("arithmetic", "version"), 99),
        "rounding_unknown.ttfa": (("arithmetic", "rounding"), "STOCHASTIC"),
        "w_bits_string.ttfa": (("layers", 0, "w_bits"), "8"),
        "w_bits_float.ttfa": (("layers", 0, "w_bits"), 8.0),
        "relu_int.ttfa": (("layers", 0, "relu"), 1),
        "in_features_zero.ttfa": (("layers", 0, "in_features"), 0),
        "layers_object.ttfa": (("layers",), {}),
        "layers_empty.ttfa": (("layers",), []),
        "tensors_missing.ttfa": (("tensors",), _DELETE),
        "tensor_shape_string.ttfa": (("tensors", 0, "shape"), "2,3"),
        "tensor_dtype_float.ttfa": (("tensors", 0, "dtype"), "float32"),
        "tensor_offset_negative.ttfa": (("tensors", 0, "offset"), -8),
        "tensor_offset_past_end.ttfa": (("tensors", 0, "offset"), 1 << 40),
        "meta_list.ttfa": (("meta",), [1, 2]),
        "shifts_wrong.ttfa": (("layers", 0, "shifts"), [99] * len(m0["layers"][0]["shifts"])),
        "schedule_garbage.ttfa": (("layers", 0, "schedule"), {"order": "x"}),
        "schedule_string.ttfa": (("layers", 0, "schedule"), "3,2,1"),
        "core_name_missing.ttfa": (("layers", 0, "cores", 0), "no.such.tensor"),
        "core_name_list.ttfa": (("layers", 0, "cores", 0), ["layers.0.cores.0"]),
        "bias_name_object.ttfa": (("layers", 1, "bias"), {"name": "layers.1.bias"}),
        "tensor_dtype_list.ttfa": (("tensors", 0, "dtype"), ["int8"]),
        "input_mismatch.ttfa": (("input", "features"), 31),
        "payload_nbytes_string.ttfa": (("payload",), {"member": "tensors.bin", "byte_order": "little",
                                                       "alignment": 8, "nbytes": "all", "sha256": "0"}),
        "byte_order_big.ttfa": (("payload", "byte_order"), "big"),
    }
    for name, (path, value) in edits.items():
        m = json.loads(json.dumps(m0))
        setter(path, value)(m, None)
        fix = name not in ("payload_nbytes_string.ttfa",)
        out[name] = _rezip(m, p0, fix_sums=fix)

    # a core value outside the w_bits narrow range, with every checksum valid
    m = json.loads(json.dumps(m0))
    p = bytearray(p0)
    t = next(t for t in m["tensors"] if t["name"] == "layers.0.cores.0")
    p[t["offset"]] = 0x80  # -128 is outside the narrow int8 range [-127, 127]
    out["core_out_of_range.ttfa"] = _rezip(m, bytes(p))
    out["manifest_not_json.ttfa"] = _rezip(b"{not json", p0, fix_sums=False)
    out["manifest_not_utf8.ttfa"] = _rezip(b"\xff\xfe\x00{", p0, fix_sums=False)
    out["manifest_is_list.ttfa"] = _rezip(b"[1, 2, 3]", p0, fix_sums=False)
    out["no_manifest.ttfa"] = _rezip(b"{}", p0, fix_sums=False, names=("readme.txt", "tensors.bin"))
    out["no_payload.ttfa"] = _rezip(json.loads(json.dumps(m0)), p0, fix_sums=False,
                                    names=("manifest.json", "other.bin"))
    out.update(hostile_artifacts(base, m0, p0))
    return out


def _raw_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED, flag_bits: int = 0) -> bytes:
    """A ZIP with exactly ``members`` (duplicates allowed), compressed with ``method``."""
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buf, "w", method) as z:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                z.writestr(info, data)
    data = bytearray(buf.getvalue())
    if flag_bits:  # set the flag in every local and central header
        for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            i = data.find(sig)
            while i >= 0:
                data[i + off] |= flag_bits
                i = data.find(sig, i + 4)
    return bytes(data)


def hostile_artifacts(base: bytes, m0: dict, p0: bytes) -> dict[str, bytes]:
    """Artifacts an adversary would write (issue 19): bombs, duplicates, fields where the
    int64 executor would not be exact, values too long for a line, deep nesting."""
    text = json.dumps(m0, indent=1).encode()
    out: dict[str, bytes] = {}
    # 2. bombs and container tricks
    out["deflated_bomb.ttfa"] = _raw_zip([("manifest.json", text), ("tensors.bin", p0 + bytes(4 << 20))],
                                         zipfile.ZIP_DEFLATED)
    out["duplicate_manifest.ttfa"] = _raw_zip([("manifest.json", b"{}"), ("manifest.json", text),
                                               ("tensors.bin", p0)])
    out["extra_member.ttfa"] = _raw_zip([("manifest.json", text), ("tensors.bin", p0), ("evil.py", b"x")])
    out["encrypted_flag.ttfa"] = _raw_zip([("manifest.json", text), ("tensors.bin", p0)], flag_bits=0x1)
    damaged = bytearray(base)
    cd = damaged.rfind(b"PK\x01\x02")
    damaged[cd + 10:cd + 12] = b"\x63\x00"   # central directory: compression method 99 (AES)
    out["central_directory_method.ttfa"] = bytes(damaged)
    # 3. a manifest nested 200,000 deep, an integer of 5,000 digits
    out["manifest_nested_deep.ttfa"] = _rezip(b'{"format": "ttforge-artifact", "x": ' + b"[" * 200_000
                                              + b"]" * 200_000 + b"}", p0, fix_sums=False)
    out["manifest_huge_int.ttfa"] = _rezip(text.replace(b'"format_version": 1', b'"format_version": '
                                                        + b"9" * 5000), p0, fix_sums=False)

    def edited(edit) -> bytes:
        m = json.loads(json.dumps(m0))
        edit(m)
        return _rezip(m, p0)

    # 4. fields outside the range where the int64 executor is exact; required keys
    def acc64(m):
        m["layers"][0]["acc_bits"] = 64
    def right_shift_64(m):
        last = m["layers"][-1]
        last["step_exps"][-1] += 64
        last["shifts"][-1] += 64
        m["output"]["exp"] += 64
    def left_shift_40(m):
        last = m["layers"][-1]
        last["step_exps"][-1] -= 40 + last["shifts"][-1]
        last["shifts"][-1] = -40
        m["output"]["exp"] = last["step_exps"][-1]
    def exp_huge(m):
        m["layers"][0]["in_exp"] = -(10 ** 6)
        m["input"]["exp"] = -(10 ** 6)
    def drop(*path):
        def edit(m):
            obj = m
            for k in path[:-1]:
                obj = obj[k]
            del obj[path[-1]]
        return edit
    def long_string(m):
        m["layers"][0]["kind"] = "k" * 250_000
    def newline_name(m):
        m["layers"][0]["cores"][0] = "line one\nline two"
    def huge_modes(m):
        m["layers"][0]["schedule"]["in_modes"] = [1 << 30] * 3
    out["acc_bits_64.ttfa"] = edited(acc64)
    out["shift_right_64.ttfa"] = edited(right_shift_64)
    out["shift_left_40.ttfa"] = edited(left_shift_40)
    out["exp_huge.ttfa"] = edited(exp_huge)
    out["producer_missing.ttfa"] = edited(drop("producer"))
    out["alignment_missing.ttfa"] = edited(drop("payload", "alignment"))
    out["steps_missing.ttfa"] = edited(drop("layers", 0, "schedule", "steps"))
    # 5. values too long for an error line, names with newlines
    out["kind_quarter_megabyte.ttfa"] = edited(long_string)
    out["core_name_newline.ttfa"] = edited(newline_name)
    out["modes_huge.ttfa"] = edited(huge_modes)
    return out


_DELETE = object()


def _unzip_nocrc(data: bytes) -> tuple[dict, bytes]:
    """Read members without the CRC check (to rebuild a container around a flipped byte)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        res = []
        for name in ("manifest.json", "tensors.bin"):
            info = z.getinfo(name)
            raw = data[info.header_offset:]
            n, e = struct.unpack("<HH", raw[26:30])
            res.append(raw[30 + n + e: 30 + n + e + info.compress_size])
    return json.loads(res[0]), res[1]


def _idx(dtype_code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, dtype_code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + data


def idx_dirs() -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(0)
    n, r, c = 20, 4, 4
    images = rng.integers(0, 256, size=(n, r, c), dtype=np.uint8).tobytes()
    labels = rng.integers(0, 10, size=n, dtype=np.uint8).tobytes()
    good_i = _idx(0x08, (n, r, c), images)
    good_l = _idx(0x08, (n,), labels)
    I, L = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
    return {
        "bad_magic": {I: b"\x1f\x00\x08\x03" + good_i[4:], L: good_l},
        "text_not_idx": {I: b"P5\n4 4\n255\n" + bytes(16), L: good_l},
        "truncated_images": {I: good_i[:-7], L: good_l},
        "truncated_header": {I: good_i[:9], L: good_l},
        "too_short": {I: b"\x00\x00", L: good_l},
        "excess_bytes": {I: good_i + b"\0\0\0", L: good_l},
        "unknown_type_code": {I: b"\x00\x00\x07\x03" + good_i[4:], L: good_l},
        "zero_dims": {I: b"\x00\x00\x08\x00", L: good_l},
        "images_2d": {I: _idx(0x08, (n, r * c), images), L: good_l},
        "labels_2d": {I: good_i, L: _idx(0x08, (n, 1), labels)},
        "count_mismatch": {I: good_i, L: _idx(0x08, (n - 1,), labels[:-1])},
        "labels_missing": {I: good_i},
        "images_missing": {L: good_l},
        "float_pixels": {I: _idx(0x0D, (n, r, c), np.zeros(n * r * c, ">f4").tobytes()), L: good_l},
        "float_labels": {I: good_i, L: _idx(0x0D, (n,), np.zeros(n, ">f4").tobytes())},
        "negative_labels": {I: good_i, L: _idx(0x09, (n,), b"\xff" * n)},
        "zero_images": {I: _idx(0x08, (0, r, c), b""), L: _idx(0x08, (0,), b"")},
        "two_images": {I: _idx(0x08, (2, r, c), images[: 2 * r * c]), L: _idx(0x08, (2,), labels[:2])},
        "huge_dims": {I: _idx(0x08, (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), b""), L: good_l},
        "damaged_gzip": {I + ".gz": gzip.compress(good_i, mtime=0)[:-12], L: good_l},
        "empty_dir": {".keep": b""},
        "labels_billion": {I: good_i, L: _idx(0x0C, (n,), np.full(n, 2_000_000_000, ">i4").tobytes())},
    }


def hostile_misc() -> dict[str, bytes]:
    """Input arrays, configs and reproducers an adversary would give (issue 19)."""
    import numpy.lib.format as fmt

    def npy_header(shape, dtype="<i8") -> bytes:
        buf = io.BytesIO()
        fmt.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buf.getvalue()

    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((2, 5), np.int64))
    empty = io.BytesIO()
    np.save(empty, np.zeros((0, 5), np.int64))
    obj = npy_header((2,), "|O") + b"\x80\x04N."   # an object array: a pickle, never loaded
    deep = b'{"model": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

    def npy(a) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    return {
        "inputs_beyond_float32.npy": npy(np.full((2, 64), 1e308)),   # inf in the float32 models
        "inputs_complex.npy": npy(np.ones((2, 64), np.complex128)),
        "inputs_400_digits.txt": (" ".join(["9" * 400] * 64) + "\n").encode(),   # inf as a float64
        "inputs_claims_terabytes.npy": npy_header((10 ** 12, 784)) + bytes(64),
        "inputs_npz_named.npy": npz.getvalue(),
        "inputs.npz": npz.getvalue(),   # under its own name: the text reader's case
        "inputs_empty.npy": empty.getvalue(),
        "inputs_empty.txt": b"",
        "inputs_objects.npy": obj,
        "inputs_truncated.npy": npy_header((100, 5)) + bytes(16),
        "config_nested_deep.json": deep,
        "config_nested_deep.toml": b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "config_huge_int.json": b'{"epochs": ' + b"9" * 5000 + b"}",
        "replay_damaged/case.json": b"{not json",
    }


def checkpoints(valid: bytes) -> dict[str, bytes]:
    flipped = bytearray(valid)
    flipped[-5] ^= 0x10
    newer = bytearray(valid)
    newer[8:12] = struct.pack(">I", 99)
    import hashlib as _h
    import torch

    def ckpt(payload) -> bytes:
        buf = io.BytesIO()
        torch.save(payload, buf)
        body = buf.getvalue()
        return struct.pack(">8sIQ32s", b"TTFCKPT\0", 1, len(body), _h.sha256(body).digest()) + body

    return {
        "state_list.pt": ckpt({"kind": "ttforge-train", "config": {}, "model_config": {},
                               "state_dict": [1, 2, 3]}),
        "empty.pt": b"",
        "bad_magic.pt": b"PK\x03\x04" + bytes(60),
        "truncated.pt": valid[: len(valid) // 2],
        "header_only.pt": valid[:30],
        "checksum.pt": bytes(flipped),
        "version_99.pt": bytes(newer),
        "trailing_bytes.pt": valid + b"junk",
    }


def valid_checkpoint() -> bytes:
    """A tiny checkpoint written by ``save_checkpoint`` (not a training run's)."""
    import tempfile

    from ttforge.model.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(Path(d) / "c.pt", {"config": {"x": 1}, "weights": list(range(40))})
        return p.read_bytes()


def onnx_files() -> dict[str, bytes]:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "not_ttforge", [x], [y])
    model = helper.make_model(graph, producer_name="hardening-corpus",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(1)
    return {
        "relu_graph.onnx": model.SerializeToString(),
        "garbage.onnx": rng.integers(0, 256, 256, dtype=np.uint8).tobytes(),
    }


def main() -> None:
    art = valid_artifact()
    d = CORPUS / "artifact"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in artifacts(art).items():
        (d / name).write_bytes(data)
    d = CORPUS / "checkpoint"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in checkpoints(valid_checkpoint()).items():
        (d / name).write_bytes(data)
    for case, files in idx_dirs().items():
        d = CORPUS / "idx" / case
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
    for name, data in hostile_misc().items():
        (CORPUS / "misc" / name).parent.mkdir(parents=True, exist_ok=True)
        (CORPUS / "misc" / name).write_bytes(data)
    d = CORPUS / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in onnx_files().items():
        (d / name).write_bytes(data)


if __name__ == "__main__":
    main()
