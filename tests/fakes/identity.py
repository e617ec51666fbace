"""The managed identity endpoint of App Service and Azure Functions (IDENTITY_ENDPOINT).

In Azure the Functions host serves it on a local http address and msal finds it through the
`IDENTITY_ENDPOINT` and `IDENTITY_HEADER` variables. Here it hands out assertions signed by a
`FakeManagedIdentity`, which a `FakeEntra` trusts through a federated credential.
"""

from __future__ import annotations

import secrets
import threading
import time

from tests.fakes.entra import FakeManagedIdentity
from tests.fakes.server import LoopbackServer, Request, Response, Served


class FakeIdentityEndpoint(Served):
    """`GET /msi/token?api-version=2019-08-01&resource=...&client_id=...` for one identity."""

    def __init__(self, identity: FakeManagedIdentity, client_id: str) -> None:
        self.identity = identity
        self.client_id = client_id
        self.header = secrets.token_hex(16)
        self.requests: list[dict[str, str]] = []  # query parameters of each token request
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handle)

    @property
    def url(self) -> str:
        return f"{self._server.origin}/msi/token"

    def _handle(self, request: Request) -> Response:
        query = dict(request.query)
        with self._lock:
            self.requests.append(query)
        if request.method != "GET" or request.raw_path != "/msi/token":
            return Response.json(404, {"statusCode": 404, "message": "not found"})
        if request.headers.get("X-IDENTITY-HEADER") != self.header:
            return Response.json(401, {"statusCode": 401, "message": "bad identity header"})
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            return Response.json(400, {"statusCode": 400, "message": "bad request"})
        if query.get("client_id") != self.client_id:
            return Response.json(400, {"statusCode": 400,
                                       "message": "No managed identity with that client id"})
        return Response.json(200, {
            "access_token": self.identity.assertion(audience=query["resource"]),
            "expires_on": str(int(time.time()) + 3600),
            "resource": query["resource"], "token_type": "Bearer",
            "client_id": self.client_id,
        })
