"""The access policy: first match for calls, "allows some" for access, list filtering, shadow mode. Pure, no I/O.

Policies are built from YAML through ``load_config`` so that the tests exercise the real config path (schema,
defaults, glob compilation); the property tests compare ``Policy`` with a small reference written here from the
module docstring.
"""

from __future__ import annotations

import fnmatch
import json
import textwrap
from dataclasses import dataclass, fields
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgate import policy as policy_module
from mcpgate.auth.identity import Identity
from mcpgate.config import load_config
from mcpgate.policy import ADDRESSING, MCP_METHODS, Decision, Policy
from mcpgate.routing import CALL_KIND, CALL_OF_KIND, Kind

UPSTREAMS = """\
upstreams:
  github: {url: "http://127.0.0.1:9/mcp"}
  postgres: {url: "http://127.0.0.1:9/mcp"}
"""

ALICE = Identity("alice", ("dev",))
BOB = Identity("bob", ("ops",))
CONTRACTORS = Identity("contractors")
EMPLOYEE = Identity("employee", ("staff",))

Item = tuple[Kind, str] | None


def make_policy(yaml: str) -> Policy:
    """A Policy from the ``policy:`` section given in YAML (indented or not), next to two upstreams."""
    config = load_config(text=UPSTREAMS + textwrap.dedent(yaml), source="c.yml")
    assert config.policy is not None
    return Policy(config.policy)


def allowed_by(rule: int | None) -> Decision:
    return Decision(True, rule)


def denied_by(rule: int | None) -> Decision:
    return Decision(False, rule)


# --- defaults, Decision, first match ----------------------------------------------------------------------------


@pytest.mark.parametrize(("default", "allowed"), [("allow", True), ("deny", False)])
def test_default_decides_when_no_rule_matches(default: str, allowed: bool) -> None:
    policy = make_policy(f"""
        policy:
          default: {default}
          rules:
            - {{clients: [bob], decision: {"deny" if allowed else "allow"}}}
        """)
    assert policy.judge(ALICE, "github", "initialize", None) == Decision(allowed, None)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "x")) == Decision(allowed, None)
    assert policy.judge(ALICE, None, None, None) == Decision(allowed, None)


@pytest.mark.parametrize("section", ["policy: {}", "policy: {rules: []}", "policy: {shadow: false}"])
def test_a_policy_section_without_default_denies(section: str) -> None:
    policy = make_policy(section)
    assert policy.config.default == "deny"
    assert policy.judge(ALICE, "github", "initialize", None) == denied_by(None)
    assert policy.judge(ALICE, None, "ping", None) == denied_by(None)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "x")) == denied_by(None)


def test_decision_where_names_the_rule_or_the_default() -> None:
    assert Decision(True, 0).where == "policy.rules[0]"
    assert Decision(False, 12).where == "policy.rules[12]"
    assert Decision(False, None).where == "policy.default"
    assert Decision(True, None).where == "policy.default"


def test_first_match_wins() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {tools: [search_secret], decision: deny}
            - {tools: ["search_*"], decision: allow}
            - {tools: ["search_secret", "get_*"], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "search_secret")) == denied_by(0)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "search_repos")) == allowed_by(1)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "get_file")) == allowed_by(2)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "delete_repo")) == denied_by(None)


def test_first_match_wins_in_file_order_not_by_specificity() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {tools: ["search_*"], decision: allow}
            - {tools: [search_secret], decision: deny}
        """)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "search_secret")) == allowed_by(0)


# --- conditions, judged on calls --------------------------------------------------------------------------------


def test_clients_are_exact_ids() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {clients: [alice, carol], decision: allow}
        """)
    call: tuple[str, Item] = ("tools/call", ("tool", "x"))
    assert policy.judge(ALICE, "github", *call) == allowed_by(0)
    assert policy.judge(Identity("carol"), "github", *call) == allowed_by(0)
    for stranger in ("alice2", "Alice", "ali", "alice,carol", "*"):
        assert policy.judge(Identity(stranger), "github", *call) == denied_by(None), stranger


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        (("ops",), True),
        (("admin",), True),
        (("dev", "admin"), True),
        (("admin", "ops"), True),
        (("dev",), False),
        ((), False),
        (("Admin",), False),
        (("admins",), False),
    ],
)
def test_roles_match_on_any_overlap(roles: tuple[str, ...], allowed: bool) -> None:
    policy = make_policy("""
        policy:
          rules:
            - {roles: [admin, ops], decision: allow}
        """)
    expected = allowed_by(0) if allowed else denied_by(None)
    assert policy.judge(Identity("someone", roles), "github", "tools/call", ("tool", "x")) == expected
    assert policy.judge(Identity("someone", roles), "github", "initialize", None) == expected


