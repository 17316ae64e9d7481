"""The unified endpoint's pure decisions: merged lists, capabilities, the gateway's own answers."""

from __future__ import annotations

import pytest

from mcpgate import federation
from mcpgate.config.model import Glob, RouteMatch, RoutingRule, UpstreamConfig
from mcpgate.federation import Listed
from mcpgate.routing import Catalogue, Router

ALPHA = UpstreamConfig(name="alpha", transport="streamable-http", url="http://127.0.0.1:1/mcp")
BETA = UpstreamConfig(name="beta", transport="streamable-http", url="http://127.0.0.1:2/mcp", prefix="beta")
TOOLS = {
    "alpha": [{"name": "add", "description": "a"}, {"name": "whoami"}],
    "beta": [{"name": "add", "description": "b"}, {"name": "whoami"}],
}


def merged(router: Router, method: str = "tools/list", lists: dict[str, list[dict[str, object]]] = TOOLS) -> list:
    answers = [Listed(name, tuple(items)) for name, items in lists.items()]
    names = {
        name: {"tool": [i["name"] for i in items if isinstance(i.get("name"), str)]} for name, items in lists.items()
    }
    catalogue = Catalogue.build(names, ["alpha", "beta"])  # type: ignore[arg-type]
    return federation.merge_list(method, answers, router, catalogue)


def test_lists_merge_with_prefixes_and_keep_what_routes_back() -> None:
    items = merged(Router((), (ALPHA, BETA)))
    assert items == [
        {"name": "add", "description": "a"},
        {"name": "whoami"},
        {"name": "beta__add", "description": "b"},
        {"name": "beta__whoami"},
    ]


def test_a_rule_that_takes_a_name_away_hides_it_from_its_lister() -> None:
    rule = RoutingRule(0, RouteMatch(method=Glob.compile("tools/call"), tool=Glob.compile("whoami")), "beta")
    names = [i["name"] for i in merged(Router((rule,), (ALPHA, BETA)))]
    assert names == ["add", "beta__add", "beta__whoami"]


def test_two_prefixless_upstreams_listing_one_name_show_it_once() -> None:
    gamma = UpstreamConfig(name="beta", transport="streamable-http", url="http://127.0.0.1:2/mcp")
    items = merged(Router((), (ALPHA, gamma)))
    assert [(i["name"], i.get("description")) for i in items] == [("add", "a"), ("whoami", None)]


def test_items_without_a_name_are_dropped() -> None:
    lists = {"alpha": [{"description": "nameless"}, {"name": 3}, {"name": "ok"}]}
    assert [i["name"] for i in merged(Router((), (ALPHA,)), lists=lists)] == ["ok"]


def test_templates_are_kept_from_every_target() -> None:
    answers = [
        Listed("alpha", ({"uriTemplate": "a://{x}", "name": "x"},)),
        Listed("beta", ({"uriTemplate": "b://{y}", "name": "y"},)),
    ]
    items = federation.merge_list("resources/templates/list", answers, Router((), (ALPHA, BETA)), Catalogue())
    assert [i["uriTemplate"] for i in items] == ["a://{x}", "b://{y}"]


def test_capabilities_unite_and_unknown_upstreams_count_as_everything() -> None:
    known = [
        {"tools": {"listChanged": True}, "experimental": {"x": {}}},
        {"prompts": {"listChanged": False}, "resources": {"subscribe": True}},
    ]
    assert federation.union_capabilities(known) == {
        "tools": {"listChanged": True},
        "prompts": {},
        "resources": {"subscribe": True},
    }
    assert set(federation.union_capabilities([None])) == {"tools", "prompts", "resources", "completions", "logging"}
    assert federation.union_capabilities([]) == {}


def test_version_negotiation() -> None:
    assert federation.negotiate_legacy("2025-06-18") == "2025-06-18"
    assert federation.negotiate_legacy("2099-01-01") == "2025-11-25"
    assert federation.negotiate_legacy(None) == "2025-11-25"
    assert federation.negotiate_legacy("2026-07-28") == "2025-11-25"  # initialize is legacy by definition


