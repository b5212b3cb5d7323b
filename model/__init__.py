"""Tensor-train math, layers, schedules and training (``ttforge.model``)."""
