"""``surge simulate``: replay a load profile against the configured scaling policies.

Pure parts, one job each: ``profile`` (load over time, piecewise linear), ``model`` (what a
fleet of instances or workers does with that load: throughput, latency, backlog, CPU),
``run`` (the clock: metrics into the policy engine, its decisions into the fleet, with boot
time and warmup) and ``chart`` (an SVG of load, instances and latency). The CLI command only
reads the config and writes the file.
"""
