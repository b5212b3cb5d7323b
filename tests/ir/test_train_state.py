"""The training-state file (versioned, hashed, atomic, checked on load), export of an
inference artifact from any state, reproducibility across processes, hash seeds and
thread counts, and `ttforge inspect` of a state."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from ttforge.errors import ArtifactError
from ttforge.ir import ContractionSchedule, TTShape, execute, load_artifact, save_artifact
from ttforge.ir.train import (TrainConfig, calibrate_state, export_network, init_state, train_step,
                              train_step_fast)
from ttforge.ir.train_diverge import compare_states, replay
from ttforge.ir.train_state import dumps_state, load_state, loads_state, save_state

from tests.support.train_cases import digits_train_state


def _state(seed=0, steps=2):
    s1 = ContractionSchedule.optimal(TTShape((4, 4, 2), (4, 2, 4), 3))
    s2 = ContractionSchedule(TTShape((6,), (32,), (1, 1)), (0,))
    st = init_state([(30, 32, s1), (32, 6, s2)], TrainConfig(), seed=seed, lr_shift=5)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 128, size=(8, 30))
    y = rng.integers(0, 6, size=8)
    st = calibrate_state(st, x, y)
    for _ in range(steps):
        st, _ = train_step_fast(st, x, y)
    return st, x, y


def test_round_trip_is_exact_and_deterministic(tmp_path):
    st, x, y = _state()
    p = save_state(st, tmp_path / "s.ttts")
    back = load_state(p)
    assert compare_states(st, back) is None
    assert dumps_state(back) == dumps_state(st) == p.read_bytes()
    # the loaded state trains on exactly like the original
    assert compare_states(train_step(st, x, y), train_step(back, x, y)) is None


def test_round_trip_sibling_one_changed_element_is_named(tmp_path):
    st, _, _ = _state()
    back = load_state(save_state(st, tmp_path / "s.ttts"))
    m = list(back.layers[1].masters)
    m[0] = m[0].copy()
    m[0].flat[7] += 1 if m[0].flat[7] < 100 else -1
    bad = back.replace(layers=(back.layers[0], back.layers[1].__class__(**{**back.layers[1].__dict__,
                                                                          "masters": tuple(m)})))
    d = compare_states(st, bad)
    assert d is not None and (d.layer, d.core, d.element) == (1, 0, 7) and d.phase == "update"
    assert "layer 1" in d.describe() and "element 7" in d.describe()


def _rewrite(data: bytes, fn, reseal: bool = True) -> bytes:
    """The state re-zipped after ``fn(manifest, payload)`` (ZIP CRCs right); ``reseal``:
    its manifest_sha256 recomputed too, so the check of the field edited is reached."""
    from ttforge.ir.train_state import MANIFEST_SHA256, manifest_sha256

    zin = zipfile.ZipFile(io.BytesIO(data))
    man = json.loads(zin.read("manifest.json"))
    pay = zin.read("tensors.bin")
    man, pay = fn(man, pay)
    if reseal and MANIFEST_SHA256 in man:
        man = {**man, MANIFEST_SHA256: manifest_sha256(man)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", json.dumps(man))
        z.writestr("tensors.bin", pay)
    return buf.getvalue()


@pytest.mark.parametrize("damage, message", [
    (lambda m, p: (m, p[:-1] + bytes([p[-1] ^ 1])), "sha256"),
    (lambda m, p: ({**m, "format_version": 99}, p), "newer ttforge"),
    (lambda m, p: ({**m, "format": "ttforge-artifact"}, p), "inference artifact"),
    (lambda m, p: ({**m, "lr_shift": 99}, p), "lr_shift"),
    (lambda m, p: ({**m, "rng": {"generator": "xorshift32", "state": 0}}, p), "rng.state"),
    (lambda m, p: ({**m, "config": {**m["config"], "w_bits": 1}}, p), "w_bits"),
    (lambda m, p: ({**m, "layers": [{**m["layers"][0], "step_exps": [0]}, m["layers"][1]]}, p), "step_exps"),
])
def test_damaged_states_are_one_line(damage, message):
    st, _, _ = _state()
    bad = _rewrite(dumps_state(st), damage)
    with pytest.raises(ArtifactError, match=message) as e:
        loads_state(bad, "x.ttts")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.ttts")


@pytest.mark.parametrize("edit", [
    lambda m: {**m, "meta": {**m["meta"], "data": "/etc/passwd"}},
    lambda m: {**m, "meta": {**m["meta"], "unknown": 1}},
    lambda m: {**m, "counters": {**m["counters"], "step": 5}},
    lambda m: {**m, "layers": [{**m["layers"][0], "bias_exp": 1000}, *m["layers"][1:]]},
    lambda m: {**m, "layers": [{**m["layers"][0], "grad_exps": [1000] * len(m["layers"][0]["grad_exps"])},
                               *m["layers"][1:]]},
], ids=["meta.data", "meta.unknown", "counters.step", "bias_exp", "grad_exps"])
def test_an_edited_manifest_is_refused_in_one_line(edit):
    """A manifest edited and re-zipped (its ZIP CRC-32 right) loaded as the state's own: a
    forged meta, a step counter that lies, a bias exponent of 1000 (probe M5)."""
    st, _, _ = _state()
    st = st.replace(meta={"data": "digits", "seed": 0})
    bad = _rewrite(dumps_state(st), lambda m, p: (edit(m), p), reseal=False)
    with pytest.raises(ArtifactError, match="manifest.json does not match its manifest_sha256") as e:
        loads_state(bad, "x.ttts")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.ttts: is corrupt")


def test_a_state_written_before_the_manifest_checksum_still_loads():
    """Sibling: what the current code writes loads, and a state of before (no
    manifest_sha256, its layout another) loads as the same state."""
    st, _, _ = _state()
    st = st.replace(meta={"data": "digits", "seed": 0})
    data = dumps_state(st)
    assert json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["manifest_sha256"]
    old = _rewrite(data, lambda m, p: ({k: v for k, v in m.items() if k != "manifest_sha256"}, p))
    assert dumps_state(loads_state(old, "old.ttts")) == data == dumps_state(loads_state(data, "x.ttts"))


def test_truncated_and_foreign_files_are_one_line(tmp_path):
    st, _, _ = _state()
    data = dumps_state(st)
    for bad, msg in ((data[: len(data) // 2], "truncated|damaged"), (b"", "empty"), (b"hello", "ZIP")):
        with pytest.raises(ArtifactError, match=msg):
            loads_state(bad, "s.ttts")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_state(tmp_path / "nope.ttts")


def test_an_artifact_exported_from_any_state_runs_its_forward_pass(tmp_path):
    st, x, y = _state(steps=3)
    p = save_artifact(export_network(st), tmp_path / "m.ttfa")
    net = load_artifact(p)
    from ttforge.ir.train import train_step_traced

    _, tr = train_step_traced(st, x, y)
    logits = [r.value for r in tr.records if r.phase == "forward" and r.name == "output"][-1]
    assert np.array_equal(execute(net, x), logits)
    assert not np.array_equal(execute(net, x), logits + (np.arange(logits.size).reshape(logits.shape) == 0))


_REPRO = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from ir.test_train_state import _state
    from ttforge.ir.train import train_step, train_step_fast
    from ttforge.ir.train_state import dumps_state
    st, x, y = _state(seed=int(sys.argv[1]), steps=0)
    for i in range(4):
        st = train_step_fast(st, x, y)[0] if i % 2 else train_step(st, x, y)
    print(hashlib.sha256(dumps_state(st)).hexdigest())
""")


