"""Host driver -> simulated UART -> board-top RTL (Icarus, cocotb + cocotbext-uart) ->
results exactly equal to the golden executor; a flipped core bit in the device's memory
must disagree; an engine error is reported in one line, not a hang. One simulator for
the module (about 30 s in all)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")

from ttforge.firmware.host import DeviceError  # noqa: E402
from ttforge.hw.config import AccelConfig  # noqa: E402
from ttforge.hw.regmap import RegisterMap  # noqa: E402
from ttforge.ir.executor import execute  # noqa: E402
from ttforge.quant.qat import compile_network  # noqa: E402

from tests.support.nets import small_net  # noqa: E402

N_VEC = 4


@pytest.fixture(scope="module")
def simboard_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("simboard")


@pytest.fixture(scope="module")
def setup(simboard_dir):
    from ttforge.firmware.simulate import simulated_device

    q, x = small_net()
    net = compile_network(q)
    xi = net.quantize_input(x.numpy())[:N_VEC]
    cfg = AccelConfig.for_network(net, lanes=4, stream_elems=2)
    # a user's values of the simulation's own variables must not reach it (the runner let
    # the process environment override them: a divisor of 0 stopped the simulator)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"TTFORGE_UART_DIVISOR": "0", "TTFORGE_CLK_NS": "nan", "TTFORGE_UART_SOCKET": "/x"}.items():
            mp.setenv(k, v)
        dev = simulated_device(cfg, build_dir=simboard_dir, timeout=120)
    try:
        dev.load(net)
        yield dev, net, xi, cfg
    finally:
        dev.close()


def test_a_bad_poll_interval_is_one_line_before_the_simulator(monkeypatch, tmp_path):
    """$TTFORGE_UART_POLL (a benchmark's knob, read inside the simulator) out of range:
    a ConfigError naming it, before anything is built (it was a "board went away")."""
    from ttforge.errors import ConfigError
    from ttforge.firmware.simulate import SimTransport

    for bad in ("0", "\u00b2"):   # '²' is a digit to str.isdigit, not to int() (exit 70)
        monkeypatch.setenv("TTFORGE_UART_POLL", bad)
        with pytest.raises(ConfigError, match=r"\$TTFORGE_UART_POLL='.*' must be an integer in 1\.\.1,048,576"):
            SimTransport(AccelConfig(lanes=2), build_dir=tmp_path)
        assert list(tmp_path.iterdir()) == []


def test_the_runner_sees_no_value_of_a_runs_own_variables(monkeypatch):
    """The cocotb runner lets the process environment override a run's extra_env: the
    names a run passes are hidden from it for the run (a user's TTFORGE_SIM_JOB would
    have pointed the testbench at another job), and restored after."""
    from ttforge.sim.runner import runner_env

    monkeypatch.setenv("TTFORGE_SIM_JOB", "/somewhere/else")
    with runner_env("icarus", own={"TTFORGE_SIM_JOB": "/the/job"}):
        assert "TTFORGE_SIM_JOB" not in os.environ
    assert os.environ["TTFORGE_SIM_JOB"] == "/somewhere/else"


def _board(simboard_dir):
    from ttforge.firmware.simulate import simulated_device

    q, _ = small_net()
    net = compile_network(q)
    return simulated_device(AccelConfig.for_network(net, lanes=4, stream_elems=2), build_dir=simboard_dir,
                            timeout=120)


def test_boards_open_at_once_give_the_runners_logger_back(simboard_dir):
    """Two boards open at once, closed in the order they were opened: the second had
    saved the first's propagate=False and put it back last, so cocotb's runner logger
    stayed silent for good. (Before the module's board is opened: no other board.)"""
    from cocotb_tools.runner import get_runner

    lg = get_runner("icarus").log
    before = (lg.propagate, list(lg.handlers))
    a = _board(simboard_dir)
    b = _board(simboard_dir)
    assert lg.propagate is False
    a.close()
    assert lg.propagate is False          # b still quiets it
    b.close()
    assert (lg.propagate, list(lg.handlers)) == before


def test_a_board_never_closed_ends_when_it_is_collected(simboard_dir):
    """Dropped without close(): its simulator, thread, sockets, socket directory and
    log handler stayed until the interpreter exited. Collected, it is closed, with a
    ResourceWarning (as an unclosed file)."""
    import gc
    import threading
    import warnings

    from cocotb_tools.runner import get_runner

    lg = get_runner("icarus").log
    before = (lg.propagate, list(lg.handlers))
    dev = _board(simboard_dir)
    assert dev.read32(0) == 0x54544647
    sockdir, thread = dev.t._sockdir, dev.t._thread
    assert os.path.isdir(sockdir) and thread.is_alive()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del dev
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "unclosed simulated board" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    thread.join(30)
    assert not thread.is_alive() and not os.path.exists(sockdir)
    assert (lg.propagate, list(lg.handlers)) == before
    assert "ttforge-simboard" not in [t.name for t in threading.enumerate()]


def test_an_unclosed_board_is_released_even_where_the_warning_is_an_error(tmp_path):
    """With ResourceWarning an error (``-W error``, pytest's ``-W error``) the finalizer's
    warning raised before the release: nothing was released, the finalizer then spent.
    A forked child's exit releases nothing of its parent's board."""
    import warnings

    from ttforge.firmware import simulate

    def held(name):
        h = simulate._Held()
        h.sockdir = str(tmp_path / name)
        os.mkdir(h.sockdir)
        return h

    h = held("ttf-uart-a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ResourceWarning, match="unclosed simulated board"):
            simulate._collected(h, "simulated board")
    assert not os.path.exists(h.sockdir)
    h = held("ttf-uart-b")
    h.pid = os.getpid() + 1     # as seen in a child forked while the board was open
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate._collected(h, "simulated board")
    assert os.path.isdir(h.sockdir)


def test_host_driver_on_simulated_board_equals_golden(setup):
    dev, net, xi, cfg = setup
    got = dev.infer(xi)
    assert got.dtype == np.int64
    assert np.array_equal(got, execute(net, xi))
    c = dev.counters()
    assert c["vectors"] >= N_VEC and c["cycles"] > 0 and c["busy_lane_cycles"] > 0
    e = dev.errors()
    assert not e["error"] and e["code"] == "NONE" and e["bad_frames"] == 0


def test_flipped_core_bit_in_device_memory_disagrees(setup):
    dev, net, xi, cfg = setup
    rm = RegisterMap(cfg)
    cm = rm.window("CMEM")
    prog = dev.program
    k = int(np.flatnonzero(np.asarray(prog.cmem))[0])
    orig = int(prog.cmem[k]) & 0xFFFFFFFF
    try:
        dev.write32(cm.base + 4 * k, orig ^ (1 << (cfg.core_bits - 2)))
        assert not np.array_equal(dev.infer(xi), execute(net, xi))
    finally:
        dev.write32(cm.base + 4 * k, orig)
    assert np.array_equal(dev.infer(xi[:1]), execute(net, xi[:1]))


def test_engine_error_is_one_line_and_recovers(setup):
    dev, net, xi, cfg = setup
    rm = RegisterMap(cfg)
    n_in = dev.program.in_count
    dev.write32(rm.addr("CTRL"), 0)
    dev.write32(rm.addr("IN_COUNT"), 0)                 # GLOBALS error on the next vector
    dev.write32(rm.addr("CTRL"), 1)
    with pytest.raises(DeviceError, match="GLOBALS"):
        dev.infer(xi[:1], timeout=60)
    dev.write32(rm.addr("CTRL"), 0)
    dev.write32(rm.addr("IN_COUNT"), n_in)
    dev.write32(rm.addr("CTRL"), 1)
    assert np.array_equal(dev.infer(xi[:2]), execute(net, xi[:2]))


def test_bad_inputs_are_one_line(setup):
    from ttforge.errors import ShapeError
    dev, net, xi, cfg = setup
    with pytest.raises(ShapeError, match="takes"):
        dev.infer(xi[:, :3])
    with pytest.raises(ShapeError, match="integers"):
        dev.infer(xi.astype(float))
    with pytest.raises(ShapeError, match="-128..127"):
        dev.infer(xi * 1000)


def test_a_call_that_timed_out_leaves_no_late_answer_to_the_next(setup):
    """infer(x0) with a timeout shorter than the board takes: its answer and output came
    after the resync's 50 ms, and infer(x1) returned x0's result, every later call the
    one before's (exit 0); a READ32 that timed out gave the next read its value."""
    from ttforge.errors import DeviceTimeout
    from ttforge.firmware import protocol as P

    dev, net, xi, cfg = setup
    gold = execute(net, xi)
    with pytest.raises(DeviceTimeout):
        dev.infer(xi[0], timeout=0.05)
    for k in (1, 2):
        assert np.array_equal(dev.infer(xi[k]), gold[k]), k
    rm = RegisterMap(cfg)
    with pytest.raises(DeviceTimeout):
        dev.request(P.read32(rm.addr("ID")), P.Cmd.READ32, timeout=0.005)
    assert dev.read32(rm.addr("VERSION")) == rm["VERSION"].value


def test_run_sim_error_is_one_line_on_stderr(artifact, tmp_path):
    """``ttforge run --sim`` in a real process: an error after the simulated board is up
    is one stderr line, without the cocotb runner's messages (on a cached build it
    warns "Skipping compilation of ..."; the first run makes sure the build is cached).
    A 1 us timeout: no simulated UART answers a PING that fast."""
    import os
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "ttforge")
    argv = [exe, "run", "--board", "ulx3s", "--sim", "--timeout", "1e-6",
            str(artifact / "small.ttfa"), str(artifact / "x.npy")]
    for _ in range(2):
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 3, r.stderr     # a device that does not answer: docs/cli.md Exit codes
        assert r.stderr.splitlines() == [
            "ttforge run: error: simulated board: no answer to PING within 1e-06 s; check the "
            "port, the baud rate, and that the board runs a ttforge bitstream"], r.stderr
    assert not list(tmp_path.iterdir())


def test_an_interrupt_while_the_simulator_starts_leaves_no_socket_directory(setup, simboard_dir, monkeypatch):
    """Ctrl-C while the simulated board starts (waiting for its UART socket): the
    socket directory is removed and the simulator's thread ended (they were left,
    ``ttf-uart-*`` in the temporary directory, with a simulator running on)."""
    import select
    import tempfile
    import threading

    import ttforge.firmware.simulate as simulate

    _, _, _, cfg = setup
    mine = "ttf-uart-"   # any: an old name had no process id

    def ours():
        return sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith(mine))

    before = ours()

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate.select, "select", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate.SimTransport(cfg, build_dir=simboard_dir, timeout=120)
    monkeypatch.undo()
    assert set(ours()) <= set(before)   # none added (dead runs' ones may go)
    assert not [t for t in threading.enumerate() if t.name == "ttforge-simboard" and t.is_alive()
                and t is not getattr(setup[0].t, "_thread", None)]


def _vvp_children() -> set[int]:
    """The process ids of this process's ``vvp`` children (Linux ``/proc``)."""
    mine = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue   # ended meanwhile
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 1:].split()
        if comm == "vvp" and int(fields[1]) == os.getpid():
            mine.add(int(name))
    return mine


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the simulator in /proc")
def test_a_ctrl_c_reaching_the_simulator_on_a_terminal_ends_it(setup, simboard_dir):
    """Ctrl-C in a terminal reaches the whole process group, the simulator too: vvp
    ends (``-n``). It stopped at its interactive prompt instead, reading the terminal
    (its stdin is ttforge's), so closing the board waited 60 s for its thread and
    ``train-board --sim`` ended only then, with vvp left running."""
    import signal
    import time

    import ttforge.firmware.simulate as simulate

    _, _, _, cfg = setup
    before = _vvp_children()
    master, slave = os.openpty()      # the user's terminal, as the simulator's stdin
    saved = os.dup(0)
    try:
        os.dup2(slave, 0)
        t = simulate.SimTransport(cfg, build_dir=simboard_dir, timeout=120)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, slave):
            os.close(fd)
    try:
        (vvp,) = _vvp_children() - before
        os.kill(vvp, signal.SIGINT)   # deterministic: the simulation runs (it connected)
        t._thread.join(timeout=20)
        ended = not t._thread.is_alive()
        if not ended:                 # the old behaviour: free the test run of it
            os.kill(vvp, signal.SIGKILL)
        assert ended, "vvp did not end on SIGINT (stopped at its prompt, reading the terminal)"
        start = time.monotonic()
        t.close()
        assert time.monotonic() - start < 10
    finally:
        t.close()
        os.close(master)


