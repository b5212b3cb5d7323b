"""Every C source ttforge ships (``firmware/c/``: the inference and training drivers, their
simulation hooks and test programs, the C executors) and the C it generates (a load
image, a training program) compiles under ``-std=c99 -Wall -Wextra -Werror -pedantic``
with each C compiler that is installed, gcc and clang (``link_c_driver`` compiles with
those flags and ``$CC``, so ``CC=clang`` must build what gcc builds). Under clang the
simulation test program did not compile: ``long n`` read uninitialised "whenever '||'
condition is true", as clang could not tell that ``die()`` never returns."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ttforge.firmware.c_driver import C_DIR, export_driver
from ttforge.firmware.train_c_driver import export_train_driver
from ttforge.hw.program import compile_program
from ttforge.hw.trainer.program import fit_engine
from ttforge.ir.random import train_case
from ttforge.sim.cases import make_case
from ttforge.sim.native import NATIVE_DIR

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
BATCH = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The inference and training driver sources, with their simulation files and a
    generated image/program, exported as a firmware project gets them."""
    d = tmp_path_factory.mktemp("csrc")
    case = make_case(3, 2)
    export_driver(case.config, d / "infer", compile_program(case.net, case.config), sim=True)
    state, *_ = train_case(0, batch=BATCH, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    export_train_driver(fit_engine(state, BATCH), d / "train", state, BATCH, sim=True)
    return d


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_every_c_source_compiles_clean(exported, tmp_path, cc):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    units = [(p, exported / "infer") for p in sorted((exported / "infer").glob("*.c"))]
    units += [(p, exported / "train") for p in sorted((exported / "train").glob("*.c"))]
    units += [(C_DIR / "ttforge_infer.c", C_DIR), (C_DIR / "ttforge_train.c", C_DIR)]
    names = {p.name for p, _ in units}
    assert {"ttforge_sim_test.c", "ttforge_train_sim_test.c", "ttforge_image.c",
            "ttforge_train_program.c"} <= names
    failed = []
    for src, inc in units:
        # -O2: gcc's uninitialised-use analysis runs only when optimising
        proc = subprocess.run([cc, *STRICT, "-O2", f"-I{inc}", f"-I{NATIVE_DIR}", "-c", str(src),
                               "-o", str(tmp_path / (src.name + ".o"))],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode:
            failed.append(f"{src.name}: {(proc.stderr.strip().splitlines() or ['?'])[0]}")
    assert not failed, failed
