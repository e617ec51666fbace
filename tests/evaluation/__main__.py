"""`python -m tests.evaluation [--offline]`: score identification against the labeled set.

With DNS (the default) it starts the knot test server on loopback (tests/dnslab/zones, which
includes evaluation.zone), points a `DnsEvidence` at it and exits 1 when a target is missed:
naming accuracy below 95 %, or any impostor named or called compliant. `--offline` runs with
`dns=None` to show what the report evidence alone achieves; it has no target and exits 0.
"""

from __future__ import annotations

import argparse
import sys

from analysis.dnsevidence import DnsEvidence, make_resolver
from tests.dnslab.server import KnotNotInstalledError, KnotServer, KnotStartError
from tests.evaluation import evaluate_sync, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.evaluation", description=__doc__)
    parser.add_argument("--offline", action="store_true",
                        help="no DNS: only the evidence inside the reports (no target)")
    args = parser.parse_args(argv)
    if args.offline:
        print(render(evaluate_sync(None)))
        return 0
    try:
        with KnotServer() as server:
            address = f"{server.host}:{server.port}"
            evaluation = evaluate_sync(lambda: DnsEvidence(make_resolver([address])))
    except (KnotNotInstalledError, KnotStartError) as exc:
        print(f"cannot start the knot test server: {exc}", file=sys.stderr)
        return 2
    print(render(evaluation))
    return 0 if evaluation.targets_met() and not evaluation.temporary else 1


if __name__ == "__main__":
    sys.exit(main())
