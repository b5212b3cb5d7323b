"""``ttforge build --train STATE``: argument and fit errors are one line, exit status 2, with
nothing written and no toolchain run; the memory check counts exactly the memories the
training engine declares; and (slow: synthesis, placement and routing take 10-30 minutes,
``pytest -m slow tests/firmware/test_build_train.py``) a real ULX3S training bitstream."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from argparse import Namespace
from pathlib import Path

import pytest

from ttforge.cli import main


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """The default digits network of ``ttforge train-int`` (64 -> TT 64 -> 10), as a state file."""
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers
    from ttforge.ir.train_state import save_state

    cfg = TrainConfig()
    a = Namespace(hidden=None, cores=None, ranks=None, in_modes=None, out_modes=None)
    st = init_state(tt_layers(a, 64, 10, True), cfg, seed=0, lr_shift=7, in_exp=-(cfg.act_bits - 1))
    path = tmp_path_factory.mktemp("st") / "state.ttts"
    save_state(st.replace(meta={"batch": 16}), path)
    return path


@pytest.fixture
def no_toolchain(monkeypatch):
    """Any attempt to run the toolchain fails the test: every error must come before it."""
    import ttforge.firmware.build as fb

    def boom(*a, **k):
        raise AssertionError("the toolchain was reached")
    monkeypatch.setattr(fb, "toolchain_env", boom)


@pytest.mark.parametrize("extra, match", [
    (["--board", "ulx3s", "--batch", "4", "--config", "x.json"], "--batch is for --train STATE"),
    (["--board", "ulx3s", "--train", "{state}", "x.ttfa"], "drop ARTIFACT and --config"),
    (["--board", "ulx3s", "--train", "{state}", "--config", "c.json"], "drop ARTIFACT and --config"),
    (["--board", "ulx3s", "--train", "{state}", "--lanes", "3"], "--lanes 3 must be a power of two"),
    (["--board", "ulx3s", "--train", "{state}", "--lanes", "128"], "--lanes 128 must be an integer in 1..64"),
    (["--board", "ulx3s", "--train", "{state}", "--batch", "0"], "--batch 0 must be an integer in 1..4096"),
    (["--board", "ulx3s", "--train", "{state}", "--batch", "99999999"], "--batch 99999999 must be"),
    (["--board", "ulx3s", "--train", "{state}", "--freq", "33"], "--freq 33 MHz is not available"),
    (["--board", "ulx3s", "--train", "{tmp}/missing.ttts"], "does not exist; give the path of a training state"),
    (["--board", "ulx3s", "--train", "{tmp}/garbage.ttts"], "garbage.ttts"),
    (["--board", "ulx3s", "--train", "{tmp}"], "is a directory; give the state file"),
    (["--board", "icebreaker", "--train", "{state}", "--batch", "4"],
     "does not fit: the training engine's memories need "),
    (["--board", "icebreaker", "--train", "{state}", "--lanes", "16"],
     "the iCE40UP5K-SG48 (iCEBreaker) has 120 kbit of block RAM; use a smaller --batch, fewer --lanes"),
])
def test_bad_arguments_are_one_line_and_write_nothing(capsys, tmp_path, state, no_toolchain, extra, match):
    (tmp_path / "garbage.ttts").write_bytes(b"not a state")
    out = tmp_path / "out"
    argv = ["build", *[a.format(state=state, tmp=tmp_path) for a in extra], "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err, err
    assert not out.exists()


@pytest.mark.parametrize("batch", ["abc", 1.5, True, 0, 5000])
def test_a_bad_batch_in_the_states_record_is_one_line(capsys, tmp_path, state, no_toolchain, batch):
    """Without --batch the state's meta batch is used: it is the run's record, which the
    loader does not check ("abc" was exit 70, 1.5 built for a batch of 1)."""
    from ttforge.ir.train_state import load_state, save_state

    st = load_state(state)
    bad = save_state(st.replace(meta={**st.meta, "batch": batch}), tmp_path / "bad.ttts")
    out = tmp_path / "out"
    assert main(["build", "--board", "ulx3s", "--train", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the state's meta batch=" in err and "--batch" in err, err
    assert not out.exists()


def test_the_output_is_never_the_state_it_reads(capsys, state, no_toolchain):
    assert main(["build", "--board", "ulx3s", "--train", str(state), "-o", str(state.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-o" in err, err
    assert state.is_file()


def test_a_state_that_fits_reaches_the_toolchain(capsys, tmp_path, state, no_toolchain):
    """The sibling of the misfits above: the same state at batch 1 passes every check (the
    toolchain stub is reached), so the errors come from the arguments, not the state."""
    main(["build", "--board", "icebreaker", "--train", str(state), "--batch", "1", "-o", str(tmp_path / "out")])
    assert "the toolchain was reached" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lanes, batch", [(1, 1), (4, 16), (16, 16)])
def test_memory_parts_are_the_memories_the_engine_declares(state, monkeypatch, lanes, batch):
    """Every ``lib.memory.Memory`` the elaborated training engine creates, in bits, is one
    of ``memory_parts`` (no memory missed, none counted that is not there); ACT is
    ``act_groups(lanes)`` memories of an equal share of its bits."""
    from amaranth.hdl import Fragment, Shape
    from amaranth.lib import memory

    from ttforge.firmware.build import memory_parts
    from ttforge.hw.trainer.engine import TrainEngine, act_groups
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.ir.train_state import load_state

    declared = []
    init = memory.Memory.__init__

    def record(self, *, shape, depth, **kw):
        declared.append(Shape.cast(shape).width * depth)
        init(self, shape=shape, depth=depth, **kw)
    monkeypatch.setattr(memory.Memory, "__init__", record)
    cfg = fit_engine(load_state(state), batch, lanes)
    Fragment.get(TrainEngine(cfg), None)
    parts = memory_parts(cfg)
    g = act_groups(lanes)
    expected = [v for k, v in parts.items() if k != "act"] + [parts["act"] // g] * g
    assert sorted(declared) == sorted(expected)


@pytest.mark.slow
def test_ulx3s_digits_training_bitstream(state, tmp_path, capsys):
    """Four lanes at 25 MHz (the 16-lane engine misses the 50 MHz default: docs/boards.md,
    "Training bitstreams"); the output holds the bitstream, its manifest and the training
    register map of exactly the engine that was built."""
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.hw.trainer.regmap import train_register_map
    from ttforge.hw.trainer.verilog import train_regmap_files
    from ttforge.ir.train_state import load_state

    out = tmp_path / "b"
    assert main(["build", "--board", "ulx3s", "--train", str(state), "--batch", "16", "--lanes", "4",
                 "--freq", "25", "-o", str(out)]) == 0, capsys.readouterr().err
    man = json.loads((out / "build.json").read_text())
    bit = out / man["bitstream"]["file"]
    assert hashlib.sha256(bit.read_bytes()).hexdigest() == man["bitstream"]["sha256"]
    assert man["timing_met"] and man["fmax_mhz"] >= 25 and man["clock_hz"] == 25_000_000
    cfg = fit_engine(load_state(state), 16, 4)
    assert man["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert man["train"]["batch"] == 16 and man["train"]["lanes"] == 4
    regmap = train_register_map(cfg)
    for name, want in train_regmap_files(regmap).items():
        data = (out / name).read_bytes()
        assert data == want
        assert man["files"][name] == hashlib.sha256(data).hexdigest()
    assert man["resources"]["bram"]["used"] >= 1 and man["resources"]["dsp"]["used"] >= 4


class _Stop(Exception):
    """Raised by the stand-in for Amaranth's platform build: the script was seen."""


