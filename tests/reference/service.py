"""`python -m tests.reference.service SERVICE`: one service exactly as `python -m accord_<service>`
runs it, but with its clock's periodic work (agreements' due dates, metrics' evaluation,
billing's issue and finalise) every second instead of every 5–30 s, so that a test driving
real processes does not wait for the production intervals."""

from __future__ import annotations

import functools
import sys

from accord_kit.runtime import main


def run(service: str) -> int:
    if service == "agreements":
        from accord_agreements.bootstrap import build as build_agreements
        from accord_agreements.settings import SERVICE as AGREEMENTS
        from accord_agreements.settings import load as load_agreements

        return main(AGREEMENTS, load_agreements, functools.partial(build_agreements, due_interval=1.0))
    if service == "metrics":
        from accord_metrics.bootstrap import build as build_metrics
        from accord_metrics.settings import SERVICE as METRICS
        from accord_metrics.settings import load as load_metrics

        return main(METRICS, load_metrics, functools.partial(build_metrics, evaluate_every=1.0))
    if service == "billing":
        from accord_billing.bootstrap import build as build_billing
        from accord_billing.settings import SERVICE as BILLING
        from accord_billing.settings import load as load_billing

        return main(BILLING, load_billing, functools.partial(build_billing, due_every=1.0))
    raise SystemExit(f"unknown service {service!r}")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
