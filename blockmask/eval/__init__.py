"""Evaluation: MACs, measured speed, FID/KID/IS through torch-fidelity, fidelity to the plain run, the
signed cache and the report tables."""