@pytest.mark.parametrize("engines,rr", [(4, 2), (2, 0), (1, 2)])
def test_an_engine_array_on_the_ulx3s_is_floorplanned(engines, rr, artifact, tmp_path, monkeypatch):
    """``ttforge build --board ulx3s`` of an engine array (``engines > 1``; the ULX3S's
    ECP5-85F) places the netlist freely with the platform's own nextpnr command, then
    floorplans it (``python -m ttforge.hw.ecp5_floorplan``) before the real nextpnr;
    ``read_registers = 2`` folds the block RAMs' output registers first. One engine is
    not floorplanned."""
    import json

    from amaranth.build.plat import Platform

    import ttforge.firmware.build as fb
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.artifact import load_artifact

    seen = {}

    def fake_build(self, top, **kw):
        seen["templates"] = list(self.command_templates)
        raise _Stop

    net = load_artifact(artifact / "small.ttfa")
    cfg = AccelConfig.for_network(net, lanes=4)
    conf = tmp_path / "cfg.json"
    conf.write_text(json.dumps({**cfg.to_dict(), "engines": engines, "read_registers": rr}))
    monkeypatch.setattr(fb, "toolchain_env", lambda family: {})
    monkeypatch.setattr(Platform, "build", fake_build)
    with pytest.raises(_Stop):
        fb.build("ulx3s", tmp_path / "out", artifact=artifact / "small.ttfa", config_file=str(conf))
    steps = [" ".join(t.split()) for t in seen["templates"]]
    kinds = ["yosys" if "yosys" in t else "fold" if "ecp5_bram" in t else "plan" if "ecp5_floorplan" in t
             else "free" if "--no-route" in t else "pnr" if "nextpnr" in t else "pack" for t in steps]
    want = ["yosys"] + (["fold"] if rr > 1 else []) + (["free", "plan"] if engines > 1 else []) + ["pnr", "pack"]
    assert kinds == want
    if engines > 1:
        free, pnr = steps[kinds.index("free")], steps[kinds.index("pnr")]
        assert "--write {{name}}.free.json" in free and "--textcfg" not in free
        # the same nextpnr command but for its log, its output and the routing
        assert free.replace("--log {{name}}.free.tim", "--log {{name}}.tim").replace(
            "--no-route --write {{name}}.free.json", "--textcfg {{name}}.config") == pnr


