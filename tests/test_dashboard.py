"""The dashboard at /admin/, loaded in a real headless Chromium against a real gateway.

A gateway (store, admin listener, DuckDB analytics) runs in the test's loop in front of a real
MCP server; known traffic goes through it with raw HTTP; then Chromium, driven over the Chrome
DevTools Protocol (aiohttp's websocket client, no other dependency), opens the page and the test
reads what it rendered from the DOM: the exact numbers that were driven. The page's files are
also checked as plain HTTP: public, under a strict Content Security Policy, while the API behind
them is not.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it); without it these tests skip, except
in CI (``MCPGATE_TEST_REQUIRE_SERVICES=1``) where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcpgate.admin import dashboard
from mcpgate.auth.apikeys import hash_key
from tests.conftest import require_or_skip
from tests.gateway_harness import LEGACY, POST_HEADERS, modern_call, modern_headers, rpc
from tests.store_harness import ADMIN_KEY, Serving, admin_yaml, call, serving

pytestmark = pytest.mark.e2e

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef"
STATIC = Path(dashboard.__file__).parent / "static"
WAIT = 30.0  # the longest any one wait in the browser may take
NOTHING = "\u2013"  # an en dash: what the page shows where it has no number


def gateway_yaml(urls: dict[str, str], tmp: Path, *, analytics: bool = True) -> str:
    """alpha behind the gateway; alice and bob; bob may not call whoami, and only_alpha once in a long while."""
    keys = ", ".join(
        f'{{id: {name}, key_hash: "{hash_key(key)}"}}' for name, key in (("alice", ALICE_KEY), ("bob", BOB_KEY))
    )
    text = (
        f"server: {{port: 0}}\nupstreams:\n  alpha: {{url: {json.dumps(urls['alpha'])}}}\n"
        f"auth: {{api_keys: [{keys}]}}\n"
        "policy: {default: allow, rules: [{clients: [bob], tools: [whoami], decision: deny}]}\n"
        "rate_limit: {rules: [{clients: [bob], tools: [only_alpha], capacity: 1, refill_per_second: 0.0001}]}\n"
        + admin_yaml(f"path: {json.dumps(str(tmp / 's.db'))}")
    )
    if analytics:
        text += f"analytics: {{backend: duckdb, path: {json.dumps(str(tmp / 'a.duckdb'))}, flush_interval: 100ms}}\n"
    return text


def page_url(gw: Serving) -> str:
    return gw.admin.removesuffix("/v1") + "/"


async def call_tool(http: aiohttp.ClientSession, gw: Serving, key: str, name: str, arguments: dict[str, Any]) -> int:
    """One stateless 2026-07-28 tools/call through /servers/alpha/mcp; its HTTP status."""
    body = modern_call("tools/call", {"name": name, "arguments": arguments})
    headers = {**modern_headers("tools/call", name), "Authorization": f"Bearer {key}"}
    async with http.post(f"{gw.url}/servers/alpha/mcp", json=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def open_session(http: aiohttp.ClientSession, gw: Serving, key: str) -> None:
    """A legacy session (initialize, then notifications/initialized) left open: two requests, one live session."""
    url, auth = f"{gw.url}/servers/alpha/mcp", {"Authorization": f"Bearer {key}"}
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "dash", "version": "1"}}
    async with http.post(url, json=rpc("initialize", params), headers={**POST_HEADERS, **auth}) as resp:
        assert resp.status == 200, await resp.text()
        session = resp.headers["Mcp-Session-Id"]
        await resp.read()
    headers = {**POST_HEADERS, **auth, "Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    async with http.post(url, json=rpc("notifications/initialized", id=None), headers=headers) as resp:
        assert resp.status == 202


async def eventually(http: aiohttp.ClientSession, url: str, check: Any) -> Any:
    """GET an admin path until ``check(body)`` holds (bounded): the heartbeat and the recorder run on their own."""
    body: Any = None
    for _ in range(200):
        status, _, body = await call(http, "GET", url)
        if status == 200 and check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered as expected: {body}")


async def drive_known_traffic(http: aiohttp.ClientSession, gw: Serving) -> None:
    """alice: a session (2 requests) and 5 add; bob: 2 add, whoami (denied), and only_alpha twice (the second
    rate limited). 12 requests, 2 refused."""
    await eventually(http, f"{gw.admin}/status", lambda b: b["upstreams"][0]["state"] == "healthy")
    await open_session(http, gw, ALICE_KEY)
    for i in range(5):
        assert await call_tool(http, gw, ALICE_KEY, "add", {"a": i, "b": 1}) == 200
    for i in range(2):
        assert await call_tool(http, gw, BOB_KEY, "add", {"a": i, "b": 2}) == 200
    assert await call_tool(http, gw, BOB_KEY, "whoami", {}) == 403
    assert await call_tool(http, gw, BOB_KEY, "only_alpha", {}) == 200
    assert await call_tool(http, gw, BOB_KEY, "only_alpha", {}) == 429
    await eventually(
        http,
        f"{gw.admin}/analytics/usage?period=1h",
        lambda b: sum(g["requests"] for g in b["groups"]) == 12,
    )


# --- Chromium over the DevTools Protocol ----------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, found before any gateway starts."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        require_or_skip(
            "Chromium is not installed (Debian: apt-get install chromium): the dashboard test loads the page"
        )
    assert found is not None
    return found


# Installed before the page's own script: records what the Content Security Policy refused.
WATCH_CSP = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""

# Everything the assertions read from the rendered page, in one evaluation.
READ_PAGE = """
(() => {
  const text = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
  const table = (id) => Array.from(document.querySelectorAll(`#${id} tbody tr`)).map((tr) =>
    Object.fromEntries(Array.from(tr.querySelectorAll("td[data-col]"))
      .map((td) => [td.dataset.col, td.textContent.trim()])));
  const chart = (id) => {
    const e = document.getElementById(id);
    return {total: e.dataset.total, points: e.dataset.points, titles: e.querySelectorAll("title").length};
  };
  return {
    state: document.body.dataset.state,
    analytics: document.body.dataset.analytics || null,
    hash: window.location.hash,
    href: window.location.href,
    stored: window.sessionStorage.getItem("mcpgate.admin.token"),
    loginShown: !document.getElementById("login").hidden,
    dashboardShown: !document.getElementById("dashboard").hidden,
    loginError: text("login-error"),
    loginErrorShown: !document.getElementById("login-error").hidden,
    tiles: Object.fromEntries(["total-requests", "total-errors", "error-rate", "p95", "live-sessions",
      "upstreams-healthy"].map((id) => [id, text(id)])),
    updated: text("updated"),
    notices: Array.from(document.querySelectorAll("#notices .notice")).map((n) => n.textContent.trim()),
    upstreams: table("upstreams"), sessions: table("sessions"), tools: table("top-tools"),
    clients: table("top-clients"), rejections: table("rejections"),
    charts: {requests: chart("chart-requests"), errors: chart("chart-errors"), p95: chart("chart-p95")},
    apiCalls: performance.getEntriesByType("resource").map((r) => new URL(r.name).pathname)
      .filter((p) => p.startsWith("/admin/v1/")),
    violations: window.__violations || [],
  };
})()
"""


class Page:
    """One tab of a headless Chromium, driven over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.exceptions: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self.waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the browser closed its DevTools connection"))

    async def send(self, method: str, **params: Any) -> Any:
        number = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[number] = future
        await self.ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        async with asyncio.timeout(WAIT):
            answer = await future
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait_for(self, condition: str) -> None:
        """Until the JavaScript ``condition`` is true in the page (polled, bounded; false while it throws,
        as it does while the document is still loading)."""
        async with asyncio.timeout(WAIT):
            while not await self.evaluate(
                f"(() => {{ try {{ return Boolean({condition}); }} catch {{ return false; }} }})()"
            ):
                await asyncio.sleep(0.1)

    async def read(self) -> dict[str, Any]:
        value = await self.evaluate(READ_PAGE)
        assert isinstance(value, dict)
        return value

    async def screenshot(self, path: Path, *, whole: bool = False) -> bytes:
        """What the window shows, or (``whole``) the whole page."""
        data = base64.b64decode(
            (await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=whole))["data"]
        )
        path.write_bytes(data)
        return data