def test_roles_do_not_match_client_ids_and_clients_do_not_match_roles() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {roles: [alice], decision: allow}
            - {clients: [ops], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "initialize", None) == denied_by(None)
    assert policy.judge(BOB, "github", "initialize", None) == denied_by(None)


def test_clients_and_roles_together_must_both_hold() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {clients: [alice, bob], roles: [dev], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "ping", None) == allowed_by(0)
    assert policy.judge(BOB, "github", "ping", None) == denied_by(None)  # bob lacks the role
    assert policy.judge(Identity("carol", ("dev",)), "github", "ping", None) == denied_by(None)  # not a listed client


def test_servers_name_upstreams() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {servers: [github], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "x")) == allowed_by(0)
    assert policy.judge(ALICE, "postgres", "tools/call", ("tool", "x")) == denied_by(None)
    # A call the gateway answers itself (no upstream) is not on any named server.
    assert policy.judge(ALICE, None, "tools/call", ("tool", "x")) == denied_by(None)


@pytest.mark.parametrize(
    ("method", "item", "allowed"),
    [
        ("tools/call", ("tool", "x"), True),
        ("prompts/get", ("prompt", "x"), False),
        ("resources/read", ("resource", "kb://1"), True),
        ("resources/subscribe", ("resource", "kb://1"), True),
        ("resources/unsubscribe", ("resource", "kb://1"), True),
        ("completion/complete", ("prompt", "x"), False),
    ],
)
def test_methods_are_globs(method: str, item: Item, allowed: bool) -> None:
    policy = make_policy("""
        policy:
          rules:
            - {methods: ["tools/*", "resources/*"], decision: allow}
        """)
    assert policy.judge(ALICE, "github", method, item) == (allowed_by(0) if allowed else denied_by(None))


def test_globs_are_case_sensitive_and_anchored() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {tools: [Search], decision: allow}
            - {methods: ["Tools/*"], decision: allow}
        """)
    for name in ("search", "SEARCH", "Search2", "xSearch"):
        assert policy.judge(ALICE, "github", "tools/call", ("tool", name)) == denied_by(None), name
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "Search")) == allowed_by(0)


def test_glob_wildcards_and_sets() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {tools: ["get_?", "[ab]*"], decision: allow}
        """)
    for name in ("get_a", "get_1", "a", "alpha", "b_x"):
        assert policy.judge(ALICE, "github", "tools/call", ("tool", name)).allowed, name
    for name in ("get_", "get_ab", "c", "Alpha", ""):
        assert not policy.judge(ALICE, "github", "tools/call", ("tool", name)).allowed, name


@pytest.mark.parametrize(
    ("method", "item", "expected"),
    [
        ("tools/call", ("tool", "search"), allowed_by(0)),
        ("prompts/get", ("prompt", "greet"), allowed_by(1)),
        ("completion/complete", ("prompt", "greet"), allowed_by(1)),
        ("resources/read", ("resource", "file:///docs/a.md"), allowed_by(2)),
        ("resources/subscribe", ("resource", "file:///docs/a.md"), allowed_by(2)),
        ("resources/unsubscribe", ("resource", "file:///docs/a.md"), allowed_by(2)),
        ("completion/complete", ("resource", "file:///docs/{name}"), allowed_by(2)),
        # The same names, but as items of another kind: each rule is about one kind only.
        ("prompts/get", ("prompt", "search"), denied_by(None)),
        ("completion/complete", ("prompt", "search"), denied_by(None)),
        ("tools/call", ("tool", "greet"), denied_by(None)),
        ("tools/call", ("tool", "file:///docs/a.md"), denied_by(None)),
        ("resources/read", ("resource", "greet"), denied_by(None)),
        ("resources/read", ("resource", "file:///etc/passwd"), denied_by(None)),
    ],
)
def test_item_globs_match_only_items_of_their_kind(method: str, item: Item, expected: Decision) -> None:
    policy = make_policy("""
        policy:
          rules:
            - {tools: [search], decision: allow}
            - {prompts: [greet], decision: allow}
            - {resources: ["file:///docs/*"], decision: allow}
        """)
    assert policy.judge(ALICE, "github", method, item) == expected


