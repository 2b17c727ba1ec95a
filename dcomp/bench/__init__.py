"""Benchmarks: dcomp's methods against the classical codecs, measured the way users run them."""
