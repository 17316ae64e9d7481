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
