"""The simulators of the cocotb tests and whether each can run here."""

from __future__ import annotations

SIMS = ["icarus", "verilator"]


def _available(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None."""
    from ttforge.sim.runner import available_simulators

    return available_simulators()[sim]