@pytest.mark.parametrize(
    ("method", "item"),
    [
        ("resources/read", ("resource", "kb://1")),
        ("resources/subscribe", ("resource", "kb://1")),
        ("prompts/get", ("prompt", "x")),
        ("completion/complete", ("prompt", "x")),
        ("completion/complete", ("resource", "kb://{id}")),
    ],
)
def test_a_tools_star_rule_does_not_match_calls_of_another_kind(method: str, item: Item) -> None:
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {tools: ["*"], decision: deny}
        """)
    assert policy.judge(ALICE, "github", method, item) == allowed_by(None)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "anything")) == denied_by(0)


def test_a_rule_naming_several_kinds_matches_an_item_of_any_of_them() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {tools: [a], prompts: [b], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "a")) == allowed_by(0)
    assert policy.judge(ALICE, "github", "prompts/get", ("prompt", "b")) == allowed_by(0)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "b")) == denied_by(None)
    assert policy.judge(ALICE, "github", "prompts/get", ("prompt", "a")) == denied_by(None)
    assert policy.judge(ALICE, "github", "resources/read", ("resource", "a")) == denied_by(None)


def test_star_matches_any_uri_including_slashes_and_newlines() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {resources: ["kb://*"], decision: allow}
        """)
    for uri in ("kb://", "kb://a/b/c", "kb://a\nb", "kb://{id}"):
        assert policy.judge(ALICE, "github", "resources/read", ("resource", uri)) == allowed_by(0), uri
    assert policy.judge(ALICE, "github", "resources/read", ("resource", "file://kb://x")) == denied_by(None)


def test_item_globs_match_the_upstreams_own_name_not_the_prefixed_one() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {servers: [github], tools: [search], prompts: [greet], decision: allow}
        """)
    # The caller passes the upstream's own name on both endpoints: the rule means the same on each.
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "search")) == allowed_by(0)
    assert policy.judge(ALICE, "github", "prompts/get", ("prompt", "greet")) == allowed_by(0)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "github__search")) == denied_by(None)
    assert policy.judge(ALICE, "github", "prompts/get", ("prompt", "github__greet")) == denied_by(None)


@pytest.mark.parametrize("method", ["tools/call", "prompts/get", "resources/read", "completion/complete"])
def test_a_call_without_readable_item_is_not_matched_by_item_rules(method: str) -> None:
    allow_items = make_policy("""
        policy:
          default: deny
          rules:
            - {tools: ["*"], prompts: ["*"], resources: ["*"], decision: allow}
        """)
    assert allow_items.judge(ALICE, "github", method, None) == denied_by(None)

    without_items = make_policy("""
        policy:
          default: deny
          rules:
            - {tools: ["*"], prompts: ["*"], resources: ["*"], decision: deny}
            - {servers: [github], decision: allow}
        """)
    assert without_items.judge(ALICE, "github", method, None) == allowed_by(1)
    assert without_items.judge(ALICE, "postgres", method, None) == denied_by(None)


@pytest.mark.parametrize("method", sorted(ADDRESSING))
def test_addressing_methods_are_judged_as_calls(method: str) -> None:
    # As access, a deny rule with item globs would be skipped; as a call it matches its item.
    policy = make_policy("""
        policy:
          rules:
            - {tools: ["*"], prompts: ["*"], resources: ["*"], decision: deny}
            - {decision: allow}
        """)
    kind: Kind = CALL_KIND.get(method, "prompt")
    assert policy.judge(ALICE, "github", method, (kind, "x")) == denied_by(0)


def test_addressing_is_the_call_methods_and_completion() -> None:
    assert frozenset({*CALL_KIND, "completion/complete"}) == ADDRESSING
    assert set(CALL_OF_KIND.values()) <= ADDRESSING


# --- access: everything that is not a call ----------------------------------------------------------------------

ACCESS_METHODS = (
    "initialize",
    "ping",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "notifications/initialized",
    "subscriptions/listen",
    "logging/setLevel",
)


@pytest.mark.parametrize("method", ACCESS_METHODS)
def test_access_rule_matching_outright_decides(method: str) -> None:
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {clients: [alice], decision: deny}
            - {clients: [bob], servers: [github], decision: deny}
        """)
    assert policy.judge(ALICE, "github", method, None) == denied_by(0)
    assert policy.judge(ALICE, None, method, None) == denied_by(0)
    assert policy.judge(BOB, "github", method, None) == denied_by(1)
    assert policy.judge(BOB, "postgres", method, None) == allowed_by(None)
    assert policy.judge(EMPLOYEE, "github", method, None) == allowed_by(None)


