from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from mcpgate.observability.logging import (
    JsonFormatter,
    Redactor,
    TextFormatter,
    configure_logging,
    redact_mapping,
)


def make_record(
    msg: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    *,
    level: int = logging.INFO,
    extra: dict[str, object] | None = None,
    exc: bool = False,
) -> logging.LogRecord:
    logger = logging.getLogger("mcpgate.test")
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logger.makeRecord(logger.name, level, __file__, 1, msg, args, exc_info, extra=extra)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_line_has_fixed_fields_and_extras() -> None:
    record = make_record(extra={"upstream": "github", "status": 200})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "info"
    assert data["logger"] == "mcpgate.test"
    assert data["msg"] == "hello world"
    assert data["upstream"] == "github"
    assert data["status"] == 200
    assert data["ts"].endswith("Z") and data["ts"][10] == "T"
    assert "exc" not in data


def test_json_extra_cannot_overwrite_fixed_fields() -> None:
    data = json.loads(JsonFormatter().format(make_record(extra={"level": "forged"})))
    assert data["level"] == "info"


def test_json_renders_exception() -> None:
    data = json.loads(JsonFormatter().format(make_record(level=logging.ERROR, exc=True)))
    assert "RuntimeError: boom" in data["exc"]
    assert "Traceback" in data["exc"]


def test_json_serializes_unusual_values() -> None:
    data = json.loads(JsonFormatter().format(make_record(extra={"when": object(), "items": (1, 2)})))
    assert data["when"].startswith("<object")
    assert data["items"] == [1, 2]


def test_text_line_shape() -> None:
    record = make_record(extra={"upstream": "github", "note": "two words", "n": 3})
    line = TextFormatter().format(record)
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00Z")
    assert level == "INFO"
    assert rest.startswith(" mcpgate.test: hello world ")  # INFO is padded to five columns
    assert 'upstream=github note="two words" n=3' in line


def test_text_renders_exception_below_the_line() -> None:
    line = TextFormatter().format(make_record(level=logging.ERROR, exc=True))
    first, *rest = line.splitlines()
    assert "ERROR mcpgate.test: hello world" in first
    assert rest[0].startswith("Traceback")
    assert rest[-1] == "RuntimeError: boom"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_formatters_redact_extra_fields(formatter: logging.Formatter) -> None:
    extra = {
        "authorization": "Bearer s3cr3t-1",
        "headers": {"X-Api-Key": "s3cr3t-2", "Accept": "application/json"},
        "items": [{"password": "s3cr3t-3"}],
        "upstream_token": "s3cr3t-4",
        "upstream": "github",
    }
    line = formatter.format(make_record(extra=extra))
    assert "s3cr3t" not in line
    assert "github" in line and "application/json" in line


def test_redact_mapping_is_recursive_and_case_insensitive() -> None:
    data = {
        "Authorization": "Bearer x",
        "nested": {"Client_Secret": "y", "ok": 1, "deeper": [{"TOKEN": "z"}, "plain"]},
        "auth": {"type": "bearer"},
    }
    out = redact_mapping(data, ["authorization", "secret", "token"])
    assert out == {
        "Authorization": "***",
        "nested": {"Client_Secret": "***", "ok": 1, "deeper": [{"TOKEN": "***"}, "plain"]},
        "auth": {"type": "bearer"},
    }
    assert data["Authorization"] == "Bearer x"  # the input is not modified


def test_redact_whole_subtree_under_secret_key() -> None:
    assert redact_mapping({"secrets": {"a": 1}}, ["secret"]) == {"secrets": "***"}


def test_redactor_with_no_terms_masks_nothing() -> None:
    assert Redactor([]).mapping({"token": "x"}) == {"token": "x"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("https://user:pw@mcp.example.com/mcp", "https://user:***@mcp.example.com/mcp"),
        ("https://tok@mcp.example.com/mcp", "https://***@mcp.example.com/mcp"),
        ("http://h/mcp?api_token=abc&tenant=acme", "http://h/mcp?api_token=***&tenant=acme"),
        ("http://h/mcp?tenant=acme", "http://h/mcp?tenant=acme"),
    ],
)
def test_redactor_url(url: str, expected: str) -> None:
    assert Redactor().url(url) == expected


def test_configure_logging_is_idempotent_and_writes_json_to_stderr(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "text")
    configure_logging("debug", "json", redact=["token"])
    ours = [h for h in logging.getLogger().handlers if type(h).__name__ == "_StderrHandler"]
    assert len(ours) == 1
    logging.getLogger("mcpgate.x").debug("visible %d", 1, extra={"token": "t0ps3cret"})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    data = json.loads(err[0])
    assert data == {**data, "level": "debug", "logger": "mcpgate.x", "msg": "visible 1", "token": "***"}
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() >= logging.WARNING


def test_level_filters_before_formatting(restore_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted although suppressed")

    configure_logging("warning", "text")
    logging.getLogger("mcpgate.x").info("never %s", Exploding())
    logging.getLogger("mcpgate.x").warning("shown")
    err = capsys.readouterr().err
    assert "never" not in err
    assert "WARNING mcpgate.x: shown" in err


def test_configure_logging_rejects_unknown_level(restore_root: None) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose", "text")


def test_redactor_argv() -> None:
    argv = ["server", "--api-token=abc", "--password", "pw", "--verbose", "/data", "--token"]
    assert Redactor().argv(argv) == ["server", "--api-token=***", "--password", "***", "--verbose", "/data", "--token"]


def test_urls_mask_query_parameters_that_look_like_credentials() -> None:
    redactor = Redactor()
    url = "https://h.example.com/sse?key=k1&api_key=k2&sig=k3&auth=k4&tenant=acme"
    shown = redactor.url(url)
    assert all(secret not in shown for secret in ("k1", "k2", "k3", "k4"))
    assert "tenant=acme" in shown
