"""``python -m optiserve_operator [flags]`` (same as ``optiserve operator``)."""

import sys

from optiserve_operator.main import run_operator

raise SystemExit(run_operator(sys.argv[1:]))