@pytest.mark.parametrize("method", ACCESS_METHODS)
def test_design_example_contractors_may_connect_where_they_may_call_something(method: str) -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [contractors], servers: [github], tools: ["search_*", "get_*"], decision: allow}
        """)
    assert policy.judge(CONTRACTORS, "github", method, None) == allowed_by(0)
    assert policy.judge(CONTRACTORS, None, method, None) == allowed_by(0)  # the unified endpoint
    assert policy.judge(CONTRACTORS, "postgres", method, None) == denied_by(None)
    # An identity that no allow rule concerns is denied even the connection.
    assert policy.judge(EMPLOYEE, None, method, None) == denied_by(None)
    assert policy.judge(EMPLOYEE, "github", method, None) == denied_by(None)


def test_design_example_calls_and_lists() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [contractors], servers: [github], tools: ["search_*", "get_*"], decision: allow}
        """)
    assert policy.judge(CONTRACTORS, "github", "tools/call", ("tool", "search_code")) == allowed_by(0)
    assert policy.judge(CONTRACTORS, "github", "tools/call", ("tool", "get_file")) == allowed_by(0)
    assert policy.judge(CONTRACTORS, "github", "tools/call", ("tool", "delete_repo")) == denied_by(None)
    assert policy.judge(CONTRACTORS, "postgres", "tools/call", ("tool", "search_code")) == denied_by(None)
    assert policy.judge(CONTRACTORS, "github", "prompts/get", ("prompt", "search_x")) == denied_by(None)
    assert policy.blanket(CONTRACTORS, "github", "tool") is None
    assert policy.blanket(CONTRACTORS, "github", "prompt") is False
    assert policy.blanket(CONTRACTORS, "postgres", "tool") is False
    assert policy.permits(CONTRACTORS, "github", "tool", "search_code")
    assert not policy.permits(CONTRACTORS, "github", "tool", "delete_repo")
    # The /servers listing asks about "no method in particular" per upstream.
    assert policy.judge(CONTRACTORS, "github", None, None) == allowed_by(0)
    assert policy.judge(CONTRACTORS, "postgres", None, None) == denied_by(None)


def test_a_server_deny_rule_does_not_deny_the_unified_endpoint() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {servers: [postgres], decision: deny}
            - {decision: allow}
        """)
    assert policy.judge(ALICE, "postgres", "initialize", None) == denied_by(0)
    assert policy.judge(ALICE, None, "initialize", None) == allowed_by(1)
    assert policy.judge(ALICE, "github", "initialize", None) == allowed_by(1)
    assert policy.judge(ALICE, "postgres", "tools/call", ("tool", "query")) == denied_by(0)
    assert policy.judge(ALICE, "github", "tools/call", ("tool", "query")) == allowed_by(1)


@pytest.mark.parametrize(
    "rule",
    [
        '{methods: ["tools/call"], decision: allow}',  # matches but for its methods
        '{tools: ["x"], decision: allow}',  # matches but for its items
        '{methods: ["resources/read"], resources: ["kb://*"], decision: allow}',  # both
        "{servers: [github], decision: allow}",  # judged on /mcp: matches but for the server
    ],
)
def test_an_allow_rule_that_allows_some_calls_allows_access(rule: str) -> None:
    policy = make_policy(f"""
        policy:
          default: deny
          rules:
            - {rule}
            - {{decision: deny}}
        """)
    for method in ACCESS_METHODS:
        assert policy.judge(ALICE, None, method, None) == allowed_by(0), method
    assert policy.judge(ALICE, None, None, None) == allowed_by(0)


def test_an_allow_rule_for_another_server_or_another_client_does_not_allow_access() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [bob], tools: ["*"], decision: allow}
            - {servers: [github], tools: ["*"], decision: allow}
        """)
    assert policy.judge(ALICE, "postgres", "initialize", None) == denied_by(None)
    assert policy.judge(ALICE, "github", "initialize", None) == allowed_by(1)
    assert policy.judge(BOB, "postgres", "initialize", None) == allowed_by(0)


