"""Physical layer: network data, power flow, reactive OPF, tracing, losses, DER models, ADMM.

Pure computation on numpy/scipy arrays: no I/O (besides case loaders), no clock, no chain.
"""
