"""The Functions host's queue, as the host reaches it: does it answer this app's identity?

Not dmarcbot's data (the host owns the queue); only `dmarcbot doctor` asks, read-only. The
connection follows the host's own `AzureWebJobsStorage` settings: a connection string, or the
identity-based `__accountName` / `__queueServiceUri` with `__clientId`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from store.base import StorageRefused, StoreError

__all__ = ["probe"]


def probe(env: Mapping[str, str], queue_name: str, **client_options: Any) -> str:
    """What the queue service says of `queue_name`; StorageRefused or StoreError otherwise."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
    from azure.storage.queue import QueueClient

    conn = env.get("AzureWebJobsStorage", "").strip()
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    service = env.get("AzureWebJobsStorage__queueServiceUri", "").strip()
    if conn:
        try:
            client = QueueClient.from_connection_string(conn, queue_name, **client_options)
        except ValueError:
            raise StoreError("AzureWebJobsStorage is not a valid connection string") from None
    elif account or service:
        from azure.identity import ManagedIdentityCredential

        url = service or f"https://{account}.queue.core.windows.net"
        identity = ManagedIdentityCredential(
            client_id=env.get("AzureWebJobsStorage__clientId", "").strip() or None)
        client = QueueClient(url, queue_name, credential=identity, **client_options)
    else:
        raise StoreError("AzureWebJobsStorage is not set: set AzureWebJobsStorage__accountName "
                         "(identity-based) or a connection string")
    try:
        with client:
            client.get_queue_properties()
        return f"queue {queue_name} answers"
    except ResourceNotFoundError:
        return f"the queue service answers; {queue_name} is made at the first poll"
    except HttpResponseError as exc:
        code = getattr(exc, "error_code", None) or exc.status_code or type(exc).__name__
        raise StorageRefused(f"the host's queue refused the request ({code})",
                             status=exc.status_code) from None
    except AzureError as exc:
        raise StoreError(f"the host's queue did not answer ({type(exc).__name__})") from None
