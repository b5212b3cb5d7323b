"""Helpers shared by the tests (networks, data files, simulator builds, bus drivers,
markdown parsing). Test modules import from here and never from one another."""
