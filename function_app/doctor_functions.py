"""`GET /api/doctor`: the deployment's checks, from inside the Function App, behind a function key.

The same checks as `dmarcbot doctor`, run with the app's own settings and identity, which is the
only place the managed identity's answers can be seen. Nothing secret is in the answer, but it
names the mailbox, the list and the roles: it is not anonymous.
"""

from __future__ import annotations

import json
import os

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("doctor")
@bp.route(route="doctor", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def doctor(req: func.HttpRequest) -> func.HttpResponse:
    """200 with every check when the deployment is healthy, 503 with every check when not."""
    from function_app.doctor import healthy, run_checks

    # No mailbox to try from the request: with the key, anyone could otherwise probe which
    # mailboxes exist. The default (an owner's or an admin's) is a configured one.
    checks = await run_checks(os.environ)
    ok = healthy(checks)
    body = {"healthy": ok, "checks": [check.as_dict() for check in checks]}
    return func.HttpResponse(json.dumps(body), status_code=200 if ok else 503,
                             mimetype="application/json")