def test_the_simulated_boards_cache_keeps_what_is_new_or_recent(tmp_path):
    """Entries beyond the newest ``keep`` that were last used long ago go; recent ones,
    the newest, and anything not named like an entry stay (the cache only grew)."""
    import time

    from ttforge.firmware.simulate import prune_cache

    now = time.time()
    names = [f"{i:016x}" for i in range(5)] + ["verilator-" + "a" * 16, "yosys-" + "b" * 16 + ".v"]
    for i, name in enumerate(names):
        p = tmp_path / name
        if name.endswith(".v"):
            p.write_text("v")
        else:
            p.mkdir()
            (p / "x").write_text("x")
        os.utime(p, (now - 86_400 * (10 + i), now - 86_400 * (10 + i)))   # oldest last
    (tmp_path / "mine.txt").write_text("a user's file")
    os.utime(tmp_path / "mine.txt", (0, 0))
    recent = tmp_path / ("f" * 16)
    recent.mkdir()
    gone = prune_cache(tmp_path, keep=2, age_s=7 * 86_400)
    # kept: the recent one and the newest old one (keep=2); the rest were old
    assert sorted(gone) == sorted(names[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], "f" * 16, "mine.txt"])
    assert prune_cache(tmp_path, keep=0, age_s=7 * 86_400) == [names[0]]
