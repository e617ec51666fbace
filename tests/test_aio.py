"""function_app.aio.run: the command line's asyncio.run, which never formats its result."""

from __future__ import annotations

import asyncio
import sys

import pytest

from function_app import aio


class Loud:
    """A result that counts how often it is formatted (a domain's verdicts, in the product)."""

    def __init__(self) -> None:
        self.formatted = 0

    def __repr__(self) -> str:
        self.formatted += 1
        return "Loud()"


async def give(value: Loud) -> Loud:
    await asyncio.sleep(0)
    return value


def test_run_hands_back_the_result_without_formatting_it() -> None:
    result = Loud()
    assert aio.run(give(result)) is result
    assert result.formatted == 0


def test_plain_asyncio_run_formats_the_result_before_312() -> None:
    """Why aio.run exists: once the runtime is 3.12 or later, aio.run can go."""
    result = Loud()
    assert asyncio.run(give(result)) is result
    assert (result.formatted > 0) == (sys.version_info < (3, 12))


def test_run_propagates_the_coroutines_error() -> None:
    async def fail() -> None:
        raise LookupError("no such domain")

    with pytest.raises(LookupError, match="no such domain"):
        aio.run(fail())
