"""``serving.tuning``: Triton's batching and instance settings searched on the real server.

``space`` is the pure search (next trial, winner, budget miss), ``load`` one measurement
window, ``runner`` the trials against a local ``tritonserver``, ``artifact`` what goes into
the package (config, report rows, plot) and the one entry the pipeline calls.
"""

from optiserve_optimizer.tuning.artifact import TuningResult, tune_packaged

__all__ = ["TuningResult", "tune_packaged"]
