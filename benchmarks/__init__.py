"""Benchmarks of cascade_notify, side by side with their floors, ceilings and peers.

Run `python -m benchmarks` from the repository root (`--quick` for a smoke run,
`--only NAME` for one section); see `benchmarks/__main__.py` and
docs/benchmarks.md. Each section is a module with `run(options) -> Result`:
`engine_overhead`, `over_http`, `pending`, `fallback`, `receipts`.
"""
