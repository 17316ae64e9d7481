"""Which upstream a call on the unified endpoint goes to, and under which name. Pure, no I/O.

The unified endpoint ``/mcp`` is one MCP server made of all upstreams, so a call that addresses a tool, prompt or
resource must reach exactly one of them. First match wins, in this fixed order (DESIGN.md section 5):

1. the explicit ``routing`` rules, in file order: the operator's word beats any inference;
2. one implicit rule per upstream with a ``prefix``: ``github__search`` goes to ``github`` as ``search``;
3. the catalogue fallback: a name (prefix-less upstreams only) or a URI (any upstream) that an upstream lists.

Lists use the same router backwards (``list_targets``, ``exposed_name``) so that what is listed is exactly what is
callable. ``Router.__init__`` compiles everything ``route`` needs: ``route`` runs on every request and only matches
precompiled regexes, allocating nothing but the ``Route`` it returns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mcpgate.config.model import Config, Glob, RoutingRule, UpstreamConfig

SEPARATOR: Final = "__"
CLIENT_SAFE_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what Anthropic/OpenAI clients accept

Kind = Literal["tool", "prompt", "resource"]
ListedKind = Literal["tool", "prompt", "resource", "template"]

# The method of a call that addresses one item, and the list method that lists items of that kind.
CALL_KIND: Final[Mapping[str, Kind]] = {
    "tools/call": "tool",
    "prompts/get": "prompt",
    "resources/read": "resource",
    "resources/subscribe": "resource",
    "resources/unsubscribe": "resource",
}
LIST_KIND: Final[Mapping[str, Kind]] = {
    "tools/list": "tool",
    "prompts/list": "prompt",
    "resources/list": "resource",
    "resources/templates/list": "resource",
}

# The call whose routing decides where a list of that kind fans out: listing what cannot be called is useless.
CALL_OF_KIND: Final[Mapping[Kind, str]] = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}
# Every (method, kind) an implicit route can serve; report() asks which explicit rules cover all of them.
_NAMED_CALLS: Final[tuple[tuple[str, Kind], ...]] = (
    ("tools/call", "tool"),
    ("prompts/get", "prompt"),
    ("completion/complete", "prompt"),
)
_URI_CALLS: Final[tuple[tuple[str, Kind], ...]] = (
    *((method, "resource") for method, kind in CALL_KIND.items() if kind == "resource"),
    ("completion/complete", "resource"),
)
_SAFE_CHARS: Final = re.compile(r"[a-zA-Z0-9_-]*")
_ANYTHING: Final = re.compile(r".*", re.DOTALL)  # the name regex of a rule without item glob: never consulted


def addressed_item(method: str, params: Mapping[str, Any]) -> tuple[Kind, str] | None:
    """The tool, prompt or resource a request addresses, for routing; None when it addresses none.

    ``tools/call`` and ``prompts/get`` address ``params["name"]``; the ``resources/*`` calls ``params["uri"]``;
    ``completion/complete`` addresses what its ``ref`` names (``ref/prompt`` by name, ``ref/resource`` by URI).
    A missing or non-string value is None: such a request can only follow an explicit rule without item glob.
    """
    kind = CALL_KIND.get(method)
    if kind is not None:
        return _item(kind, params.get("uri" if kind == "resource" else "name"))
    if method != "completion/complete":
        return None
    ref = params.get("ref")
    if not isinstance(ref, Mapping):
        return None
    if ref.get("type") == "ref/prompt":
        return _item("prompt", ref.get("name"))
    if ref.get("type") == "ref/resource":
        return _item("resource", ref.get("uri"))
    return None


def _item(kind: Kind, value: object) -> tuple[Kind, str] | None:
    return (kind, value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the upstreams currently list, for the catalogue fallback. Built by the caller from list answers.

    Each name or URI maps to the upstreams that list it, in config file order, so that "the first in file order
    wins" is simply the first entry the router accepts. Treat the mappings as read-only: the router keeps none.
    """

    tools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tool name -> upstreams listing it
    prompts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    resources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # resource URI -> upstreams listing it
    templates: tuple[tuple[str, str], ...] = ()  # (upstream, RFC 6570 uriTemplate) in file order

    @classmethod
    def build(cls, listed: Mapping[str, Mapping[ListedKind, Iterable[str]]], order: Sequence[str]) -> Catalogue:
        """From each upstream's listed items, ``{"tool": names, "prompt": names, "resource": uris, "template":
        uriTemplates}`` (original names, prefix not applied), ordered by ``order`` (the upstream names in file order).

        ``order`` is explicit because list answers arrive in whatever order the fan-out finished; upstreams missing
        from ``order`` are not configured and are left out. Duplicates within one upstream's list count once.
        """
        names: dict[ListedKind, dict[str, list[str]]] = {"tool": {}, "prompt": {}, "resource": {}}
        templates: dict[tuple[str, str], None] = {}
        for upstream in order:
            items = listed.get(upstream, {})
            for kind, index in names.items():
                for name in items.get(kind, ()):
                    owners = index.setdefault(name, [])
                    if not owners or owners[-1] != upstream:
                        owners.append(upstream)
            templates.update(((upstream, t), None) for t in items.get("template", ()))
        frozen = {kind: {name: tuple(owners) for name, owners in index.items()} for kind, index in names.items()}
        return cls(frozen["tool"], frozen["prompt"], frozen["resource"], tuple(templates))


_NO_CATALOGUE: Final = Catalogue()

_EXPRESSION: Final = re.compile(r"\{([^{}]*)\}")
_VARSPEC: Final = r"[A-Za-z0-9_.%]+(?::[1-9][0-9]{0,3}|\*)?"
_VARLIST: Final = re.compile(rf"{_VARSPEC}(?:,{_VARSPEC})*")
# What each RFC 6570 operator's expansion looks like, matched loosely: values are not decoded and a prefix
# modifier (``{x:3}``) is not enforced. Optional operators match their empty expansion too (undefined variables).
_OPERATORS: Final[Mapping[str, str]] = {
    "": r"[^/]+",  # {x}, {x,y}: one or more characters, no '/'
    "+": r".*",  # {+path}: reserved expansion, anything (including '/' and nothing)
    "#": r"(?:#.*)?",  # {#frag}: nothing, or '#' then anything
    "/": r"(?:/[^/?#]*)*",  # {/seg}, {/a,b}, {/seg*}: zero or more '/'-led segments
    ".": r"(?:\.[^/?#]*)?",  # {.ext}: nothing, or '.' then anything up to '/', '?' or '#'
    ";": r"(?:;[^/?#]*)?",  # {;params}: nothing, or ';' then anything up to '/', '?' or '#'
    "?": r"(?:\?[^#]*)?",  # {?q,r}: nothing, or '?' then anything up to '#'
    "&": r"(?:&[^#]*)?",  # {&more}: nothing, or '&' then anything up to '#'
}


@functools.lru_cache(maxsize=1024)  # bounded: templates come from upstreams
def template_regex(uri_template: str) -> re.Pattern[str]:
    """A regex for the URIs an RFC 6570 ``uriTemplate`` can expand to; use it with ``fullmatch``.

    Literal parts match themselves. Expressions match as ``_OPERATORS`` says. An expression that is not valid
    RFC 6570 (reserved operators ``=,!@|``, bad variable names, ``{}``) and an unclosed brace match only their own
    literal text: a template the gateway cannot read routes nothing rather than everything. Adjacent ``{+a}{+b}``
    collapse into one ``.*``, so that an upstream's template cannot make matching a long URI take polynomial time.
    """
    parts: list[str] = []
    end = 0
    for expression in _EXPRESSION.finditer(uri_template):
        if expression.start() > end:
            parts.append(re.escape(uri_template[end : expression.start()]))
        body = expression.group(1)
        operator = body[:1] if body[:1] in _OPERATORS else ""
        if _VARLIST.fullmatch(body, len(operator)) is None:
            parts.append(re.escape(expression.group(0)))
        elif not (operator == "+" and parts and parts[-1] == _OPERATORS["+"]):
            parts.append(_OPERATORS[operator])
        end = expression.end()
    parts.append(re.escape(uri_template[end:]))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Route:
    upstream: str
    name: str  # the name or URI to forward upstream (prefix stripped where it applies)
    via: str  # how it was chosen: "routing[3]" (explicit rule, its 0-based index), "prefix" or "catalogue"


@dataclass(frozen=True, slots=True)
class RuleReport:
    index: int
    match: Mapping[str, str]  # field -> pattern; "method" always present
    upstream: str
    shadowed_by: int | None  # an earlier rule that matches everything this one does


@dataclass(frozen=True, slots=True)
class RoutingReport:
    """The compiled routing table for ``mcpgate routes``: what each rule does and what can never happen."""

    rules: tuple[RuleReport, ...]
    prefixes: tuple[tuple[str, str], ...]  # (upstream, prefix + separator), file order
    prefix_shadowed_by: Mapping[str, int]  # upstream -> the explicit rule by which its prefix rule is dead
    catalogue_shadowed_by: int | None  # the explicit rule by which the whole catalogue fallback is dead
    unreachable: tuple[str, ...]  # upstreams no request can reach, file order
    unsafe_prefixes: tuple[str, ...]  # upstreams whose prefix + separator cannot start a CLIENT_SAFE_NAME


@dataclass(frozen=True, slots=True)
class _Rule:
    """An explicit rule as ``route`` reads it: regexes, the stripping prefix and the ``via`` label precomputed."""

    method: re.Pattern[str]
    kind: Kind | None  # the kind of item it requires; None when it has no item glob
    name: re.Pattern[str]  # the client-visible name or URI must match it (when kind is set)
    upstream: str
    strip: str  # the target's prefix + separator, stripped from tool and prompt names; "" when it has none
    via: str


def _item_globs(rule: RoutingRule) -> tuple[tuple[Kind, Glob], ...]:
    match = rule.match
    candidates: tuple[tuple[Kind, Glob | None], ...] = (
        ("tool", match.tool),
        ("resource", match.resource),
        ("prompt", match.prompt),
    )
    return tuple((kind, glob) for kind, glob in candidates if glob is not None)


class Router:
    """The first-match router of the unified endpoint, compiled once from the routing rules and the upstreams."""

    @classmethod
    def for_config(cls, config: Config) -> Router:
        return cls(config.routing, config.upstreams, config.server.prefix_separator)

    def __init__(self, rules: Sequence[RoutingRule], upstreams: Sequence[UpstreamConfig], separator: str = SEPARATOR):
        self._upstreams = tuple(u.name for u in upstreams)  # file order
        self._known = frozenset(self._upstreams)
        # An empty prefix is no prefix: "__name" would be a namespace of nothing.
        self._prefix_of: Mapping[str, str] = {u.name: u.prefix + separator for u in upstreams if u.prefix}
        self._prefixes = tuple((prefix, upstream) for upstream, prefix in self._prefix_of.items())
        self._bare = self._known - self._prefix_of.keys()
        self._rules = tuple(sorted(rules, key=lambda r: r.index))
        self._globs = tuple(_item_globs(r) for r in self._rules)
        for rule in self._rules:
            if rule.upstream not in self._known:
                raise ValueError(f"routing[{rule.index}].upstream: unknown upstream {rule.upstream!r}")
        # A rule with item globs of two kinds needs one item of both kinds: it never matches, so route() skips it.
        self._compiled = tuple(
            _Rule(
                rule.match.method.regex,
                globs[0][0] if globs else None,
                globs[0][1].regex if globs else _ANYTHING,
                rule.upstream,
                self._prefix_of.get(rule.upstream, ""),
                f"routing[{rule.index}]",
            )
            for rule, globs in zip(self._rules, self._globs, strict=True)
            if len(globs) <= 1
        )
        # What each kind's list fans out to: asked by every list on /mcp, fixed for this router.
        self._list_targets = {kind: self._fan_out(kind) for kind in CALL_OF_KIND}

    def route(self, method: str, item: tuple[Kind, str] | None, catalogue: Catalogue) -> Route | None:
        """Where a request goes, first match wins; None when nothing routes it (the caller answers an error).

        ``item`` is ``addressed_item(method, params)``. Without an item only explicit rules can apply, and the
        route's name is "". Explicit rules see the client-visible name (prefix included) and strip the target's
        own prefix, if the name has it and something follows, so a rule may send ``github__x`` to ``github``.
        """
        for rule in self._compiled:
            if rule.method.match(method) is None:
                continue
            if rule.kind is not None and (item is None or item[0] != rule.kind or rule.name.match(item[1]) is None):
                continue
            if item is None:
                return Route(rule.upstream, "", rule.via)
            kind, name = item
            strip = rule.strip
            if strip and kind != "resource" and len(name) > len(strip) and name.startswith(strip):
                return Route(rule.upstream, name[len(strip) :], rule.via)
            return Route(rule.upstream, name, rule.via)
        if item is None:
            return None
        kind, name = item
        if kind == "resource":
            return self._route_uri(name, catalogue)
        for prefix, upstream in self._prefixes:
            if len(name) > len(prefix) and name.startswith(prefix):
                return Route(upstream, name[len(prefix) :], "prefix")
        # A prefixed upstream's bare names are not exposed, so the catalogue must not reach them either.
        for upstream in (catalogue.tools if kind == "tool" else catalogue.prompts).get(name, ()):
            if upstream in self._bare:
                return Route(upstream, name, "catalogue")
        return None

    def _route_uri(self, uri: str, catalogue: Catalogue) -> Route | None:
        """URIs are global and never rewritten: a listed URI first, then the first template that matches."""
        for upstream in catalogue.resources.get(uri, ()):
            if upstream in self._known:
                return Route(upstream, uri, "catalogue")
        for upstream, template in catalogue.templates:
            if upstream in self._known and template_regex(template).fullmatch(uri) is not None:
                return Route(upstream, uri, "catalogue")
        return None

    def check(self, method: str, name: str | None, catalogue: Catalogue = _NO_CATALOGUE) -> Route | None:
        """``mcpgate routes --check METHOD [NAME]``: route a call as if a client sent it.

        Only the methods of ``CALL_KIND`` take a NAME (``completion/complete`` refs are not supported here); a NAME
        for any other method is a usage error, raised as ValueError rather than silently ignored.
        """
        kind = CALL_KIND.get(method)
        if kind is None and name is not None:
            raise ValueError(f"{method} addresses no tool, prompt or resource by name; check it without NAME")
        item = None if kind is None or name is None else (kind, name)
        return self.route(method, item, catalogue)

    def exposed_name(self, upstream: str, kind: Kind, name: str) -> str:
        """The name a client sees for an upstream's item: tools and prompts get the upstream's prefix, URIs never."""
        prefix = None if kind == "resource" else self._prefix_of.get(upstream)
        return name if prefix is None else prefix + name

    def list_targets(self, kind: Kind) -> tuple[str, ...]:
        """The upstreams (file order) a list of ``kind`` fans out to (see ``_fan_out``)."""
        return self._list_targets[kind]

    def _fan_out(self, kind: Kind) -> tuple[str, ...]:
        """The upstreams (file order) a list of ``kind`` fans out to: every one a call of that kind could reach.

        Explicit rules whose method matches the kind's call and whose item globs (if any) are of that kind add their
        target; a rule without item glob catches every such call, so nothing after it counts. Otherwise the implicit
        rules add every upstream (prefixed ones by prefix, all of them by the catalogue). The caller still keeps an
        item only if ``route`` sends its call back to the same upstream under the same name.
        """
        call = CALL_OF_KIND[kind]
        targets = set()
        for rule, globs in zip(self._rules, self._globs, strict=True):
            if not rule.match.method.matches(call) or any(k != kind for k, _ in globs):
                continue
            targets.add(rule.upstream)
            if not globs:
                break
        else:
            targets.update(self._upstreams)
        return tuple(u for u in self._upstreams if u in targets)

    def report(self) -> RoutingReport:
        """The routing table for humans and ``--json``; shadowing is judged conservatively (no false alarms)."""
        rules = tuple(
            RuleReport(
                rule.index, {"method": rule.match.method.pattern, **self._patterns(i)}, rule.upstream, self._shadow(i)
            )
            for i, rule in enumerate(self._rules)
        )
        prefix_shadowed_by = {
            upstream: index
            for prefix, upstream in self._prefixes
            if (index := self._covered(_NAMED_CALLS, prefix + "*")) is not None
        }
        catalogue_shadowed_by = self._covered(_NAMED_CALLS + _URI_CALLS)
        # A prefixed upstream's catalogue fallback serves URIs only; a bare one's serves names and URIs.
        uris_shadowed = self._covered(_URI_CALLS) is not None
        live = {
            r.upstream
            for r, g, rep in zip(self._rules, self._globs, rules, strict=True)
            if rep.shadowed_by is None and len(g) <= 1
        }
        implicit_dead = set(prefix_shadowed_by) if uris_shadowed else set()
        if catalogue_shadowed_by is not None:
            implicit_dead |= self._bare
        unreachable = tuple(u for u in self._upstreams if u in implicit_dead and u not in live)
        unsafe = tuple(u for p, u in self._prefixes if len(p) >= 64 or _SAFE_CHARS.fullmatch(p) is None)
        prefixes = tuple((u, p) for p, u in self._prefixes)
        return RoutingReport(rules, prefixes, prefix_shadowed_by, catalogue_shadowed_by, unreachable, unsafe)

    def _patterns(self, position: int) -> dict[str, str]:
        return {kind: glob.pattern for kind, glob in self._globs[position]}

    def _shadow(self, position: int) -> int | None:
        """The first earlier rule whose patterns are each "*" or identical to this rule's, over a subset of fields."""
        method = self._rules[position].match.method.pattern
        patterns = self._patterns(position)
        for i, earlier in enumerate(self._rules[:position]):
            if earlier.match.method.pattern not in ("*", method):
                continue
            if all(k in patterns and p in ("*", patterns[k]) for k, p in self._patterns(i).items()):
                return earlier.index
        return None

    def _covered(self, calls: Iterable[tuple[str, Kind]], name_pattern: str = "*") -> int | None:
        """The explicit rule by which every one of ``calls`` is caught, whatever the name; None if one escapes.

        A rule catches a call when its method glob matches it and it has no item glob, or only one of the call's
        kind whose pattern is "*" or ``name_pattern`` (``github__*`` for github's prefix rule).
        """
        last = -1
        for method, kind in calls:
            for rule, globs in zip(self._rules, self._globs, strict=True):
                if rule.match.method.matches(method) and (
                    not globs
                    or (len(globs) == 1 and globs[0][0] == kind and globs[0][1].pattern in ("*", name_pattern))
                ):
                    last = max(last, rule.index)
                    break
            else:
                return None
        return last