@asynccontextmanager
async def browser(binary: str, tmp: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile, so its own sessionStorage) with one tab, 1366x768."""
    profile = tmp / "chromium-profile"
    profile.mkdir()
    argv = [
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
        "--window-size=1366,768", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
        "--lang=en-US", "about:blank",
    ]  # fmt: skip
    with (tmp / "chromium.log").open("wb") as log:
        # Its own process group: Chromium's helpers end with it, whatever happens to the test.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(WAIT):
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if proc.returncode is not None:
                    raise AssertionError(
                        f"chromium exited with {proc.returncode}: {(tmp / 'chromium.log').read_text()}"
                    )
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Page.addScriptToEvaluateOnNewDocument", source=WATCH_CSP)
                # A laptop's screen.
                await page.send(
                    "Emulation.setDeviceMetricsOverride", width=1366, height=768, deviceScaleFactor=1, mobile=False
                )
                try:
                    yield page
                finally:
                    with contextlib.suppress(Exception):
                        await page.send("Browser.close")
                    page.reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await page.reader
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 15)  # Browser.close ends it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, and only it
        await asyncio.wait_for(proc.wait(), 15)


def by(rows: list[dict[str, str]], column: str) -> dict[str, dict[str, str]]:
    return {row[column]: row for row in rows}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- the tests ----------------------------------------------------------------------------------------


async def test_the_dashboard_shows_the_traffic_driven_through_the_gateway(
    chromium: str, named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        await drive_known_traffic(http, gw)
        async with browser(chromium, tmp_path) as page:
            await page.open(f"{page_url(gw)}#token={ADMIN_KEY}")
            await page.wait_for("document.body.dataset.state === 'ready'")
            shown = await page.read()

            # The credential left the address bar at once, and is kept in this tab only.
            assert shown["hash"] == "" and "token" not in shown["href"]
            assert shown["stored"] == ADMIN_KEY
            assert shown["dashboardShown"] and not shown["loginShown"]
            assert shown["analytics"] == "on" and shown["notices"] == []

            # Summary: alice 7 requests (a session's 2, add 5), bob 5, 2 of them refused.
            tiles = shown["tiles"]
            assert (tiles["total-requests"], tiles["total-errors"], tiles["error-rate"]) == ("12", "2", "16.7%")
            assert (tiles["live-sessions"], tiles["upstreams-healthy"]) == ("1", "1 / 1")
            assert tiles["p95"].endswith("ms")
            assert re.fullmatch(r"updated \d\d:\d\d:\d\d", shown["updated"])

            (alpha,) = shown["upstreams"]
            assert (alpha["name"], alpha["transport"], alpha["state"]) == ("alpha", "streamable-http", "healthy")
            assert alpha["latency_ms"].endswith("ms") and alpha["last_error"] == "—"
            assert [(s["endpoint"], s["sessions"]) for s in shown["sessions"]] == [("alpha", "1")]

            tools = by(shown["tools"], "tool")
            assert [t["tool"] for t in shown["tools"]] == ["add", "only_alpha", "whoami"]  # most called first
            assert (tools["add"]["invocations"], tools["add"]["unique_clients"], tools["add"]["error_rate"]) == (
                "7", "2", "0%",
            )  # fmt: skip
            assert (tools["only_alpha"]["invocations"], tools["only_alpha"]["error_rate"]) == ("2", "50%")
            assert (tools["whoami"]["invocations"], tools["whoami"]["error_rate"]) == ("1", "100%")
            assert {t["server"] for t in shown["tools"]} == {"alpha"}

            clients = by(shown["clients"], "client")
            assert set(clients) == {"alice", "bob"}
            assert (clients["alice"]["requests"], clients["alice"]["errors"]) == ("7", "0")
            assert (clients["bob"]["requests"], clients["bob"]["errors"]) == ("5", "2")

            # Newest first: the rate limit, then the denial.
            assert [(r["client"], r["server"], r["method"], r["status"], r["reason"], r["rule"]) for r in
                    shown["rejections"]] == [
                ("bob", "alpha", "tools/call · only_alpha", "429", "rate_limited", "rate_limit.rules[0]"),
                ("bob", "alpha", "tools/call · whoami", "403", "forbidden", "policy.rules[0]"),
            ]  # fmt: skip

            charts = shown["charts"]
            assert (charts["requests"]["total"], charts["errors"]["total"]) == ("12", "2")
            assert int(charts["requests"]["points"]) > 1 and charts["requests"]["titles"] > 1  # hover tooltips

            # Under the page's own CSP: nothing refused, nothing thrown.
            assert shown["violations"] == [] and page.exceptions == []
            # Usable on a laptop: nothing wider than the screen; the screenshots are kept for a human to look at.
            assert await page.evaluate("document.documentElement.scrollWidth") <= 1366
            png = await page.screenshot(tmp_path / "dashboard.png")
            assert png_size(png) == (1366, 768) and len(png) > 20_000
            whole = await page.screenshot(tmp_path / "dashboard-whole.png", whole=True)
            assert png_size(whole)[1] > 768

            # It refreshes itself: more traffic shows up without anyone reloading the page.
            for i in range(3):
                assert await call_tool(http, gw, ALICE_KEY, "add", {"a": i, "b": 3}) == 200
            await page.wait_for(
                "document.querySelector('#top-tools tbody tr td[data-col=invocations]').textContent.trim() === '10'"
            )
            assert (await page.read())["tiles"]["total-requests"] == "15"

            # Another period: other buckets, the same requests (all of them within the hour).
            await page.evaluate("document.querySelector('#period button[data-period=\"1h\"]').click()")
            await page.wait_for("document.getElementById('chart-requests-sub').textContent === 'per minute'")
            await page.wait_for("document.body.dataset.state === 'ready'")
            hour = await page.read()
            assert (hour["tiles"]["total-requests"], hour["charts"]["requests"]["total"]) == ("15", "15")
            assert await page.evaluate("window.sessionStorage.getItem('mcpgate.admin.period')") == "1h"

            # One client's usage, from its row.
            await page.evaluate("document.querySelector('#top-clients button[data-client=bob]').click()")
            await page.wait_for("document.getElementById('client-dialog').open")
            await page.wait_for("document.querySelectorAll('#client-body td[data-col=tool]').length === 3")
            detail = await page.evaluate(
                "Array.from(document.querySelectorAll('#client-body tbody tr')).map((tr) => tr.textContent)"
            )
            assert any("whoami" in row for row in detail)
            await page.evaluate("document.getElementById('client-close').click()")

            # Signing out forgets the credential and every number shown.
            await page.evaluate("document.getElementById('sign-out').click()")
            await page.wait_for("document.body.dataset.state === 'login'")
            gone = await page.read()
            assert gone["stored"] is None and gone["loginShown"] and not gone["dashboardShown"]
            assert gone["tools"] == gone["clients"] == gone["rejections"] == gone["upstreams"] == []
            assert gone["tiles"]["total-requests"] == NOTHING
            assert page.exceptions == []


async def test_without_a_credential_the_page_asks_for_one_and_shows_nothing(
    chromium: str, named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        await drive_known_traffic(http, gw)
        _, _, refused = await call(http, "GET", f"{gw.admin}/status", key="not-an-admin-key")
        async with browser(chromium, tmp_path) as page:
            await page.open(page_url(gw))
            await page.wait_for("document.body.dataset.state === 'login'")
            shown = await page.read()
            assert shown["loginShown"] and not shown["dashboardShown"] and not shown["loginErrorShown"]
            assert shown["apiCalls"] == []  # without a credential it asks nothing
            assert shown["tools"] == shown["clients"] == shown["rejections"] == shown["upstreams"] == []
            assert shown["tiles"]["total-requests"] == NOTHING
            assert await page.evaluate("document.getElementById('login-key').type") == "password"

            # A wrong key through the form: the API's own words, and still nothing shown.
            submit = (
                "document.getElementById('login-key').value = {!r}; document.getElementById('login-submit').click()"
            )
            await page.evaluate(submit.format("not-an-admin-key"))
            await page.wait_for("!document.getElementById('login-error').hidden")
            shown = await page.read()
            assert shown["state"] == "login" and shown["loginError"] == refused["detail"]
            assert shown["stored"] is None and shown["tools"] == []

            # The right one: the dashboard.
            await page.evaluate(submit.format(ADMIN_KEY))
            await page.wait_for("document.body.dataset.state === 'ready'")
            shown = await page.read()
            assert shown["stored"] == ADMIN_KEY and shown["tiles"]["total-requests"] == "12"
            assert shown["violations"] == [] and page.exceptions == []


async def test_a_wrong_token_in_the_fragment_shows_why(
    chromium: str, named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        _, _, refused = await call(http, "GET", f"{gw.admin}/status", key="wrong-token")
        async with browser(chromium, tmp_path) as page:
            await page.open(f"{page_url(gw)}#token=wrong-token")
            await page.wait_for("document.body.dataset.state === 'login'")
            await page.wait_for("!document.getElementById('login-error').hidden")
            shown = await page.read()
            assert shown["loginError"] == refused["detail"] == "The credential is not valid here"
            assert shown["hash"] == "" and shown["stored"] is None
            assert not shown["dashboardShown"] and shown["upstreams"] == []
            assert page.exceptions == []


async def test_without_analytics_the_page_still_shows_status(
    chromium: str, named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path, analytics=False)) as gw, aiohttp.ClientSession() as http:
        await eventually(http, f"{gw.admin}/status", lambda b: b["upstreams"][0]["state"] == "healthy")
        status, _, off = await call(http, "GET", f"{gw.admin}/analytics/usage")
        assert status == 404
        async with browser(chromium, tmp_path) as page:
            await page.open(f"{page_url(gw)}#token={ADMIN_KEY}")
            await page.wait_for("document.body.dataset.state === 'ready'")
            shown = await page.read()
            assert shown["analytics"] == "off"
            assert shown["notices"] == [f"Analytics are off. {off['detail']}"]
            assert [(u["name"], u["state"]) for u in shown["upstreams"]] == [("alpha", "healthy")]
            assert shown["tiles"]["upstreams-healthy"] == "1 / 1" and shown["tiles"]["live-sessions"] == "0"
            assert shown["tools"] == shown["clients"] == shown["rejections"] == []
            assert shown["violations"] == [] and page.exceptions == []


# --- the files themselves, over plain HTTP ------------------------------------------------------------


class Markup(HTMLParser):
    """What index.html asks a browser to load or run, for the CSP's sake."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.styles: list[str] = []  # <style> blocks and style= attributes
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if "style" in named or tag == "style":
            self.styles.append(tag)
        if any(name.startswith("on") for name in named):
            self.inline_script = True  # an event handler attribute
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True
        for name in ("src", "href", "action"):
            if named.get(name):
                self.links.append(str(named[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def test_the_page_needs_nothing_inline_and_nothing_from_elsewhere() -> None:
    markup = Markup()
    markup.feed((STATIC / "index.html").read_text())
    assert [s.get("src") for s in markup.scripts] == ["dashboard.js"]
    assert not markup.inline_script and markup.styles == []
    assert sorted(markup.links) == ["dashboard.css", "dashboard.js"]
    script = (STATIC / "dashboard.js").read_text()
    # Text from the API is never parsed as HTML, and nothing is fetched from another origin.
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert unsafe not in script, unsafe
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        addresses = set(re.findall(r"https?://[^\s\"'`)]+", (STATIC / name).read_text()))
        assert addresses <= {"http://www.w3.org/2000/svg"}, (name, addresses)


async def test_the_files_are_public_under_a_strict_csp_and_the_api_is_not(
    named_upstreams: dict[str, str], tmp_path: Path
) -> None:
    async with serving(gateway_yaml(named_upstreams, tmp_path)) as gw, aiohttp.ClientSession() as http:
        base = page_url(gw)
        for path, kind in (("", "text/html"), ("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with http.get(base + path) as resp:  # no credential
                assert resp.status == 200, path
                assert resp.content_type == kind
                csp = resp.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
                assert "unsafe-inline" not in csp and "connect-src 'self'" in csp
                assert "frame-ancestors 'none'" in csp and resp.headers["X-Frame-Options"] == "DENY"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                name = path or "index.html"
                assert await resp.read() == (STATIC / name).read_bytes()
        async with http.get(base.rstrip("/"), allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (308, "/admin/")
        async with http.get(base + "nothing.js") as resp:
            assert resp.status == 404
        for path in ("status", "analytics/usage", "analytics/tools", "analytics/timeseries", "analytics/rejections"):
            status, headers, body = await call(http, "GET", f"{gw.admin}/{path}", key=None)
            assert (status, body["status"]) == (401, 401), path
            assert headers["Content-Type"].startswith("application/problem+json")
