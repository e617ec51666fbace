"""Running the pipeline's coroutines from synchronous code: the command line and benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, without a cost Python 3.11 hides in it: when it puts Ctrl-C handling back,
    `signal.getsignal` formats the repr of the main task, and with it the task's result (3.12
    no longer does). For the verdicts of a domain with thousands of sources that repr is a third
    of the naming step's CPU. The result is handed back outside the task instead."""
    result: list[T] = []

    async def keep() -> None:
        result.append(await main)

    asyncio.run(keep())
    return result[0]
