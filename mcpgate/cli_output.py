"""What the ``mcpgate`` verbs print: tables, JSON, config issues, targets and verdicts.

Pure presentation, kept apart from ``cli.py`` so that the verbs there stay thin (parse flags,
call the library, choose the exit code). Nothing here exits or reads a config file. The config
types are imported for annotations only: this module is loaded by ``--version`` and by
``health --url`` (a Docker HEALTHCHECK), which must not pay for the YAML and JSON Schema imports.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import click

if TYPE_CHECKING:
    from mcpgate.auth.identity import Identity
    from mcpgate.config import Config, ConfigError, ConfigIssue, UpstreamConfig
    from mcpgate.observability.logging import Redactor
    from mcpgate.policy import Verdict
    from mcpgate.routing import Route, RoutingReport


# -- shared ------------------------------------------------------------------------------------


def print_issues(err: ConfigError) -> int:
    """Every issue on stderr, one per line, like a compiler; returns how many."""
    for issue in err.issues:
        click.echo(str(issue), err=True)
    if not err.issues:
        click.echo(str(err), err=True)
    return max(1, len(err.issues))


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    lines = (
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in (headers, *rows)
    )
    return "\n".join(line.rstrip() for line in lines)


WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


def reachable_host(host: str) -> str:
    """Where to reach, from this machine, a gateway listening on ``host``: a wildcard means loopback."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def display_target(upstream: UpstreamConfig, redactor: Redactor) -> str:
    """URL or command line, with anything that looks like a credential masked."""
    if upstream.url is not None:
        return redactor.url(upstream.url)
    return shlex.join(redactor.argv(upstream.command))


# -- start -------------------------------------------------------------------------------------


def describe_bind_error(exc: OSError) -> str:
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()  # "address already in use", "permission denied"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[:1].lower() + reason[1:]


# -- validate ----------------------------------------------------------------------------------


def issue_dict(issue: ConfigIssue) -> dict[str, Any]:
    return {"file": issue.file, "line": issue.line, "col": issue.col, "path": issue.path, "message": issue.message}


# -- routes ------------------------------------------------------------------------------------


def server_route(upstream: UpstreamConfig, redactor: Redactor) -> dict[str, Any]:
    served = True  # every transport is served; the field stays for scripts that read it
    return {
        "path": f"/servers/{upstream.name}/mcp",
        "alias": f"/mcp/{upstream.name}",
        "upstream": upstream.name,
        "transport": upstream.transport,
        "target": display_target(upstream, redactor),
        "served": served,
        "status": "served",
    }


def unified_dict(report: RoutingReport) -> dict[str, Any]:
    """The unified endpoint's compiled table, for ``routes --json`` and the text below."""
    return {
        "path": "/mcp",
        "served": True,
        "rules": [
            {"index": r.index, "match": dict(r.match), "upstream": r.upstream, "shadowed_by": r.shadowed_by}
            for r in report.rules
        ],
        "prefixes": [
            {"upstream": upstream, "prefix": prefix, "shadowed_by": report.prefix_shadowed_by.get(upstream)}
            for upstream, prefix in report.prefixes
        ],
        "catalogue": {"shadowed_by": report.catalogue_shadowed_by},
        "unreachable": list(report.unreachable),
        "unsafe_prefixes": list(report.unsafe_prefixes),
    }