@pytest.mark.parametrize("board_key", ["ulx3s", "icebreaker"])
@pytest.mark.parametrize("kind", ["inference", "train"])
def test_board_builds_keep_the_register_copies_apart(kind, board_key, state, artifact, tmp_path,
                                                    monkeypatch):
    """``ttforge build`` synthesizes ECP5 boards with the FANOUT_KEEP commands, as every
    measured synthesis there does: without them Yosys merges the engine's register copies
    back into one (tests/hw/test_synth_options.py), and a board top would lose what the
    copies gain. Not on the iCE40, whose logic cells are the limit."""
    from amaranth.build.plat import Platform

    import ttforge.firmware.build as fb
    from ttforge.hw.synth import FANOUT_KEEP

    seen = {}

    def fake_build(self, top, **kw):
        seen.update(kw)
        seen["templates"] = list(self.command_templates)
        raise _Stop

    monkeypatch.setattr(fb, "toolchain_env", lambda family: {})
    monkeypatch.setattr(Platform, "build", fake_build)
    kw = {"train": state, "batch": 1} if kind == "train" else {"artifact": artifact / "small.ttfa"}
    with pytest.raises(_Stop):
        fb.build(board_key, tmp_path / "out", **kw)
    lines = seen["script_after_read"].splitlines()
    # on the ECP5 only: the iCE40 is bound by its logic cells
    assert (lines[:len(FANOUT_KEEP)] == list(FANOUT_KEEP)) == (board_key == "ulx3s")
    # the iCE40's single-port buffers still go to SPRAM after them
    assert ("-spram" in seen.get("synth_opts", "")) == any("spram" in x.lower() for x in lines)
    # the training engine on the ECP5 folds its block RAMs' output registers between
    # Yosys and nextpnr (and nothing else does)
    steps = seen["templates"]
    folds = [k for k, t in enumerate(steps) if "-m ttforge.hw.ecp5_bram" in t]
    assert folds == ([1] if (kind, board_key) == ("train", "ulx3s") else [])
    if folds:
        assert "yosys" in steps[0] and "nextpnr" in steps[2]


def test_a_relative_keep_directory_names_the_toolchain_script_absolutely(artifact, tmp_path, monkeypatch):
    """The build script sources the toolchain script from inside ``KEEP/build``: a
    relative ``--keep K`` named ``K/toolchain.sh`` and every placer seed failed."""
    from amaranth.build.plat import Platform

    import ttforge.firmware.build as fb

    seen = {}

    def fake_build(self, top, **kw):
        seen.update({k: v for k, v in os.environ.items() if k.startswith("AMARANTH_ENV_")})
        raise _Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fb, "toolchain_env", lambda family: {})
    monkeypatch.setattr(Platform, "build", fake_build)
    with pytest.raises(_Stop):
        fb.build("icebreaker", "out", artifact=artifact / "small.ttfa", keep="K")
    assert seen and all(v == str(tmp_path / "K" / "toolchain.sh") for v in seen.values())
    assert (tmp_path / "K" / "toolchain.sh").is_file()


