"""``ttforge regress`` on Dask (``ttforge.sim.cluster``): the dependency stays out of the
imports until a run is parallel."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_simulation_side_imports_no_dask():
    code = ("import sys, ttforge.sim, ttforge.sim.regress, ttforge.sim.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sibling_sees_an_import_of_dask():
    code = ("import sys, ttforge.sim, distributed; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))[:1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() != "[]"
