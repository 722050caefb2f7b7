"""Runs: the settings checks, one experiment end to end, its record and name, the command line, grids and their cost."""
