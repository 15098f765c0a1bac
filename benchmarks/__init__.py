"""The benchmarks: ``python -m benchmarks.quality``, ``benchmarks.speed``, ``benchmarks.sequential``'s
scenario, the GPU checks; figures and commands in ``benchmarks/RESULTS.md``. Each script also runs
as ``python benchmarks/<name>.py``."""