@pytest.mark.parametrize(
    "rule",
    [
        '{methods: ["tools/call"], decision: deny}',  # covers only some methods
        '{tools: ["*"], decision: deny}',  # covers only items
        '{methods: ["*"], tools: ["*"], prompts: ["*"], resources: ["*"], decision: deny}',  # every item, still items
    ],
)
def test_a_deny_rule_that_covers_only_some_calls_is_skipped_for_access(rule: str) -> None:
    policy = make_policy(f"""
        policy:
          default: deny
          rules:
            - {rule}
            - {{clients: [alice], decision: allow}}
        """)
    for server in ("github", None):
        for method in ACCESS_METHODS:
            assert policy.judge(ALICE, server, method, None) == allowed_by(1), (server, method)
        assert policy.judge(ALICE, server, None, None) == allowed_by(1)
    assert policy.judge(BOB, "github", "initialize", None) == denied_by(None)


def test_a_deny_rule_whose_methods_match_an_access_method_denies_it() -> None:
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {methods: ["tools/*"], decision: deny}
            - {servers: [github], methods: [initialize], decision: deny}
        """)
    assert policy.judge(ALICE, "github", "tools/list", None) == denied_by(0)
    assert policy.judge(ALICE, None, "tools/list", None) == denied_by(0)
    assert policy.judge(ALICE, "github", "prompts/list", None) == allowed_by(None)
    assert policy.judge(ALICE, "github", "initialize", None) == denied_by(1)
    assert policy.judge(ALICE, "postgres", "initialize", None) == allowed_by(None)
    assert policy.judge(ALICE, None, "initialize", None) == allowed_by(None)  # only some upstreams: skipped


def test_an_earlier_outright_deny_beats_a_later_allow_some() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [alice], methods: [initialize], decision: deny}
            - {clients: [alice], tools: ["*"], decision: allow}
        """)
    assert policy.judge(ALICE, "github", "initialize", None) == denied_by(0)
    assert policy.judge(ALICE, None, "initialize", None) == denied_by(0)
    assert policy.judge(ALICE, "github", "ping", None) == allowed_by(1)


# --- method None: no method in particular -----------------------------------------------------------------------


def test_no_method_in_particular_is_denied_only_by_rules_for_any_method() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [alice], methods: [initialize, "tools/*", "*list", "?", "[a-m]*"], decision: deny}
            - {clients: [alice], methods: ["*"], decision: deny}
            - {decision: allow}
        """)
    assert policy.judge(ALICE, "github", None, None) == denied_by(1)
    assert policy.judge(ALICE, None, None, None) == denied_by(1)
    assert policy.judge(ALICE, "github", "initialize", None) == denied_by(0)
    assert policy.judge(BOB, "github", None, None) == allowed_by(2)


def test_no_method_in_particular_is_matched_outright_by_rules_without_methods() -> None:
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {clients: [alice], decision: deny}
            - {clients: [bob], servers: [github], methods: ["*"], decision: deny}
        """)
    assert policy.judge(ALICE, "github", None, None) == denied_by(0)
    assert policy.judge(BOB, "github", None, None) == denied_by(1)
    assert policy.judge(BOB, "postgres", None, None) == allowed_by(None)
    assert policy.judge(BOB, None, None, None) == allowed_by(None)


def test_no_method_in_particular_is_matched_outright_by_any_glob_that_matches_every_method() -> None:
    # jsonrpc.parse rejects an empty "method", so "?*" matches every method a client can send.
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {clients: [alice], methods: ["?*"], decision: deny}
        """)
    for method in (*ACCESS_METHODS, *ADDRESSING):
        assert policy.judge(ALICE, "github", method, None) == denied_by(0), method
    # Alice may send nothing at all, yet /servers (method None per upstream) would still list github to her.
    assert policy.judge(ALICE, "github", None, None) == denied_by(0)


def test_no_method_in_particular_is_allowed_by_an_allow_rule_for_some_methods() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [alice], methods: ["tools/*"], decision: allow}
        """)
    assert policy.judge(ALICE, "github", None, None) == allowed_by(0)
    assert policy.judge(BOB, "github", None, None) == denied_by(None)


# --- permits and blanket: list filtering ------------------------------------------------------------------------


