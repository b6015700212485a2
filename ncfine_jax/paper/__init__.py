"""The whole paper at one scale: the plan of runs, driving them, and the claims report.

Modules:
  scales    the three scales (``tiny``, ``cpu``, ``full``): every setting of the plan
  plan      ``build_plan(scale)``: the runs, grids and Gaussian-mixture sweeps, their
            workdirs and costs; ``plan_table`` (the ``--dry-run`` text)
  runner    ``run_plan``: run / resume / skip each item through the experiment layer,
            record skipped datasets and failures, ``paper_status.json``
  evidence  finished results of the items, or why a claim cannot be judged
  measures  the numbers claims are judged on (structure test, D contrasts, trends)
  claims    ``CLAIMS``: every claim, its source, criterion and reason, in one place
  figures   comparison figures across runs (DIR/figures/)
  report    ``build_report``: paper_report.md / .json
  estimate  CPU-time calibration and the ``cpu`` scale's time estimate
  command   ``main``: ``experiments/paper.py``
"""

from ncfine_jax.lazy import exports

# Names are imported from their modules when first read (ncfine_jax.lazy), so that a
# command can parse its flags before jax and the other heavy packages load.
__getattr__, __dir__, __all__ = exports(__name__, {
    "plan": ["PlanItem", "build_plan", "get_scale", "plan_table", "select"],
    "scales": ["SCALES", "Scale"],
})
