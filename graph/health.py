"""Read-only probes of a deployment's Microsoft side, for `dmarcbot doctor`.

Each asks one question of Graph, Entra ID or the Bot Framework and answers with plain data or a
graph.errors type. None of them changes anything, reads a message's contents or logs a token.
"""

from __future__ import annotations

import base64
import json
import ssl
from typing import TYPE_CHECKING, Any

import httpx

from graph.client import odata_string
from graph.errors import GraphError

if TYPE_CHECKING:
    from graph.client import GraphConnection

__all__ = ["folder_by_name", "mail_folder", "openid_keys", "token_claims"]


def token_claims(access_token: str) -> dict[str, Any]:
    """The claims of an Entra access token, unverified: only to tell what roles it carries.

    Graph's tokens are JWTs the client may read (Entra signs them; Graph checks them). An
    unreadable token answers {}: nothing can be said about its roles.
    """
    parts = access_token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


async def mail_folder(graph: GraphConnection, mailbox: str, folder: str) -> dict[str, Any]:
    """A folder's id, name and item count (a well-known name like `inbox`, or an id)."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
        MailFolderItemRequestBuilder,
    )

    query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
        select=["id", "displayName", "totalItemCount"])
    builder = graph.client.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(folder)
    return await graph.json(builder.to_get_request_information(
        RequestConfiguration(query_parameters=query)))


async def folder_by_name(graph: GraphConnection, mailbox: str, name: str) -> str | None:
    """The id of the top-level folder with this display name, or None when there is none."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import (
        MailFoldersRequestBuilder,
    )

    query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
        filter=f"displayName eq {odata_string(name)}", select=["id", "displayName"])
    builder = graph.client.users.by_user_id(mailbox).mail_folders
    answer = await graph.json(builder.to_get_request_information(
        RequestConfiguration(query_parameters=query)))
    return next((str(row["id"]) for row in answer.get("value") or []
                 if isinstance(row, dict) and row.get("id")), None)


async def openid_keys(metadata_url: str, verify: ssl.SSLContext | bool = True) -> int:
    """How many signing keys the Bot Framework's OpenID metadata leads to (its JWKS)."""
    try:
        async with httpx.AsyncClient(verify=verify, timeout=10.0,
                                     follow_redirects=False) as http:
            metadata = (await http.get(metadata_url)).raise_for_status().json()
            jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise GraphError("the OpenID metadata has no https jwks_uri", code="NoJwksUri")
            keys = (await http.get(jwks_uri)).raise_for_status().json()
    except httpx.HTTPStatusError as exc:
        raise GraphError(f"the OpenID metadata answered {exc.response.status_code}",
                         status=exc.response.status_code) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise GraphError(f"cannot read the OpenID metadata ({type(exc).__name__})") from None
    found = keys.get("keys") if isinstance(keys, dict) else None
    return len(found) if isinstance(found, list) else 0