def test_blanket_is_the_decision_of_the_first_rule_without_item_globs() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {clients: [bob], decision: deny}
            - {servers: [postgres], decision: deny}
            - {methods: ["prompts/*"], decision: deny}
            - {methods: ["tools/call", "prompts/get"], decision: allow}
        """)
    assert policy.blanket(BOB, "github", "tool") is False
    assert policy.blanket(ALICE, "postgres", "tool") is False
    assert policy.blanket(ALICE, "github", "tool") is True
    assert policy.blanket(ALICE, "github", "prompt") is False
    assert policy.blanket(ALICE, "github", "resource") is False  # no rule for resources/read: the default


@pytest.mark.parametrize(("default", "expected"), [("allow", True), ("deny", False)])
def test_blanket_falls_back_to_the_default(default: str, expected: bool) -> None:
    policy = make_policy(f"""
        policy:
          default: {default}
          rules:
            - {{clients: [bob], tools: [x], decision: allow}}
        """)
    for kind in CALL_OF_KIND:
        assert policy.blanket(ALICE, "github", kind) is expected


def test_blanket_depends_on_the_name_when_an_item_rule_of_the_kind_comes_first() -> None:
    policy = make_policy("""
        policy:
          default: allow
          rules:
            - {servers: [github], tools: ["delete_*"], decision: deny}
            - {clients: [bob], prompts: ["*"], decision: deny}
        """)
    assert policy.blanket(ALICE, "github", "tool") is None
    assert policy.blanket(ALICE, "github", "prompt") is True  # tools rule: another kind; prompts: another client
    assert policy.blanket(ALICE, "postgres", "tool") is True  # the tools rule is for another server
    assert policy.blanket(BOB, "github", "prompt") is None
    assert policy.permits(ALICE, "github", "tool", "search")
    assert not policy.permits(ALICE, "github", "tool", "delete_repo")
    assert policy.permits(ALICE, "postgres", "tool", "delete_repo")


def test_permits_judges_the_call_that_would_use_the_item() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {methods: ["resources/subscribe"], resources: ["kb://*"], decision: allow}
            - {methods: ["completion/complete"], prompts: ["*"], decision: allow}
            - {methods: ["resources/read"], resources: ["docs://*"], decision: allow}
            - {methods: ["prompts/get"], prompts: [greet], decision: allow}
        """)
    # A resource is listed when it may be read, a prompt when it may be got.
    assert not policy.permits(ALICE, "github", "resource", "kb://1")
    assert policy.permits(ALICE, "github", "resource", "docs://1")
    assert not policy.permits(ALICE, "github", "prompt", "other")
    assert policy.permits(ALICE, "github", "prompt", "greet")
    for kind in CALL_OF_KIND:
        for name in ("kb://1", "docs://1", "greet", "other"):
            expected = policy.judge(ALICE, "github", CALL_OF_KIND[kind], (kind, name)).allowed
            assert policy.permits(ALICE, "github", kind, name) is expected


# --- shadow mode ------------------------------------------------------------------------------------------------


def test_shadow_mode_permits_everything_but_judge_reports_the_would_be_decision() -> None:
    yaml = """
        policy:
          default: deny
          shadow: {shadow}
          rules:
            - {{tools: [secret], decision: deny}}
            - {{clients: [bob], decision: deny}}
        """
    shadow = make_policy(yaml.format(shadow="true"))
    enforcing = make_policy(yaml.format(shadow="false"))
    assert shadow.shadow is True
    assert enforcing.shadow is False
    for kind in CALL_OF_KIND:
        assert shadow.blanket(ALICE, "github", kind) is True
        assert shadow.blanket(BOB, "github", kind) is True
        assert shadow.permits(ALICE, "github", kind, "secret")
        assert shadow.permits(BOB, "github", kind, "x")
    assert enforcing.blanket(ALICE, "github", "tool") is None
    assert enforcing.blanket(BOB, "github", "prompt") is False
    assert not enforcing.permits(ALICE, "github", "tool", "secret")
    for policy in (shadow, enforcing):
        assert policy.judge(ALICE, "github", "tools/call", ("tool", "secret")) == denied_by(0)
        assert policy.judge(BOB, "github", "initialize", None) == denied_by(1)
        assert policy.judge(ALICE, "github", "initialize", None) == denied_by(None)


def test_shadow_defaults_to_false() -> None:
    assert make_policy("policy: {default: allow}").shadow is False


# --- denial -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "where"), [(denied_by(3), "policy.rules[3]"), (denied_by(None), "policy.default")]
)
def test_denial_is_forbidden_naming_the_rule(decision: Decision, where: str) -> None:
    policy = make_policy("policy: {}")
    error = policy.denial(decision, "tools/call of tool 'x' on 'github'")
    assert error.reason.name == "forbidden"
    assert error.status == 403
    assert error.code == -32066
    assert error.data == {"rule": where}
    assert error.message == f"tools/call of tool 'x' on 'github' is forbidden by {where}"
    assert error.to_jsonrpc(7)["error"]["data"] == {"reason": "forbidden", "rule": where}


