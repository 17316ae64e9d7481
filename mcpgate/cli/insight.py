"""``mcpgate admin status`` and ``mcpgate admin analytics ...``: what the gateway is doing now,
and who used which tool, how often and how fast (DESIGN section 10), as tables for a terminal.

Both join the ``admin`` group (the CLI's entry point adds them). Each command is one GET on the
admin listener; ``--json`` prints the answer as the API gave it.
Options are passed on as query parameters and checked by the gateway, so that the API and the
command line can never disagree on what a period or a bucket may be: a bad one is the API's 400,
printed as ``--option: what is wrong`` (exit 1).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import click

from mcpgate.cli.admin import Settings, json_flag, pass_settings, quoted
from mcpgate.cli_output import emit_json, render_table

PERIOD_HELP = "How far back: a number and a unit (s, m, h, d, w), such as 30m, 24h or 7d."


def _ask(settings: Settings, path: str, **params: str | int | None) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    answer = settings.client().call("GET", path + (f"?{query}" if query else ""))
    if settings.as_json:
        emit_json(answer.body)
        return None
    return answer.body


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _stats(row: Mapping[str, Any]) -> list[str]:
    return [str(row["requests"]), str(row["errors"]), _ms(row["p50_ms"]), _ms(row["p95_ms"]),
            str(row["bytes_in"]), str(row["bytes_out"])]  # fmt: skip


STATS = ("REQUESTS", "ERRORS", "P50 MS", "P95 MS", "BYTES IN", "BYTES OUT")


def _name(value: Any) -> str:
    return "-" if value is None else str(value)


def _echo_table(headers: Sequence[str], rows: list[list[str]], empty: str) -> None:
    click.echo(render_table(headers, rows) if rows else empty)


def period_option(func: Any) -> Any:
    return click.option("--period", metavar="SPAN", help=PERIOD_HELP + "  [default: 24h]")(func)


@click.command("status", short_help="Show upstream health, open sessions, the store and analytics")
@json_flag
@pass_settings
def status(settings: Settings) -> None:
    """Each upstream's health and heartbeat latency, the open sessions by endpoint, and the state of
    the store and of the analytics writer (events written, dropped, failed)."""
    body = _ask(settings, "/status")
    if body is None:
        return
    rows = [
        [u["name"], u.get("transport", "-"), u.get("state", "-"), _ms(u.get("latency_ms")), u.get("last_error") or "-"]
        for u in body.get("upstreams", [])
    ]
    _echo_table(("UPSTREAM", "TRANSPORT", "HEALTH", "LATENCY MS", "LAST ERROR"), rows, "no upstreams")
    sessions = body.get("sessions", {})
    by = ", ".join(f"{name} {count}" for name, count in sessions.get("by_endpoint", {}).items())
    click.echo(f"sessions: {sessions.get('total', 0)}" + (f" ({by})" if by else ""))
    store = body.get("store") or {}
    click.echo(f"store: {store.get('backend', '-')}, {store.get('state', '-')}")
    analytics = body.get("analytics")
    if analytics is None:
        click.echo("analytics: not configured")
    else:
        line = (
            f"analytics: {analytics['backend']}, {analytics['state']}; {analytics['written']} written, "
            f"{analytics['dropped']} dropped, {analytics['failed']} failed, {analytics['queued']} queued"
        )
        click.echo(line + (f" ({analytics['last_error']})" if analytics.get("last_error") else ""))


@click.group(short_help="Ask the usage analytics: who used which tool, how often, how fast")
def analytics() -> None:
    """Questions to the analytics the gateway keeps (the analytics section): one GET each on
    /admin/v1/analytics, printed as a table."""


@analytics.command("usage", short_help="Requests, errors, latency and bytes per client, upstream or tool")
@period_option
@click.option(
    "--group-by", type=click.Choice(["client", "server", "tool"]), default="client", show_default=True,
    help="What one row is.",
)  # fmt: skip
@json_flag
@pass_settings
def usage(settings: Settings, period: str | None, group_by: str) -> None:
    """One row per client, upstream or tool, most requests first, and the period's total."""
    body = _ask(settings, "/analytics/usage", period=period, group_by=group_by)
    if body is None:
        return
    keys = {"client": ("client",), "server": ("server",), "tool": ("server", "tool")}[group_by]
    rows = [[_name(g.get(k)) for k in keys] + _stats(g) for g in body["groups"]]
    rows.append(["TOTAL", *([""] * (len(keys) - 1)), *_stats(body["totals"])])
    click.echo(render_table((*(k.upper() for k in keys), *STATS), rows))
    if body.get("truncated"):
        click.echo("(the first 1000 groups; the total covers them all)")


