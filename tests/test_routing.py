"""The unified endpoint's router: first match wins across explicit rules, prefixes and the catalogue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from mcpgate.config.model import Glob, RouteMatch, RoutingRule, UpstreamConfig
from mcpgate.routing import (
    CALL_KIND,
    CLIENT_SAFE_NAME,
    LIST_KIND,
    Catalogue,
    Kind,
    ListedKind,
    Route,
    Router,
    RuleReport,
    addressed_item,
    template_regex,
)


def up(name: str, prefix: str | None = None) -> UpstreamConfig:
    return UpstreamConfig(name=name, transport="streamable-http", url="http://127.0.0.1:1/mcp", prefix=prefix)


def rule(
    index: int,
    upstream: str,
    method: str = "*",
    tool: str | None = None,
    resource: str | None = None,
    prompt: str | None = None,
) -> RoutingRule:
    def glob(pattern: str | None) -> Glob | None:
        return None if pattern is None else Glob.compile(pattern)

    return RoutingRule(index, RouteMatch(Glob.compile(method), glob(tool), glob(resource), glob(prompt)), upstream)


NO_CATALOGUE = Catalogue()
ORDER = ("gh", "a", "b", "c")
UPSTREAMS = (up("gh", "github"), up("a"), up("b"), up("c"))


def router(*rules: RoutingRule, upstreams: tuple[UpstreamConfig, ...] = UPSTREAMS) -> Router:
    return Router(rules, upstreams)


# --- addressed_item ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("tools/call", {"name": "search", "arguments": {}}, ("tool", "search")),
        ("prompts/get", {"name": "greet"}, ("prompt", "greet")),
        ("resources/read", {"uri": "file:///a"}, ("resource", "file:///a")),
        ("resources/subscribe", {"uri": "file:///a"}, ("resource", "file:///a")),
        ("resources/unsubscribe", {"uri": "file:///a"}, ("resource", "file:///a")),
        ("tools/call", {}, None),
        ("tools/call", {"name": 3}, None),
        ("resources/read", {"name": "file:///a"}, None),
        ("tools/list", {"name": "search"}, None),
        ("ping", {}, None),
    ],
)
def test_addressed_item_of_calls(method: str, params: dict[str, Any], expected: tuple[Kind, str] | None) -> None:
    assert addressed_item(method, params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ref": {"type": "ref/prompt", "name": "github__greet"}}, ("prompt", "github__greet")),
        ({"ref": {"type": "ref/resource", "uri": "kb://{id}"}}, ("resource", "kb://{id}")),
        ({"ref": {"type": "ref/prompt", "uri": "kb://1"}}, None),
        ({"ref": {"type": "ref/tool", "name": "x"}}, None),
        ({"ref": "ref/prompt"}, None),
        ({}, None),
    ],
)
def test_addressed_item_of_completion_refs(params: dict[str, Any], expected: tuple[Kind, str] | None) -> None:
    assert addressed_item("completion/complete", params) == expected


def test_method_tables() -> None:
    assert set(CALL_KIND.values()) == set(LIST_KIND.values()) == {"tool", "prompt", "resource"}
    assert CLIENT_SAFE_NAME.match("github__search_issues")
    assert not CLIENT_SAFE_NAME.match("math.add")
    assert not CLIENT_SAFE_NAME.match("x" * 65)


# --- explicit rules ---------------------------------------------------------------------------------------------


def test_first_match_wins_across_explicit_rules() -> None:
    r = router(rule(0, "a", "tools/call", tool="math.*"), rule(1, "b", "tools/call"), rule(2, "c", "tools/call"))
    assert r.route("tools/call", ("tool", "math.add"), NO_CATALOGUE) == Route("a", "math.add", "routing[0]")
    assert r.route("tools/call", ("tool", "search"), NO_CATALOGUE) == Route("b", "search", "routing[1]")


def test_rules_apply_in_index_order_not_sequence_order() -> None:
    r = router(rule(1, "b"), rule(0, "a"))
    assert r.route("ping", None, NO_CATALOGUE) == Route("a", "", "routing[0]")


def test_rule_with_tool_glob_does_not_match_prompts_or_requests_without_item() -> None:
    r = router(rule(0, "a", tool="*"), rule(1, "b", "prompts/get"))
    assert r.route("prompts/get", ("prompt", "greet"), NO_CATALOGUE) == Route("b", "greet", "routing[1]")
    assert r.route("tools/call", ("tool", "greet"), NO_CATALOGUE) == Route("a", "greet", "routing[0]")
    assert r.route("tools/call", None, NO_CATALOGUE) is None


def test_rule_without_item_glob_matches_with_and_without_item() -> None:
    r = router(rule(0, "c", "*"))
    assert r.route("ping", None, NO_CATALOGUE) == Route("c", "", "routing[0]")
    assert r.route("tools/call", ("tool", "github__x"), NO_CATALOGUE) == Route("c", "github__x", "routing[0]")
    assert r.route("resources/read", ("resource", "kb://1"), NO_CATALOGUE) == Route("c", "kb://1", "routing[0]")


def test_explicit_rule_strips_the_target_prefix_from_names_only() -> None:
    r = router(rule(0, "gh", "tools/call", tool="github__*"), rule(1, "gh", "resources/read"), rule(2, "gh", "*"))
    assert r.route("tools/call", ("tool", "github__search"), NO_CATALOGUE) == Route("gh", "search", "routing[0]")
    # Nothing after the prefix: forwarded as it came, not as "".
    assert r.route("tools/call", ("tool", "github__"), NO_CATALOGUE) == Route("gh", "github__", "routing[0]")
    assert r.route("prompts/get", ("prompt", "github__p"), NO_CATALOGUE) == Route("gh", "p", "routing[2]")
    assert r.route("prompts/get", ("prompt", "plain"), NO_CATALOGUE) == Route("gh", "plain", "routing[2]")
    uri: tuple[Kind, str] = ("resource", "github__kb://1")
    assert r.route("resources/read", uri, NO_CATALOGUE) == Route("gh", "github__kb://1", "routing[1]")


def test_explicit_rule_matches_the_client_visible_name() -> None:
    r = router(rule(0, "gh", "tools/call", tool="search"))
    assert r.route("tools/call", ("tool", "search"), NO_CATALOGUE) == Route("gh", "search", "routing[0]")
    assert r.route("tools/call", ("tool", "github__search"), NO_CATALOGUE) == Route("gh", "search", "prefix")


def test_rule_with_item_globs_of_two_kinds_never_matches() -> None:
    r = router(rule(0, "a", tool="*", prompt="*"))
    assert r.route("tools/call", ("tool", "x"), NO_CATALOGUE) is None
    assert r.route("prompts/get", ("prompt", "x"), NO_CATALOGUE) is None


def test_rule_naming_an_unknown_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^routing\[4\]\.upstream: unknown upstream 'nope'$"):
        router(rule(4, "nope"))


# --- implicit prefix rules --------------------------------------------------------------------------------------


def test_implicit_prefix_rule_strips_the_prefix() -> None:
    r = router()
    assert r.route("tools/call", ("tool", "github__search"), NO_CATALOGUE) == Route("gh", "search", "prefix")
    assert r.route("prompts/get", ("prompt", "github__greet"), NO_CATALOGUE) == Route("gh", "greet", "prefix")
    assert r.route("tools/call", ("tool", "github__a__b"), NO_CATALOGUE) == Route("gh", "a__b", "prefix")
    assert r.route("tools/call", ("tool", "github__"), NO_CATALOGUE) is None
    assert r.route("tools/call", ("tool", "github_search"), NO_CATALOGUE) is None
    assert r.route("resources/read", ("resource", "github__x"), NO_CATALOGUE) is None


def test_custom_separator() -> None:
    r = Router((), (up("gh", "github"),), separator="-")
    assert r.route("tools/call", ("tool", "github-search"), NO_CATALOGUE) == Route("gh", "search", "prefix")
    assert r.exposed_name("gh", "tool", "search") == "github-search"


def test_explicit_rule_takes_a_name_away_from_a_prefixed_upstream() -> None:
    r = router(rule(0, "a", "tools/call", tool="github__delete_*"))
    assert r.route("tools/call", ("tool", "github__delete_repo"), NO_CATALOGUE) == Route(
        "a", "github__delete_repo", "routing[0]"
    )
    assert r.route("tools/call", ("tool", "github__search"), NO_CATALOGUE) == Route("gh", "search", "prefix")


# --- catalogue fallback -----------------------------------------------------------------------------------------


def test_catalogue_build_orders_by_file_order_and_drops_duplicates_and_strangers() -> None:
    listed: dict[str, dict[ListedKind, list[str]]] = {
        "b": {"tool": ["echo", "echo"], "template": ["kb://{id}", "kb://{id}"]},
        "stranger": {"tool": ["echo"]},
        "a": {"tool": ["echo", "add"], "prompt": ["greet"], "resource": ["file:///x"], "template": ["file:///{+p}"]},
    }
    assert Catalogue.build(listed, ORDER) == Catalogue(
        tools={"echo": ("a", "b"), "add": ("a",)},
        prompts={"greet": ("a",)},
        resources={"file:///x": ("a",)},
        templates=(("a", "file:///{+p}"), ("b", "kb://{id}")),
    )


def test_catalogue_picks_the_first_upstream_in_file_order() -> None:
    catalogue = Catalogue.build({"c": {"tool": ["echo"]}, "b": {"tool": ["echo"], "prompt": ["greet"]}}, ORDER)
    r = router()
    assert r.route("tools/call", ("tool", "echo"), catalogue) == Route("b", "echo", "catalogue")
    assert r.route("prompts/get", ("prompt", "greet"), catalogue) == Route("b", "greet", "catalogue")
    assert r.route("tools/call", ("tool", "greet"), catalogue) is None


def test_catalogue_does_not_reach_bare_names_of_a_prefixed_upstream() -> None:
    r = router()
    only_prefixed = Catalogue.build({"gh": {"tool": ["search"]}}, ORDER)
    assert r.route("tools/call", ("tool", "search"), only_prefixed) is None
    both = Catalogue.build({"gh": {"tool": ["search"]}, "c": {"tool": ["search"]}}, ORDER)
    assert r.route("tools/call", ("tool", "search"), both) == Route("c", "search", "catalogue")


def test_resources_route_by_listed_uri_then_by_template() -> None:
    catalogue = Catalogue.build(
        {
            "gh": {"resource": ["repo://x/readme"], "template": ["repo://{owner}/{repo}"]},
            "a": {"template": ["file:///{+path}", "repo://{+all}"]},
            "b": {"resource": ["file:///etc/motd", "repo://x/readme"]},
        },
        ORDER,
    )
    r = router()
    assert r.route("resources/read", ("resource", "file:///etc/motd"), catalogue) == Route(
        "b", "file:///etc/motd", "catalogue"
    )
    assert r.route("resources/read", ("resource", "repo://x/readme"), catalogue) == Route(
        "gh", "repo://x/readme", "catalogue"
    )
    assert r.route("resources/subscribe", ("resource", "file:///a/b/c.txt"), catalogue) == Route(
        "a", "file:///a/b/c.txt", "catalogue"
    )
    assert r.route("resources/read", ("resource", "repo://o/r"), catalogue) == Route("gh", "repo://o/r", "catalogue")
    assert r.route("resources/read", ("resource", "repo://o/r/tree"), catalogue) == Route(
        "a", "repo://o/r/tree", "catalogue"
    )
    assert r.route("resources/read", ("resource", "kb://1"), catalogue) is None


def test_unknown_names_route_nowhere() -> None:
    catalogue = Catalogue.build({"a": {"tool": ["echo"], "prompt": ["greet"], "resource": ["kb://1"]}}, ORDER)
    r = router()
    assert r.route("tools/call", ("tool", "nope"), catalogue) is None
    assert r.route("prompts/get", ("prompt", "echo"), catalogue) is None
    assert r.route("resources/read", ("resource", "kb://2"), catalogue) is None
    assert r.route("ping", None, catalogue) is None


def test_completion_refs_route_like_the_item_they_name() -> None:
    catalogue = Catalogue.build({"a": {"template": ["kb://{id}"]}}, ORDER)
    r = router(rule(0, "b", "prompts/get"))
    prompt = addressed_item("completion/complete", {"ref": {"type": "ref/prompt", "name": "github__greet"}})
    assert r.route("completion/complete", prompt, catalogue) == Route("gh", "greet", "prefix")
    resource = addressed_item("completion/complete", {"ref": {"type": "ref/resource", "uri": "kb://7"}})
    assert r.route("completion/complete", resource, catalogue) == Route("a", "kb://7", "catalogue")


# --- URI templates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "uri", "matches"),
    [
        ("kb://{id}", "kb://42", True),
        ("kb://{id}", "kb://", False),
        ("kb://{id}", "kb://4/2", False),
        ("kb://{id}/x", "kb://4/x", True),
        ("kb://{a,b}", "kb://1,2", True),
        ("file:///{+path}", "file:///a/b/c.txt", True),
        ("file:///{+path}", "file:///", True),
        ("file:///{+path}", "file://x/a", False),
        ("doc:{+a}{+b}{+c}", "doc:anything/at/all", True),
        ("page{#section}", "page#intro/part", True),
        ("page{#section}", "page", True),
        ("page{#section}", "pageintro", False),
        ("repo://r{/path*}", "repo://r/a/b", True),
        ("repo://r{/path*}", "repo://r", True),
        ("repo://r{/path*}", "repo://rx", False),
        ("file{.ext}", "file.tar.gz", True),
        ("file{.ext}", "file", True),
        ("file{.ext}", "file/x", False),
        ("map{;x,y}", "map;x=1;y=2", True),
        ("map{;x,y}", "map=1", False),
        ("search{?q,lang}", "search?q=a&lang=en", True),
        ("search{?q,lang}", "search", True),
        ("search{?q}{&page}", "search?q=a&page=2", True),
        ("search{?q}", "searchq=a", False),
        ("log://{day:10}", "log://2025-01-01", True),
        ("kb.v1://{id}", "kbXv1://1", False),  # literal parts are escaped
        ("x://{=bad}", "x://anything", False),  # reserved operator: literal text only
        ("x://{=bad}", "x://{=bad}", True),
        ("x://{}", "x://{}", True),
        ("x://{open", "x://{open", True),  # unclosed brace: literal
        ("x://{open", "x://o", False),
    ],
)
def test_template_regex(template: str, uri: str, matches: bool) -> None:
    assert (template_regex(template).fullmatch(uri) is not None) is matches


def test_template_regex_is_compiled_once() -> None:
    assert template_regex("cache://{id}") is template_regex("cache://{id}")
    assert template_regex("doc:{+a}{+b}{+c}").pattern == "doc:.*"


# --- lists ------------------------------------------------------------------------------------------------------


def test_exposed_name_prefixes_names_but_never_uris() -> None:
    r = router()
    assert r.exposed_name("gh", "tool", "search") == "github__search"
    assert r.exposed_name("gh", "prompt", "greet") == "github__greet"
    assert r.exposed_name("gh", "resource", "repo://x") == "repo://x"
    assert r.exposed_name("a", "tool", "search") == "search"


def test_list_targets_without_rules_fan_out_to_every_upstream() -> None:
    r = router()
    assert r.list_targets("tool") == r.list_targets("prompt") == r.list_targets("resource") == ORDER


def test_list_targets_follow_rules_up_to_a_catch_all() -> None:
    r = router(
        rule(0, "c", "tools/call", tool="math.*"),
        rule(1, "b", "prompts/*", tool="x"),  # a tool glob on prompts: can route neither
        rule(2, "b", "resources/*", resource="kb://*"),
        rule(3, "a", "*"),
        rule(4, "gh", "*"),
    )
    assert r.list_targets("tool") == ("a", "c")
    assert r.list_targets("prompt") == ("a",)
    assert r.list_targets("resource") == ("a", "b")


def callable_items(
    r: Router, catalogue: Catalogue, listed: Mapping[str, Iterable[str]], kind: Kind
) -> list[tuple[str, str]]:
    """What the federation layer does with list answers: keep an item only when its call routes back to it."""
    call = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}[kind]
    kept = []
    for upstream in r.list_targets(kind):
        for name in listed.get(upstream, ()):
            exposed = r.exposed_name(upstream, kind, name)
            route = r.route(call, (kind, exposed), catalogue)
            if route is not None and (route.upstream, route.name) == (upstream, name):
                kept.append((upstream, exposed))
    return kept


def test_a_catch_all_rule_first_lists_only_its_target() -> None:
    tools = {"gh": ["search"], "a": ["echo"], "b": ["echo", "add"]}
    catalogue = Catalogue.build({u: {"tool": names} for u, names in tools.items()}, ORDER)
    r = router(rule(0, "b", "tools/call"))
    assert r.list_targets("tool") == ("b",)
    assert callable_items(r, catalogue, tools, "tool") == [("b", "echo"), ("b", "add")]


def test_without_rules_listed_items_are_exactly_the_callable_ones() -> None:
    tools = {"gh": ["search"], "a": ["echo"], "b": ["echo", "add"], "c": ["github__search"]}
    catalogue = Catalogue.build({u: {"tool": names} for u, names in tools.items()}, ORDER)
    # b's echo loses the clash to a (file order); c's github__search is taken by gh's prefix.
    assert callable_items(router(), catalogue, tools, "tool") == [
        ("gh", "github__search"),
        ("a", "echo"),
        ("b", "add"),
    ]


# --- report and check -------------------------------------------------------------------------------------------


def test_report_flags_shadowed_rules() -> None:
    report = router(
        rule(0, "a", "tools/call", tool="math.*"),
        rule(1, "b", "tools/call", tool="math.*"),
        rule(2, "b", "tools/call", tool="other"),
        rule(3, "c", "tools/call"),
        rule(4, "c", "tools/call", tool="x"),
        rule(5, "a", "*"),
        rule(6, "b", "prompts/get", prompt="p*"),
    ).report()
    assert report.rules == (
        RuleReport(0, {"method": "tools/call", "tool": "math.*"}, "a", None),
        RuleReport(1, {"method": "tools/call", "tool": "math.*"}, "b", 0),
        RuleReport(2, {"method": "tools/call", "tool": "other"}, "b", None),
        RuleReport(3, {"method": "tools/call"}, "c", None),  # rule 0 needs a tool; rule 3 also matches without
        RuleReport(4, {"method": "tools/call", "tool": "x"}, "c", 3),
        RuleReport(5, {"method": "*"}, "a", None),
        RuleReport(6, {"method": "prompts/get", "prompt": "p*"}, "b", 5),
    )


def test_report_with_a_catch_all_marks_every_implicit_route_dead() -> None:
    report = router(rule(0, "b", "tools/call"), rule(1, "b", "*"), rule(2, "c", "*")).report()
    assert report.prefixes == (("gh", "github__"),)
    assert report.prefix_shadowed_by == {"gh": 1}
    assert report.catalogue_shadowed_by == 1
    assert report.rules[2].shadowed_by == 1
    assert report.unreachable == ("gh", "a", "c")
    assert report.unsafe_prefixes == ()


def test_report_without_catch_all_has_nothing_unreachable() -> None:
    report = router(rule(0, "b", "tools/call"), rule(1, "c", "prompts/get")).report()
    # Tools and prompts no longer reach gh's prefix, but completion/complete refs still do.
    assert report.prefix_shadowed_by == {}
    assert report.catalogue_shadowed_by is None
    assert report.unreachable == ()


def test_report_prefix_shadowed_by_rules_with_item_globs() -> None:
    report = router(
        rule(0, "b", "*", tool="github__*"),
        rule(1, "b", "*", prompt="*"),
        rule(2, "b", "resources/*"),
        rule(3, "c", "completion/complete"),
    ).report()
    assert report.prefix_shadowed_by == {"gh": 1}
    assert report.catalogue_shadowed_by is None  # a bare tool name still reaches the catalogue
    assert report.unreachable == ("gh",)  # its prefix is taken and its URIs are caught by rules 2 and 3


def test_report_unsafe_prefixes() -> None:
    # "p" * 61 + "__" is 63 characters: room for a one-character name, the most a 64-character limit allows.
    upstreams = (up("fits", "p" * 61), up("full", "p" * 62), up("over", "p" * 63), up("dotted", "a.b"), up("ok", "ok"))
    assert router(upstreams=upstreams).report().unsafe_prefixes == ("full", "over", "dotted")
    dot = Router((), (up("ok", "ok"), up("bare")), separator=".")
    assert dot.report().unsafe_prefixes == ("ok",)
    assert dot.report().prefixes == (("ok", "ok."),)


def test_check_routes_a_call_as_a_client_would_send_it() -> None:
    r = router(rule(0, "a", "ping"), rule(1, "b", "tools/call", tool="math.*"))
    assert r.check("tools/call", "github__search") == Route("gh", "search", "prefix")
    assert r.check("tools/call", "math.add") == Route("b", "math.add", "routing[1]")
    assert r.check("tools/call", None) is None
    assert r.check("ping", None) == Route("a", "", "routing[0]")
    assert r.check("prompts/get", "greet") is None
    catalogue = Catalogue.build({"c": {"prompt": ["greet"]}}, ORDER)
    assert r.check("prompts/get", "greet", catalogue) == Route("c", "greet", "catalogue")


@pytest.mark.parametrize("method", ["ping", "completion/complete"])
def test_check_refuses_a_name_for_methods_that_address_none(method: str) -> None:
    with pytest.raises(ValueError, match="addresses no tool, prompt or resource by name"):
        router().check(method, "x")