def format_match(match: Mapping[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in match.items())


def _shadowed(index: int | None) -> str:
    return "" if index is None else f"never matches: routing[{index}] takes it all first"


def routes_text(servers: Sequence[Mapping[str, Any]], unified: Mapping[str, Any]) -> str:
    """The per-server paths, then the unified endpoint's table in the order it is consulted."""
    headers = ("PATH", "UPSTREAM", "TRANSPORT", "TARGET", "STATUS")
    keys = ("path", "upstream", "transport", "target", "status")
    lines = [render_table(headers, [[s[k] for k in keys] for s in servers]), "Each path is also served as /mcp/<name>."]
    rows = [
        [str(r["index"]), format_match(r["match"]), r["upstream"], _shadowed(r["shadowed_by"])]
        for r in unified["rules"]
    ]
    rows += [
        ["-", f"name={p['prefix']}*", p["upstream"], _shadowed(p["shadowed_by"]) or "prefix (stripped)"]
        for p in unified["prefixes"]
    ]
    rows.append(
        [
            "-",
            "listed by an upstream",
            "(first in file order)",
            _shadowed(unified["catalogue"]["shadowed_by"]) or "catalogue",
        ]
    )
    lines += ["", "The unified endpoint /mcp; a call takes the first row that matches:"]
    lines.append(render_table(("#", "MATCH", "UPSTREAM", "NOTE"), rows))
    if unified["unreachable"]:
        lines.append(f"Unreachable through /mcp (nothing routes to them): {', '.join(unified['unreachable'])}")
    if unified["unsafe_prefixes"]:
        names = ", ".join(unified["unsafe_prefixes"])
        lines.append(
            f"Prefixes that make tool names Claude and OpenAI clients reject (^[a-zA-Z0-9_-]{{1,64}}$): {names}"
        )
    return "\n".join(lines)


def check_dict(method: str, name: str | None, found: Route | None) -> dict[str, Any]:
    route = None if found is None else {"upstream": found.upstream, "name": found.name, "via": found.via}
    return {"method": method, "name": name, "route": route}


def check_text(verdict: Mapping[str, Any]) -> str:
    request = " ".join(part for part in (verdict["method"], verdict["name"]) if part)
    route = verdict["route"]
    if route is None:
        catalogue = " unless an upstream lists it (the catalogue fallback, known only at run time)"
        return f"{request}: no rule or prefix routes it{catalogue if verdict['name'] else ''}"
    renamed = f" as {route['name']}" if route["name"] and route["name"] != verdict["name"] else ""
    return f"{request} -> {route['upstream']}{renamed} (by {route['via']})"


# -- policy ----------------------------------------------------------------------------------


def policy_report(config: Config) -> dict[str, Any]:
    from mcpgate.policy import rule_dict, rule_notes

    policy = config.policy
    if policy is None:
        return {"configured": False, "default": "allow", "shadow": False, "rules": []}
    notes = rule_notes(config)
    rules = [{**rule_dict(rule), "notes": notes.get(rule.index, [])} for rule in policy.rules]
    return {"configured": True, "default": policy.default, "shadow": policy.shadow, "rules": rules}


CONDITIONS: Final = ("clients", "roles", "servers", "methods", "tools", "prompts", "resources")


def policy_text(report: Mapping[str, Any]) -> str:
    if not report["configured"]:
        return "no policy section: every request of an authenticated (or, without auth, any) client is allowed"
    shadow = " (shadow mode: denials are logged, not enforced)" if report["shadow"] else ""
    lines = [f"policy: {len(report['rules'])} rules, first match wins; default {report['default']}{shadow}"]
    if report["rules"]:
        rows = [
            [
                f"policy.rules[{rule['index']}]",
                rule["decision"],
                "; ".join(f"{key}: {', '.join(rule[key])}" for key in CONDITIONS if key in rule) or "(every request)",
            ]
            for rule in report["rules"]
        ]
        lines.append(render_table(("RULE", "DECISION", "MATCHES"), rows))
    for rule in report["rules"]:
        lines += [f"policy.rules[{rule['index']}]: {note}" for note in rule["notes"]]
    return "\n".join(lines)


def verdict_dict(config: Config, identity: Identity, method: str, name: str | None, verdict: Verdict) -> dict[str, Any]:
    from mcpgate.policy import rule_dict

    decision = verdict.decision
    rule = None
    if decision is not None and decision.rule is not None and config.policy is not None:
        rule = rule_dict(config.policy.rules[decision.rule])
    return {
        "request": {"method": method, "name": name},
        "client": {"id": identity.client_id, "roles": list(identity.roles)},
        "upstream": verdict.server,
        "item": None if verdict.item is None else {"kind": verdict.item[0], "name": verdict.item[1]},
        "via": verdict.via,
        "decision": None if decision is None else ("allow" if decision.allowed else "deny"),
        "by": None if decision is None else decision.where,
        "rule": rule,
        "policy_configured": config.policy is not None,
    }


def verdict_text(verdict: Mapping[str, Any]) -> str:
    request = " ".join(part for part in (verdict["request"]["method"], verdict["request"]["name"]) if part)
    client = verdict["client"]
    roles = ", ".join(client["roles"]) or "none"
    if verdict["decision"] is None:
        return (
            f"{request}: unknown — no routing rule or prefix routes it, so only the upstreams' lists "
            "(at run time) say where it goes; check it with --server NAME"
        )
    lines = [f"{verdict['decision']}: {request} by client {client['id']!r} (roles: {roles})"]
    if verdict["upstream"] is None:
        lines.append("  answered by the gateway on /mcp")
    else:
        item = verdict["item"]
        seen = f", {item['kind']} {item['name']!r} as the upstream names it" if item else ""
        how = "its own endpoint" if verdict["via"] == "endpoint" else f"/mcp, routed by {verdict['via']}"
        lines.append(f"  upstream {verdict['upstream']!r} via {how}{seen}")
    if not verdict["policy_configured"]:
        lines.append("  decided by: no policy section (everything is allowed)")
    elif verdict["rule"] is None:
        lines.append(f"  decided by: {verdict['by']} (no rule matched)")
    else:
        rule = verdict["rule"]
        conditions = "; ".join(f"{key}: {', '.join(rule[key])}" for key in CONDITIONS if key in rule)
        lines.append(f"  decided by: {verdict['by']} ({conditions or 'every request'} -> {rule['decision']})")
    return "\n".join(lines)


# -- list-servers ------------------------------------------------------------------------------


def server_info(upstream: UpstreamConfig, redactor: Redactor) -> dict[str, Any]:
    auth = upstream.auth
    return {
        "name": upstream.name,
        "transport": upstream.transport,
        "target": display_target(upstream, redactor),
        "auth": "none" if auth is None else ("bearer" if auth.type == "bearer" else f"header:{auth.header}"),
        "prefix": upstream.prefix,
    }


PROBE_COLUMNS: Final = ("HEALTH", "PROTOCOL", "TOOLS", "RESOURCES", "PROMPTS", "LATENCY")


def servers_table(servers: Sequence[Mapping[str, Any]]) -> str:
    headers: tuple[str, ...] = ("NAME", "TRANSPORT", "TARGET", "AUTH", "PREFIX")
    probed = bool(servers) and "probe" in servers[0]
    if probed:
        headers += PROBE_COLUMNS
    rows = []
    errors = []
    for s in servers:
        row = [s["name"], s["transport"], s["target"], s["auth"], s["prefix"] or "-"]
        if probed:
            row += probe_cells(s["probe"])
            if s["probe"]["error"]:
                errors.append(f"{s['name']}: {s['probe']['error']}")
        rows.append(row)
    table = render_table(headers, rows)
    return "\n".join([table, "", *errors]) if errors else table


def probe_cells(probe: Mapping[str, Any]) -> list[str]:
    def count(key: str) -> str:
        return "-" if probe[key] is None else str(probe[key])

    latency = probe["latency_ms"]
    return [
        "healthy" if probe["healthy"] else "unhealthy",
        probe["protocol_version"] or "-",
        count("tools"),
        count("resources"),
        count("prompts"),
        "-" if latency is None else f"{latency:.1f}ms",
    ]


# -- health ------------------------------------------------------------------------------------


def health_line(shown: str, status: int | None, body: Any, problem: str | None) -> str:
    """One line for a person or a container log: healthy, unhealthy (with why) or unreachable."""
    if problem is not None:
        return f"unreachable: {shown}: {problem}"
    if status == 200:
        return f"healthy: {shown} (200)"
    reason = readiness_reason(body)
    return f"unhealthy: {shown} ({status})" + (f": {reason}" if reason else "")


def readiness_reason(body: Any) -> str | None:
    """A short why from the gateway's readiness body: its status and the upstreams holding it back."""
    if not isinstance(body, Mapping):
        return None
    status = body.get("status")
    held_back = []
    upstreams = body.get("upstreams")
    if isinstance(upstreams, Mapping):
        for name, state in upstreams.items():
            if isinstance(state, Mapping) and state.get("state") in ("unhealthy", "unknown"):
                error = state.get("last_error")
                held_back.append(f"{name} {state['state']}" + (f" ({error})" if error else ""))
    parts = [str(status)] if isinstance(status, str) and status else []
    if held_back:
        parts.append(", ".join(held_back))
    return ": ".join(parts)[:300] or None
