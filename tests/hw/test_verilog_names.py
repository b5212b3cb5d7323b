"""Every signal of the generated Verilog has a name of its own, the same on every Python
version: Amaranth names a signal (or an interface's, a memory port's signals) after the
variable it is assigned to, found by reading the caller's bytecode. A signal made in a
tuple (``a, b = Signal(), Signal()``), a comprehension, a conditional expression or a
call's argument got its variable on some Python versions and ``$signal$N`` /
``$signature__data$N`` on others, so the same artifact gave different Verilog on 3.10,
3.11 and 3.13 (docs/hardware.md promises byte-identical Verilog for the same inputs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ttforge.firmware
import ttforge.hw
from ttforge.hw.config import AccelConfig

#: names Amaranth gives a signal whose variable its tracer did not find
TRACER_DEFAULTS = re.compile(r"\$(?:signal|signature|like)\b")


def _accel(**kw):
    from ttforge.hw.top import verilog
    return verilog(AccelConfig(**{k: v for k, v in kw.items() if k != "platform"}),
                   platform=kw.get("platform"))


def _ecp5():
    from ttforge.hw.ecp5_dsp import ECP5
    return _accel(platform=ECP5)


def _train():
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.top import verilog
    return verilog(TrainEngineConfig(lanes=2))


def _board():
    from ttforge.firmware.board import sim_verilog
    return sim_verilog(AccelConfig(), divisor=4)


DESIGNS = {
    "default": _accel,
    "engines2": lambda: _accel(engines=2),
    "throughput1": lambda: _accel(throughput=1),
    "read_registers2": lambda: _accel(buf_ports=2, read_registers=2),
    "ecp5": _ecp5,
    "train": _train,
    "board": _board,
}


@pytest.mark.parametrize("design", DESIGNS)
def test_the_verilog_has_no_tracer_default_names(design):
    found = sorted(set(re.findall(r"\S*\$(?:signal|signature|like)\S*", DESIGNS[design]())))
    assert not found, f"signals named by Amaranth's tracer default: {found}"


#: calls that name what they make after the variable they are assigned to, unless given
#: ``name=`` (signals) or ``path=`` (interfaces)
_TRACED_CALLS = {"Signal", "like", "create", "read_port", "write_port"}


def _traced_call(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call) or any(k.arg in ("name", "path") for k in node.keywords):
        return None
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    # a bare read_port(...)/write_port(...) is ttforge.hw.blocks' (its name an argument)
    if name in _TRACED_CALLS and not (isinstance(f, ast.Name) and name != "Signal"):
        return name
    return None


def _simply_assigned(node: ast.AST, parent: ast.AST) -> bool:
    """Whether ``node`` is the whole value assigned to one variable or attribute: the one
    form every Python version's bytecode lets the tracer read."""
    if isinstance(parent, ast.Assign):
        targets = parent.targets
    elif isinstance(parent, ast.AnnAssign):
        targets = [parent.target]
    else:
        return False
    return (parent.value is node and len(targets) == 1
            and isinstance(targets[0], (ast.Name, ast.Attribute)))


def _unnamed_sites() -> list[str]:
    hw = Path(ttforge.hw.__file__).parent
    sources = sorted(hw.rglob("*.py")) + sorted(Path(ttforge.firmware.__file__).parent.glob("*.py"))
    sites = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for parent in ast.walk(tree):
            for node in ast.iter_child_nodes(parent):
                what = _traced_call(node)
                if what is not None and not _simply_assigned(node, parent):
                    sites.append(f"{path.relative_to(hw.parent)}:{node.lineno}: {what}(...) "
                                 f"in {type(parent).__name__}")
    return sites


def test_no_signal_is_left_to_the_tracer_where_it_depends_on_the_python_version():
    sites = _unnamed_sites()
    assert not sites, ("give these an explicit name= (signals) or use "
                       f"ttforge.hw.blocks.read_port/write_port (memory ports): {sites}")
