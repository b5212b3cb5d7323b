"""The training engine: the all-integer training step of ``docs/arithmetic.md`` in hardware.

See ``docs/hardware.md`` ("Training engine"). Units: :mod:`.loss` (the base-2 softmax
gradient), :mod:`.update` (the stochastic-rounding update, xorshift32, bias alignment,
the forward core from the master).
"""

__all__: list[str] = []