@analytics.command("client", short_help="One client's totals, per upstream and per tool")
@click.argument("client_id")
@period_option
@json_flag
@pass_settings
def client(settings: Settings, client_id: str, period: str | None) -> None:
    """CLIENT_ID as authentication names it (an API key's id, a token's subject)."""
    path = "/analytics/usage/" + quoted(client_id)
    body = _ask(settings, path, period=period)
    if body is None:
        return
    click.echo(render_table(STATS, [_stats(body["totals"])]))
    rows = [[_name(s["server"]), *_stats(s)] for s in body["servers"]]
    if rows:
        click.echo()
        click.echo(render_table(("SERVER", *STATS), rows))
    rows = [[_name(t["server"]), t["tool"], *_stats(t)] for t in body["tools"]]
    if rows:
        click.echo()
        click.echo(render_table(("SERVER", "TOOL", *STATS), rows))


@analytics.command("tools", short_help="The most called tools: clients, p95 latency, error rate")
@period_option
@click.option("--limit", type=int, metavar="N", help="How many tools (1 to 1000).  [default: 10]")
@json_flag
@pass_settings
def tools(settings: Settings, period: str | None, limit: int | None) -> None:
    """Tools by invocations (tools/call), most called first."""
    body = _ask(settings, "/analytics/tools", period=period, limit=limit)
    if body is None:
        return
    rows = [
        [_name(t["server"]), t["tool"], str(t["invocations"]), str(t["unique_clients"]), _ms(t["p95_ms"]),
         f"{t['error_rate']:.1%}"]
        for t in body["tools"]
    ]  # fmt: skip
    _echo_table(("SERVER", "TOOL", "CALLS", "CLIENTS", "P95 MS", "ERRORS"), rows, "no tool calls in this period")


@analytics.command("timeseries", short_help="Requests, errors or p95 latency per time bucket")
@period_option
@click.option("--bucket", metavar="SPAN", help="The width of one point, like --period; by default a fitting one.")
@click.option(
    "--metric", type=click.Choice(["requests", "errors", "p95_ms"]), default="requests", show_default=True,
    help="What each point counts.",
)  # fmt: skip
@click.option("--server", metavar="NAME", help="Only this upstream's requests.")
@click.option("--tool", metavar="NAME", help="Only calls of this tool.")
@json_flag
@pass_settings
def timeseries(
    settings: Settings, period: str | None, bucket: str | None, metric: str, server: str | None, tool: str | None
) -> None:
    """Every bucket of the period, oldest first; empty ones are 0."""
    params = {"period": period, "bucket": bucket, "metric": metric, "server": server, "tool": tool}
    body = _ask(settings, "/analytics/timeseries", **params)
    if body is None:
        return
    rows = [[p["timestamp"], _ms(p["value"])] for p in body["points"]]
    click.echo(render_table(("TIME", metric.upper().replace("_", " ")), rows))


@analytics.command("rejections", short_help="Recent policy denials, rate limits and failed authentication")
@period_option
@click.option("--limit", type=int, metavar="N", help="How many (1 to 1000).  [default: 20]")
@click.option(
    "--reason",
    type=click.Choice(["forbidden", "rate_limited", "unauthenticated", "invalid_token", "insufficient_scope"]),
    help="Only this kind.",
)
@json_flag
@pass_settings
def rejections(settings: Settings, period: str | None, limit: int | None, reason: str | None) -> None:
    """The latest requests the gateway refused, newest first, with the rule that refused them."""
    body = _ask(settings, "/analytics/rejections", period=period, limit=limit, reason=reason)
    if body is None:
        return
    rows = [
        [r["time"], r["client_id"], _name(r["server"]), _name(r["method"]), _name(r["item"]), str(r["status"]),
         r["reason"], _name(r["rule"])]
        for r in body["rejections"]
    ]  # fmt: skip
    headers = ("TIME", "CLIENT", "SERVER", "METHOD", "ITEM", "STATUS", "REASON", "RULE")
    _echo_table(headers, rows, "no rejections in this period")
