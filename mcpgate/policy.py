"""Access policy: who may call what, the first matching rule deciding (DESIGN section 2). Pure.

A rule matches when each of its conditions that is set holds: ``clients`` (the client id),
``roles`` (any of them), ``servers`` (the upstream), ``methods`` (globs), and the item globs
``tools``, ``prompts``, ``resources``. A rule with item globs is about items: it matches only a
request that addresses an item of a kind it lists, by a name (or URI) one of its globs matches.
Tool and prompt names are the upstream's own, without the unified endpoint's prefix, so one
rule means the same on ``/mcp`` and on ``/servers/<name>/mcp``.

Requests are judged in one of two ways:

- a **call** addresses an item (``tools/call``, ``prompts/get``, ``resources/read``,
  ``resources/(un)subscribe``, ``completion/complete``): plain first match;
- anything else is **access** (``initialize``, ``ping``, the lists, ``subscriptions/listen``,
  notifications): the first rule that matches it outright decides, and a rule that *allows some*
  calls from here (one that matches but for its methods or items, or for a server on ``/mcp``)
  allows it, since a client allowed one tool must be able to connect and list it. A deny rule
  that covers only some calls is skipped: it cannot mean "deny the connection".

Lists are then filtered item by item, each item judged as the call that would use it, so a
client never sees what it may not call. Decisions are memoised: the policy is immutable, and
clients repeat the same few requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mcpgate.auth.identity import Identity
from mcpgate.config.model import Config, Glob, PolicyConfig, PolicyRule, any_match
from mcpgate.errors import GatewayError
from mcpgate.routing import CALL_KIND, CALL_OF_KIND, Kind, Router

# Methods that address an item; without a readable one they are judged as calls of no item.
ADDRESSING: Final = frozenset({*CALL_KIND, "completion/complete"})
# What "no method in particular" stands for: a rule's methods cover it only if they cover all of these.
MCP_METHODS: Final = (
    *sorted(ADDRESSING),
    "initialize",
    "ping",
    "server/discover",
    "subscriptions/listen",
    "logging/setLevel",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/roots/list_changed",
)
MEMO_SIZE: Final = 16_384


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: int | None  # index into policy.rules; None when the default decided

    @property
    def where(self) -> str:
        return "policy.default" if self.rule is None else f"policy.rules[{self.rule}]"


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    allow: bool
    clients: frozenset[str]
    roles: frozenset[str]
    servers: frozenset[str]
    methods: tuple[Glob, ...]
    every_method: bool  # its method globs (if any) match every method MCP defines
    items: Mapping[Kind, tuple[Glob, ...]]  # only the kinds the rule names

    @classmethod
    def compile(cls, rule: PolicyRule) -> _Rule:
        items: dict[Kind, tuple[Glob, ...]] = {}
        for kind, globs in (("tool", rule.tools), ("prompt", rule.prompts), ("resource", rule.resources)):
            if globs:
                items[kind] = globs  # type: ignore[index]
        return cls(
            rule.index,
            rule.decision == "allow",
            frozenset(rule.clients),
            frozenset(rule.roles),
            frozenset(rule.servers),
            rule.methods,
            not rule.methods or all(any_match(rule.methods, method) for method in MCP_METHODS),
            items,
        )

    def concerns(self, identity: Identity) -> bool:
        if self.clients and identity.client_id not in self.clients:
            return False
        return not self.roles or not self.roles.isdisjoint(identity.roles)


class Policy:
    """The compiled ``policy`` section: what ``authorize`` asks, and what list filtering asks."""

    __slots__ = ("_default", "_memo", "_rules", "config", "shadow")

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.shadow = config.shadow
        self._rules = tuple(_Rule.compile(rule) for rule in config.rules)
        self._default = Decision(config.default == "allow", None)
        self._memo: dict[tuple[object, ...], Decision] = {}

    def judge(
        self, identity: Identity, server: str | None, method: str | None, item: tuple[Kind, str] | None
    ) -> Decision:
        """The decision for one request. ``server`` is None for what ``/mcp`` answers itself;
        ``method`` None stands for no method in particular (a GET stream, the ``/servers`` listing)."""
        key = (identity.client_id, identity.roles, server, method, item)
        decision = self._memo.get(key)
        if decision is None:
            if method in ADDRESSING:
                decision = self._call(identity, server, method, item)
            else:
                decision = self._access(identity, server, method)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = decision
        return decision

    def permits(self, identity: Identity, server: str, kind: Kind, name: str) -> bool:
        """Whether a list may show this item: the call that would use it is allowed (always, in shadow mode)."""
        return self.shadow or self.judge(identity, server, CALL_OF_KIND[kind], (kind, name)).allowed

    def blanket(self, identity: Identity, server: str, kind: Kind) -> bool | None:
        """The decision for every item of ``kind`` on ``server``, when it does not depend on the name.

        Lets a list that the policy would not change pass as bytes, unparsed (None: it depends).
        """
        if self.shadow:
            return True
        method = CALL_OF_KIND[kind]
        for rule in self._rules:
            if not rule.concerns(identity) or (rule.servers and server not in rule.servers):
                continue
            if rule.methods and not any_match(rule.methods, method):
                continue
            if rule.items:
                if kind in rule.items:
                    return None
                continue
            return rule.allow
        return self._default.allowed

    def denial(self, decision: Decision, what: str) -> GatewayError:
        return GatewayError("forbidden", f"{what} is forbidden by {decision.where}", data={"rule": decision.where})

    def _call(self, identity: Identity, server: str | None, method: str, item: tuple[Kind, str] | None) -> Decision:
        for rule in self._rules:
            if not rule.concerns(identity):
                continue
            if rule.servers and server not in rule.servers:
                continue
            if rule.methods and not any_match(rule.methods, method):
                continue
            if rule.items:
                globs = rule.items.get(item[0]) if item is not None else None
                if globs is None or item is None or not any_match(globs, item[1]):
                    continue
            return Decision(rule.allow, rule.index)
        return self._default

    def _access(self, identity: Identity, server: str | None, method: str | None) -> Decision:
        for rule in self._rules:
            if not rule.concerns(identity):
                continue
            if rule.servers and server is not None and server not in rule.servers:
                continue
            outright = (
                (not rule.servers or server is not None)
                # No method in particular (None) is matched outright only by globs that match every method.
                and (rule.every_method if method is None else not rule.methods or any_match(rule.methods, method))
                and not rule.items
            )
            if outright or rule.allow:
                return Decision(rule.allow, rule.index)
        return self._default


# -- explaining the policy from the configuration alone (``mcpgate policy``) --------------------


def rule_dict(rule: PolicyRule) -> dict[str, object]:
    """A rule as written: only the conditions it sets."""
    shown: dict[str, object] = {"index": rule.index, "decision": rule.decision}
    for key in ("clients", "roles", "servers"):
        if values := getattr(rule, key):
            shown[key] = list(values)
    for key in ("methods", "tools", "prompts", "resources"):
        if globs := getattr(rule, key):
            shown[key] = [g.pattern for g in globs]
    return shown


def rule_notes(config: Config) -> dict[int, list[str]]:
    """Why a rule can never match, by rule index: nothing grants its roles or is named by its
    clients, or an earlier rule without conditions takes every request first."""
    policy = config.policy
    if policy is None:
        return {}
    auth = config.auth
    key_ids = {key.id for key in auth.api_keys} if auth is not None else set()
    jwt = auth.jwt if auth is not None else None
    granted = {role for key in auth.api_keys for role in key.roles} if auth is not None else set()
    if jwt is not None:
        granted |= {role for mapping in jwt.role_mappings for role in mapping.roles}
    notes: dict[int, list[str]] = {}
    catch_all: int | None = None
    for rule in policy.rules:
        found = notes.setdefault(rule.index, [])
        if catch_all is not None:
            found.append(f"never matches: policy.rules[{catch_all}] before it matches every request")
        if rule.roles and not granted.intersection(rule.roles):
            found.append("never matches: no API key or role mapping grants any of its roles")
        known = key_ids | ({"anonymous"} if auth is None else set())
        if rule.clients and jwt is None and not known.intersection(rule.clients):
            found.append("never matches: none of its clients is an API key id")
        conditions = (rule.clients, rule.roles, rule.servers, rule.methods, rule.tools, rule.prompts, rule.resources)
        if catch_all is None and not any(conditions):
            catch_all = rule.index
    return {index: found for index, found in notes.items() if found}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request judged from the configuration: where it goes, and what the policy says."""

    decision: Decision | None  # None: where it goes is known only at run time (the catalogue)
    server: str | None  # None: the gateway answers it on /mcp
    item: tuple[Kind, str] | None  # as the upstream names it
    via: str  # how the server was found


def check_request(
    config: Config, identity: Identity, method: str, name: str | None, server: str | None = None
) -> Verdict:
    """The decision for ``method`` [``name``] by ``identity``: on ``/servers/<server>/mcp``, or on
    ``/mcp`` (``server`` None), where the routing rules and prefixes say which upstream it reaches."""
    kind = CALL_KIND.get(method)
    if kind is None and name is not None:
        raise ValueError(f"{method} addresses no tool, prompt or resource by name; check it without NAME")
    item = None if kind is None or name is None else (kind, name)
    policy = Policy(config.policy or PolicyConfig(default="allow"))
    if server is not None:
        return Verdict(policy.judge(identity, server, method, item), server, item, "endpoint")
    if method not in ADDRESSING:
        return Verdict(policy.judge(identity, None, method, None), None, None, "gateway")
    route = Router.for_config(config).check(method, name)
    if route is None:
        return Verdict(None, None, item, "catalogue")
    routed = None if item is None else (item[0], route.name)
    return Verdict(policy.judge(identity, route.upstream, method, routed), route.upstream, routed, route.via)
