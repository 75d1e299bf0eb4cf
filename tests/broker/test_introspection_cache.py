"""The broker's cache of positive introspection answers (``--introspection-cache-ttl``), against the real
introspection service: reused within the TTL, never past the token's ``exp``, never for a negative
answer, and not at all with a TTL of 0. Requests are counted with an httpx event hook on the wire."""

from __future__ import annotations

import asyncio
import time

import httpx

from s4s_jupyter.core.introspection import IntrospectionResult
from servers.broker.authorizer import RemoteIntrospectionAuthorizer
from servers.ehr.oauth.clients import BROKER_CLIENT_ID
from tests.broker.conftest import SECRETS, Stack


def introspect_all(stack: Stack, tokens: list[str], *, ttl: float,
                   clock_after_first: float = 0.0) -> tuple[list[IntrospectionResult], int]:
    """Introspect ``tokens`` in order through one authorizer; returns the answers and how many requests
    reached the introspection service. ``clock_after_first`` moves the authorizer's clock forward after
    the first answer (to pass a token's ``exp`` without waiting an hour)."""
    sent = 0
    shift = 0.0

    async def count(_: httpx.Request) -> None:
        nonlocal sent
        sent += 1

    async def run() -> list[IntrospectionResult]:
        nonlocal shift
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            authorizer = RemoteIntrospectionAuthorizer(
                stack.introspection_url, BROKER_CLIENT_ID, SECRETS[BROKER_CLIENT_ID], http, cache_ttl=ttl,
                clock=lambda: time.time() + shift)
            answers = []
            for token in tokens:
                answers.append(await authorizer.introspect(token))
                shift = clock_after_first
            return answers

    return asyncio.run(run()), sent


def test_a_positive_answer_is_reused_within_the_ttl(stack: Stack) -> None:
    token = stack.token(stack.plan.patients[0], fresh=True)
    answers, sent = introspect_all(stack, [token] * 5, ttl=30)
    assert all(a.active for a in answers) and sent == 1


def test_no_reuse_past_the_tokens_exp(stack: Stack) -> None:
    token = stack.token(stack.plan.patients[0], fresh=True)
    first, _ = introspect_all(stack, [token], ttl=30)
    assert first[0].exp is not None
    beyond = first[0].exp - time.time() + 1  # the authorizer's clock now reads one second past exp
    answers, sent = introspect_all(stack, [token, token], ttl=3600, clock_after_first=beyond)
    assert sent == 2 and answers[0].active


def test_negative_answers_and_a_zero_ttl_are_never_reused(stack: Stack) -> None:
    answers, sent = introspect_all(stack, ["not-a-token"] * 3, ttl=30)
    assert not any(a.active for a in answers) and sent == 3
    token = stack.token(stack.plan.patients[0], fresh=True)
    answers, sent = introspect_all(stack, [token] * 3, ttl=0)
    assert all(a.active for a in answers) and sent == 3