def _hash(seed: int, hashseed: str, threads: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "OMP_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _REPRO.format(tests=tests), str(seed)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_same_seed_same_bytes_across_hash_seeds_and_threads():
    hashes = {_hash(3, h, t) for h, t in (("0", "1"), ("12345", "2"), ("random", "1"))}
    assert len(hashes) == 1
    assert _hash(4, "0", "1") not in hashes  # sibling: another seed gives other bytes


def test_replay_golden_vs_fast_over_many_steps_and_a_named_divergence():
    st, x, y = _state(steps=0)
    rng = np.random.default_rng(9)
    batches = [(rng.integers(0, 128, size=(8, 30)), rng.integers(0, 6, size=8)) for _ in range(12)]
    n, m = replay(st, batches)
    assert (n, m) == (12, None)

    from ttforge.ir.train import train_step_traced

    def broken(s, a, b):  # a fault in the fast path: one gradient element off by one at step 5
        new, tr = train_step_traced(s, a, b, fast=True)
        if s.step == 5:
            rec = next(r for r in tr.records if r.phase == "gradient" and r.layer == 0)
            rec.value.flat[2] += 1
        return new, tr

    n, m = replay(st, batches, got=broken)
    assert n == 6 and m is not None and m.step == 5 and m.phase == "gradient" and m.layer == 0
    assert m.element == 2


def test_inspect_shows_a_state(tmp_path, capsys):
    from ttforge.cli import main

    st, _, _ = _state()
    p = save_state(st, tmp_path / "s.ttts")
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "ttforge-train-state" in out and "step 2" in out and "FP32 dense + Adam" in out
    assert main(["inspect", "--json", str(p)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 2 and info["words"] == st.words and len(info["layers"]) == 2


def test_inspect_states_the_ratio_against_fp32_dense_adam_for_a_stated_batch(tmp_path, capsys):
    """`ttforge inspect STATE [--batch B]`: the training memory and its ratio against FP32
    dense training with Adam of the same layer sizes, at the stated batch (default: the
    batch the state was trained with, else 32); the batch really changes the figure."""
    from ttforge.cli import main
    from ttforge.ir.train_memory import fp32_dense_adam_bytes, ratio_words, training_memory
    from ttforge.ir.train_state import INSPECT_LANES

    st, _, _ = _state()
    plain = save_state(st, tmp_path / "s.ttts")
    trained = save_state(st.replace(meta={"batch": 64}), tmp_path / "t.ttts")
    for path, argv, batch, src in ((plain, [], 32, "default"), (trained, [], 64, "state"),
                                   (trained, ["--batch", "8"], 8, "--batch")):
        assert main(["inspect", "--json", *argv, str(path)]) == 0
        mem = json.loads(capsys.readouterr().out)["memory"]
        ref = training_memory(st, batch, INSPECT_LANES)
        base = fp32_dense_adam_bytes([30, 32, 6], batch)["total"]
        assert (mem["batch"], mem["batch_from"]) == (batch, src)
        assert mem["fp32_dense_adam"]["total"] == base and mem["items"] == ref["items"]
        assert mem["ratio"] == base / ref["items"]["total"] == ref["ratio"]
        assert main(["inspect", *argv, str(path)]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"training memory at batch {batch} (" in text and "counted bit-packed" in text
        assert (f"{ref['items']['total']:,} bytes against {base:,} for FP32 dense training with Adam of the "
                f"same sizes (30-32-6), {ratio_words(ref['ratio'])}") in text
    assert training_memory(st, 8)["ratio"] != training_memory(st, 64)["ratio"]


@pytest.mark.parametrize("lanes", [None, 16])
def test_inspect_says_fits_only_of_the_engine_ttforge_builds(tmp_path, capsys, lanes):
    """Inspect said the state "fits the ECP5-85F's 479,232 bytes of block RAM (up to batch
    216)" by the bit-packed count; the engine generate/build --train make at batch 216 has
    256 slots, 807,008 bytes, and build refuses it. The figure, the fit and the largest
    batch are now fit_engine's memories under build's memory_misfit."""
    from ttforge.cli import main
    from ttforge.firmware.build import memory_misfit, memory_parts
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.ir.train_state import INSPECT_LANES

    p = save_state(digits_train_state(), tmp_path / "s.ttts")
    argv = ["inspect", str(p), "--batch", "216"] + ([] if lanes is None else ["--lanes", str(lanes)])
    assert main(argv + ["--json"]) == 0
    mem = json.loads(capsys.readouterr().out)["memory"]
    L = INSPECT_LANES if lanes is None else lanes
    assert mem["lanes"] == L
    eng = mem["engine"]
    cfg = fit_engine(load_state(p), 216, L)
    assert eng["bits"] == sum(memory_parts(cfg).values()) and eng["slots"] == 256
    assert eng["misfit"] == memory_misfit(cfg, "ecp5-85f") is not None
    largest = max(b for b in range(1, 257) if memory_misfit(fit_engine(load_state(p), b, L), "ecp5-85f") is None)
    assert eng["max_batch"] == largest < 216
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "up to batch 216" not in text and "fits the ECP5-85F's" not in text
    assert f"{eng['bytes']:,} bytes" in text and "does not fit the ECP5-85F" in text
    assert f"the largest batch whose engine fits the ECP5-85F: {largest}" in text
    assert main(["inspect", str(p), "--batch", str(largest)] + argv[4:]) == 0
    assert "fits the ECP5-85F's 479,232 bytes of block RAM" in " ".join(capsys.readouterr().out.split())


def test_inspect_says_more_where_the_ratio_is_below_one(tmp_path, capsys):
    """At batch 216 the bit-packed count of the digits network is 1.8x FP32 dense
    training's: it read "0.5x less"."""
    from ttforge.cli import main
    from ttforge.ir.train_memory import training_memory
    from ttforge.ir.train_state import INSPECT_LANES

    st = digits_train_state()
    ref = training_memory(st, 216, INSPECT_LANES)
    assert ref["ratio"] < 1
    assert main(["inspect", str(save_state(st, tmp_path / "s.ttts")), "--batch", "216"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(64-64-10), {1 / ref['ratio']:.1f}x more;" in text and "0.5x less" not in text
    assert "x less" in text   # the state alone (weights and optimizer) is still smaller


@pytest.mark.parametrize("ratio, words", [(1, "no less"), (104_096 / 100_000, "1.04x less"),
                                          (100_000 / 103_000, "1.03x more"), (1.4, "1.4x less"),
                                          (0.55, "1.8x more")])
def test_a_ratio_near_one_says_which_way(ratio, words):
    """Equal bytes read "1.0x less" (the digits engine at batch 32 holds exactly FP32
    dense training's 104,096 bytes; review V7), 0.97 "1.0x more"."""
    from ttforge.ir.train_memory import ratio_words

    assert ratio_words(ratio) == words


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch=0 must be in 1..1,048,576"),
    (["--batch", str(1 << 21)], "--batch=2097152 must be in 1..1,048,576"),
])
def test_inspect_batch_is_bounded_one_line(tmp_path, capsys, argv, message):
    from ttforge.cli import main

    st, _, _ = _state()
    p = save_state(st, tmp_path / "s.ttts")
    art = save_artifact(export_network(st), tmp_path / "m.ttfa")
    for path in (p, art):
        assert main(["inspect", *argv, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert main(["inspect", "--batch", "4", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch is for a training state (.ttts)" in err[0]
    assert main(["inspect", "--lanes", "4", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lanes is for a training state (.ttts)" in err[0]
    assert main(["inspect", "--lanes", "3", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lanes=3 must be a power of two in 1..64" in err[0]


def test_load_state_names_a_path_with_a_newline_on_one_line(tmp_path):
    """It put the path raw into the message (two lines); load_artifact quoted it (show_path)."""
    d = tmp_path / "run\nA"
    d.mkdir()
    with pytest.raises(ArtifactError) as e:
        load_state(d)
    assert len(str(e.value).splitlines()) == 1 and "is a directory" in str(e.value)
    assert repr(str(d)) in str(e.value)


def test_inspect_batch_names_an_artifact_path_as_load_artifact_does(tmp_path, capsys):
    """``inspect --batch`` of an artifact printed its path raw (a newline escaped, but not
    quoted as every other message naming a path is: show_path)."""
    from ttforge.cli import main
    from ttforge.errors import show_path

    st, _, _ = _state()
    art = save_artifact(export_network(st), tmp_path / "m\nA.ttfa")
    assert main(["inspect", "--batch", "4", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{show_path(art)} is an inference artifact" in err[0]


@pytest.mark.parametrize("flag", [["--lanes", "4"], ["--batch", "4"]])
def test_inspect_with_a_state_s_flag_of_a_fifo_says_what_the_path_is(tmp_path, capsys, flag):
    """``inspect FIFO --lanes 4`` called the FIFO "an inference artifact": the path is read
    (and refused as what it is) before the flag is."""
    import os

    from ttforge.cli import main

    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    assert main(["inspect", str(fifo), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FIFO" in err[0] and "inference artifact" not in err[0], err
