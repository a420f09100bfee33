"""Design-space exploration of systolic accelerators (XploreDL style), with SCALE-Sim 3.0.0's
conventions in closed form; see docs/dse.md.

Modules: `topology` (SCALE-Sim topologies), `workload` (GEMMs for inference or training),
`systolic` (per-layer cycles and accesses), `hardware` (45 nm figures), `grid` (every design of a
grid), `pareto` (the numba non-dominated filter), `explore` (result files), `cli`. This package
module imports nothing, so that `nascaps --help` (which imports `capsacc.dse.cli`) stays fast.
"""
