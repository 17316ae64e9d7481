"""The pipeline's shape and its pure helpers."""

from __future__ import annotations

import pytest

from mcpgate import pipeline


def test_stage_order_is_pinned() -> None:
    """DESIGN section 4: changing this order changes security properties; do it on purpose."""
    assert [stage.__name__ for stage in pipeline.STAGES] == [
        "check_transport",
        "parse",
        "authenticate",
        "resolve_session",
        "route",
        "authorize",
        "rate_limit",
        "forward",
    ]
    assert pipeline.STAGES[-1] is pipeline.forward


@pytest.mark.parametrize("auth", [False, True])
@pytest.mark.parametrize("access", [False, True])
@pytest.mark.parametrize("limits", [False, True])
def test_stages_with_nothing_to_do_are_skipped_and_the_order_kept(auth: bool, access: bool, limits: bool) -> None:
    """``authenticate`` needs an auth section, ``authorize`` a policy or a tools filter,
    ``rate_limit`` a rate_limit section; every other stage always runs, in STAGES' order."""

    class FakePlan:
        def __init__(self) -> None:
            self.auth = object() if auth else None
            self.checks_access = access
            self.limiter = object() if limits else None

    stages = pipeline.stages_for(FakePlan())  # type: ignore[arg-type]
    expected = [
        stage
        for stage, wanted in (
            (pipeline.check_transport, True),
            (pipeline.parse, True),
            (pipeline.authenticate, auth),
            (pipeline.resolve_session, True),
            (pipeline.route, True),
            (pipeline.authorize, access),
            (pipeline.rate_limit, limits),
            (pipeline.forward, True),
        )
        if wanted
    ]
    assert list(stages) == expected
    assert pipeline.stages_for(FakePlan()) is stages  # picked once per combination


def test_a_plan_checks_access_with_a_policy_or_any_tools_filter() -> None:
    from mcpgate.config import load_config
    from mcpgate.plan import build

    def plan_of(extra: str, tools: str = "") -> bool:
        text = f"upstreams:\n  a: {{url: 'http://127.0.0.1:1/mcp'{tools}}}\n  b: {{url: 'http://127.0.0.1:2/mcp'}}\n"
        config = load_config(text=text + extra, source="t.yml")
        return build(config, lambda: "/tmp/unused.sock", _never).plan.checks_access

    assert plan_of("") is False
    assert plan_of("", tools=", tools: {deny: [x]}") is True
    assert plan_of("policy:\n  default: allow\n") is True


async def _never(*args: object) -> None:  # pragma: no cover - no stdio upstream here
    raise AssertionError


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        ("http://localhost:6274", (), True),
        ("http://127.0.0.1", (), True),
        ("https://[::1]:8443", (), True),
        ("http://localhost.evil.com", (), False),
        ("http://evil.com", (), False),
        ("null", (), False),
        ("file://localhost", (), False),
        ("https://app.example.com", ("https://app.example.com",), True),
        ("https://app.example.com/", ("https://app.example.com",), True),
        ("http://localhost:3000", ("https://app.example.com",), False),
        ("https://anything.example", ("*",), True),
    ],
)
def test_origin_allowed(origin: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert pipeline.origin_allowed(origin, allowed) is ok


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        ("application/json, text/event-stream", True),
        ("text/event-stream;q=0.9, application/json", True),
        ("*/*", True),
        ("application/*, text/*", True),
        ("application/json", False),
        ("", False),
    ],
)
def test_accept_header(accept: str, ok: bool) -> None:
    assert pipeline._accepts(accept, "application/json", "text/event-stream") is ok