def test_the_generated_build_script_runs_from_a_venv_path_with_spaces_quotes_and_dollars(
        artifact, tmp_path, monkeypatch):
    """``ttforge build`` wrote this interpreter's path into the build script's commands
    (``"/my venv/bin/python" -m ttforge.hw.ecp5_bram ...``), through Jinja, Amaranth's
    whitespace folding and the shell, and the tools' paths into ``toolchain.sh`` in bare
    single quotes: a venv under ``my  venv $HOME "q" 'x'`` replayed another command. The
    script generated here is run whole, with stand-ins for the tools and the
    interpreter, and the fold step gets its arguments."""
    import json
    import subprocess
    import sys

    from amaranth.build.plat import Platform

    import ttforge.firmware.build as fb
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.artifact import load_artifact

    odd = tmp_path / "my  venv $HOME \"q\" 'x'" / "bin"
    odd.mkdir(parents=True)
    python, tool = odd / "python", odd / "it's a tool"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv.txt"\n')
    tool.write_text("#!/bin/sh\nexit 0\n")
    for f in (python, tool):
        f.chmod(0o755)
    plan_dir = tmp_path / "plan"
    seen = {}

    def prepare_only(self, top, name="top", build_dir="build", do_build=True, **kw):
        # the script Amaranth would run, and the toolchain.sh it sources, kept for the replay
        self.prepare(top, name, **kw).extract(plan_dir)
        seen["name"], seen["var"] = name, self._toolchain_env_var
        seen["env"] = Path(os.environ[self._toolchain_env_var]).read_text()
        raise _Stop

    net = load_artifact(artifact / "small.ttfa")
    conf = tmp_path / "cfg.json"
    conf.write_text(json.dumps({**AccelConfig.for_network(net, lanes=4).to_dict(), "read_registers": 2}))
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(fb, "toolchain_env", lambda family: {v: str(tool) for v in fb._FAMILY_TOOLS[family]})
    monkeypatch.setattr(Platform, "build", prepare_only)
    with pytest.raises(_Stop):
        fb.build("ulx3s", tmp_path / "out", artifact=artifact / "small.ttfa", config_file=str(conf))
    script = (plan_dir / f"build_{seen['name']}.sh").read_text()
    assert "ecp5_bram" in script and str(python) not in script
    (tmp_path / "toolchain.sh").write_text(seen["env"])
    env = {k: v for k, v in os.environ.items() if k not in (fb.PYTHON_VAR, *fb._TOOLS)}
    run = subprocess.run(["sh", f"build_{seen['name']}.sh"], cwd=plan_dir, capture_output=True, text=True,
                         env={**env, seen["var"]: str(tmp_path / "toolchain.sh")}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (odd / "argv.txt").read_text().splitlines() == [
        "-m", "ttforge.hw.ecp5_bram", f"{seen['name']}.json", "--report", f"{seen['name']}.fold.json"]


@pytest.mark.parametrize("board_key", ["ulx3s", "icebreaker"])
def test_a_board_build_names_no_path_of_this_install(board_key, artifact, tmp_path, monkeypatch):
    """The design a board build hands the toolchain carries no ``src`` attribute naming
    ttforge's Python files: they reached ``nextpnr.log`` and ``pnr_report.json`` (and so
    ``build.json``'s digests of them) as this install's absolute paths."""
    from amaranth.build.plat import Platform

    import ttforge.firmware.build as fb

    plan_dir = tmp_path / "plan"

    def prepare_only(self, top, name="top", build_dir="build", do_build=True, **kw):
        self.prepare(top, name, **kw).extract(plan_dir)
        raise _Stop

    monkeypatch.setattr(fb, "toolchain_env", lambda family: {})
    monkeypatch.setattr(Platform, "build", prepare_only)
    with pytest.raises(_Stop):
        fb.build(board_key, tmp_path / "out", artifact=artifact / "small.ttfa")
    root = str(Path(fb.__file__).resolve().parent.parent)
    texts = {f.name: f.read_text(errors="replace") for f in plan_dir.iterdir() if f.is_file()}
    assert any(f.endswith(".il") for f in texts), sorted(texts)
    assert [f for f, t in texts.items() if root in t] == []
