"""The measurement side of bench/: each module measures one thing and
returns plain data; bench/measure.py writes it all as one JSON document,
and bench/report.py renders BENCHMARKS.md from that JSON."""