def test_list_results_in_each_era() -> None:
    answers = [Listed("alpha", (), ttl_ms=5000), Listed("beta", (), ttl_ms=2000, private=True)]
    assert federation.list_result("tools/list", [], answers, modern=False) == {"tools": []}
    modern = federation.list_result("prompts/list", [{"name": "p"}], answers, modern=True)
    assert modern == {"prompts": [{"name": "p"}], "resultType": "complete", "ttlMs": 2000, "cacheScope": "private"}
    public = federation.list_result("resources/list", [], [Listed("alpha", ())], modern=True)
    assert (public["ttlMs"], public["cacheScope"]) == (0, "public")


def test_the_gateways_own_answers() -> None:
    init = federation.initialize_result("2025-06-18", {"tools": {}})
    assert init["protocolVersion"] == "2025-06-18"
    assert init["serverInfo"]["name"] == "mcpgate"
    discover = federation.discover_result({"tools": {}})
    assert discover["supportedVersions"] == ["2026-07-28"]
    assert {"resultType", "ttlMs", "cacheScope", "capabilities"} <= set(discover)


def test_tagged_ids_say_where_the_answer_goes() -> None:
    for original in (0, 7, "abc", "a/b", "mcpgate/x/1"):
        assert federation.untag_id(federation.tag_id("beta", original)) == ("beta", original)
    for bogus in (1, None, "x", "mcpgate/", "mcpgate/beta/", "mcpgate/beta/[1]", "mcpgate/beta/true", "mcpgate//1"):
        assert federation.untag_id(bogus) is None


def test_only_upstream_requests_and_their_cancellations_are_tagged() -> None:
    rewrite = federation.tag_requests("alpha")
    assert rewrite({"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage"}) == {
        "jsonrpc": "2.0",
        "id": "mcpgate/alpha/3",
        "method": "sampling/createMessage",
    }
    cancelled = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
    assert rewrite(cancelled) == {**cancelled, "params": {"requestId": "mcpgate/alpha/3"}}
    assert rewrite({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}) is None
    assert rewrite({"jsonrpc": "2.0", "id": 1, "result": {}}) is None  # the client's own answer, untouched


def test_whether_a_client_answers_server_requests() -> None:
    assert federation.answers_requests({"capabilities": {"elicitation": {}}})
    assert not federation.answers_requests({"capabilities": {"experimental": {}}})
    assert not federation.answers_requests({})


def test_a_legacy_answer_becomes_a_modern_one() -> None:
    rewrite = federation.as_modern_answer("mcpgate-held-9", 1, "tools/call")
    answer = {"jsonrpc": "2.0", "id": "mcpgate-held-9", "result": {"content": []}}
    assert rewrite(answer) == {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "resultType": "complete"}}
    error = {"jsonrpc": "2.0", "id": "mcpgate-held-9", "error": {"code": -1, "message": "no"}}
    assert rewrite(error) == {**error, "id": 1}
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
    assert rewrite(progress) is None
    assert rewrite({"jsonrpc": "2.0", "id": "other", "result": {}}) is None


@pytest.mark.parametrize("method", ["resources/read", "tools/list", "resources/templates/list"])
def test_a_legacy_answer_says_how_a_modern_client_may_cache_it(method: str) -> None:
    """2026-07-28 requires ttlMs and cacheScope on lists and reads; a legacy upstream gives
    none, so the answer may not be cached or shared. What the upstream said, it keeps."""
    rewrite = federation.as_modern_answer("g", 1, method)
    answer = rewrite({"jsonrpc": "2.0", "id": "g", "result": {"contents": []}})
    assert answer is not None
    assert answer["result"] == {"contents": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}
    kept = rewrite({"jsonrpc": "2.0", "id": "g", "result": {"ttlMs": 5000, "cacheScope": "public"}})
    assert kept is not None and kept["result"]["ttlMs"] == 5000 and kept["result"]["cacheScope"] == "public"