def test_denial_of_a_judged_request() -> None:
    policy = make_policy("""
        policy:
          rules:
            - {servers: [github], decision: allow}
            - {servers: [postgres], tools: [drop_table], decision: deny}
        """)
    decision = policy.judge(ALICE, "postgres", "tools/call", ("tool", "drop_table"))
    assert policy.denial(decision, "this").data == {"rule": "policy.rules[1]"}


# --- memoisation ------------------------------------------------------------------------------------------------


def test_memoised_decisions_keep_identities_apart() -> None:
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {roles: [admin], decision: allow}
            - {clients: [alice], servers: [github], tools: [x], decision: allow}
        """)
    admin = Identity("alice", ("admin",))
    plain = Identity("alice")
    other = Identity("bob", ("admin",))
    for _ in range(2):
        assert policy.judge(admin, "postgres", "tools/call", ("tool", "y")) == allowed_by(0)
        assert policy.judge(plain, "postgres", "tools/call", ("tool", "y")) == denied_by(None)
        assert policy.judge(plain, "github", "tools/call", ("tool", "y")) == denied_by(None)
        assert policy.judge(plain, "github", "tools/call", ("tool", "x")) == allowed_by(1)
        assert policy.judge(plain, "github", "tools/call", None) == denied_by(None)
        assert policy.judge(plain, "github", "prompts/get", ("prompt", "x")) == denied_by(None)
        assert policy.judge(other, "postgres", "tools/call", ("tool", "y")) == allowed_by(0)


def test_a_full_memo_is_dropped_without_changing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "MEMO_SIZE", 4)
    policy = make_policy("""
        policy:
          default: deny
          rules:
            - {tools: ["a*"], decision: allow}
        """)
    names = [f"{prefix}{i}" for i in range(10) for prefix in ("a", "b")]
    first = [policy.judge(ALICE, "github", "tools/call", ("tool", name)) for name in names]
    second = [policy.judge(ALICE, "github", "tools/call", ("tool", name)) for name in names]
    assert first == second == [allowed_by(0) if name.startswith("a") else denied_by(None) for name in names]
    assert len(policy._memo) <= 4


# --- properties: a reference implementation written from the docstring ------------------------------------------

CLIENTS = ("c1", "c2")
ROLES = ("r1", "r2")
SERVERS = ("github", "postgres", "gitlab")
# Of these, only "*" matches every method ("[a-z]*" misses "Foo"): "no method in particular" is matched outright by it.
METHOD_GLOBS = (
    "*",
    "[a-z]*",
    "tools/*",
    "*/call",
    "resources/*",
    "prompts/get",
    "initialize",
    "ping",
    "*list",
    "completion/*",
)
NAME_GLOBS = ("*", "a*", "*b", "a?", "[ab]", "ab", "b")
KINDS: tuple[Kind, ...] = ("tool", "prompt", "resource")
CALL_METHODS = (*CALL_KIND, "completion/complete")
OTHER_METHODS = ("initialize", "ping", "tools/list", "resources/templates/list", "notifications/initialized", None)
NAMES = st.text(alphabet="ab", max_size=3)


@dataclass(frozen=True)
class Spec:
    """One rule as the operator writes it."""

    decision: Literal["allow", "deny"]
    clients: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()

    def document(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def globs(self, kind: Kind) -> tuple[str, ...]:
        return {"tool": self.tools, "prompt": self.prompts, "resource": self.resources}[kind]

    @property
    def has_items(self) -> bool:
        return bool(self.tools or self.prompts or self.resources)

    def concerns(self, identity: Identity) -> bool:
        return (not self.clients or identity.client_id in self.clients) and (
            not self.roles or any(role in self.roles for role in identity.roles)
        )


def matches(globs: tuple[str, ...], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, glob) for glob in globs)


def reference_call(
    specs: list[Spec], default: bool, identity: Identity, server: str | None, method: str, item: Item
) -> Decision:
    """Plain first match."""
    for index, spec in enumerate(specs):
        if not spec.concerns(identity):
            continue
        if spec.servers and server not in spec.servers:
            continue
        if spec.methods and not matches(spec.methods, method):
            continue
        if spec.has_items and (item is None or not matches(spec.globs(item[0]), item[1])):
            continue
        return Decision(spec.decision == "allow", index)
    return Decision(default, None)


def reference_access(
    specs: list[Spec], default: bool, identity: Identity, server: str | None, method: str | None
) -> Decision:
    """The first rule matching outright decides; an allow rule that allows some calls from here allows."""
    for index, spec in enumerate(specs):
        if not spec.concerns(identity):
            continue
        on_server = not spec.servers or server in spec.servers
        if method is None:  # no method in particular: covered only by globs that cover every MCP method
            any_method = not spec.methods or all(matches(spec.methods, m) for m in MCP_METHODS)
        else:
            any_method = not spec.methods or matches(spec.methods, method)
        if on_server and any_method and not spec.has_items:
            return Decision(spec.decision == "allow", index)
        reachable = on_server or server is None  # on /mcp, a rule for some upstream allows some calls
        if spec.decision == "allow" and reachable:
            return Decision(True, index)
    return Decision(default, None)


def subsets(options: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(options), max_size=2, unique=True).map(tuple)


SPECS = st.lists(
    st.builds(
        Spec,
        decision=st.sampled_from(["allow", "deny"]),
        clients=subsets(CLIENTS),
        roles=subsets(ROLES),
        servers=subsets(SERVERS),
        methods=subsets(METHOD_GLOBS),
        tools=subsets(NAME_GLOBS),
        prompts=subsets(NAME_GLOBS),
        resources=subsets(NAME_GLOBS),
    ),
    max_size=5,
)
DEFAULTS = st.sampled_from(["allow", "deny", None])
IDENTITIES = st.builds(Identity, client_id=st.sampled_from((*CLIENTS, "c3")), roles=subsets((*ROLES, "r3")))
REQUEST_SERVERS = st.sampled_from((*SERVERS, None))


def item_for(method: str) -> st.SearchStrategy[Item]:
    kinds: tuple[Kind, ...] = ("prompt", "resource") if method == "completion/complete" else (CALL_KIND[method],)
    return st.one_of(st.none(), st.tuples(st.sampled_from(kinds), NAMES))


CALLS = st.sampled_from(CALL_METHODS).flatmap(lambda method: st.tuples(st.just(method), item_for(method)))


def build(specs: list[Spec], default: str | None, shadow: bool = False) -> Policy:
    section: dict[str, object] = {"rules": [spec.document() for spec in specs], "shadow": shadow}
    if default is not None:
        section["default"] = default
    upstreams = {name: {"url": "http://127.0.0.1:9/mcp"} for name in SERVERS}
    config = load_config(text=json.dumps({"upstreams": upstreams, "policy": section}), source="c.yml")
    assert config.policy is not None
    return Policy(config.policy)


@settings(max_examples=300, deadline=None)
@given(specs=SPECS, default=DEFAULTS, identity=IDENTITIES, server=REQUEST_SERVERS, call=CALLS)
def test_calls_follow_plain_first_match(
    specs: list[Spec], default: str | None, identity: Identity, server: str | None, call: tuple[str, Item]
) -> None:
    policy = build(specs, default)
    method, item = call
    expected = reference_call(specs, default == "allow", identity, server, method, item)
    assert policy.judge(identity, server, method, item) == expected
    assert policy.judge(identity, server, method, item) == expected  # memoised: the same answer


@settings(max_examples=300, deadline=None)
@given(
    specs=SPECS,
    default=DEFAULTS,
    identity=IDENTITIES,
    server=REQUEST_SERVERS,
    method=st.sampled_from(OTHER_METHODS),
)
def test_access_follows_the_documented_semantics(
    specs: list[Spec], default: str | None, identity: Identity, server: str | None, method: str | None
) -> None:
    policy = build(specs, default)
    expected = reference_access(specs, default == "allow", identity, server, method)
    assert policy.judge(identity, server, method, None) == expected
    assert policy.judge(identity, server, method, None) == expected


@settings(max_examples=300, deadline=None)
@given(
    specs=SPECS,
    default=DEFAULTS,
    identity=IDENTITIES,
    names=st.lists(NAMES, min_size=1, max_size=6),
    shadow=st.booleans(),
)
def test_blanket_agrees_with_permits(
    specs: list[Spec], default: str | None, identity: Identity, names: list[str], shadow: bool
) -> None:
    policy = build(specs, default, shadow)
    for server in SERVERS:
        for kind in KINDS:
            blanket = policy.blanket(identity, server, kind)
            if shadow:
                assert blanket is True
            for name in names:
                permitted = policy.permits(identity, server, kind, name)
                decision = policy.judge(identity, server, CALL_OF_KIND[kind], (kind, name))
                assert permitted is (shadow or decision.allowed)
                assert decision == reference_call(
                    specs, default == "allow", identity, server, CALL_OF_KIND[kind], (kind, name)
                )
                if blanket is not None:
                    assert permitted is blanket, (server, kind, name)
