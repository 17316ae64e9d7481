"""What the store holds, and how it joins the file: pure data, no I/O.

The store keeps five kinds of object, each in the shape of the configuration section it extends,
so that one JSON Schema validates both. ``merge`` lays them over the file's validated document:
the file's names win (the admin API refuses them, and a store object that a later file shadows
is left out and reported), store upstreams join the file's, store API keys and role mappings are
appended to the file's lists, and store policy and rate-limit rules come after the file's rules,
so that with first-match-wins the file keeps the last word on what it decides.

Upstream credentials (``auth.token``, ``auth.value``, ``headers`` and ``env`` values) never sit in
a row's JSON: ``split_secrets`` takes them out to be sealed apart, ``join_secrets`` puts them back
once opened, and ``redacted`` is what the API and the audit trail show instead.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Kind = Literal["upstream", "api_key", "role_mapping", "policy", "rate_limits"]
KINDS: Final[tuple[Kind, ...]] = ("upstream", "api_key", "role_mapping", "policy", "rate_limits")
# The single object of the two list kinds.
SINGLETON: Final = {"policy": "policy", "rate_limits": "rate_limits"}
REDACTED: Final = "<redacted>"  # shown for a secret; sent back in a PUT, it keeps the stored value


@dataclass(frozen=True, slots=True)
class Row:
    """One stored object: its body (credentials already joined back in) and the store revision
    of its last change, which is its ETag."""

    kind: Kind
    name: str
    body: Mapping[str, Any]
    revision: int
    updated_at: str = ""
    updated_by: str = ""


@dataclass(frozen=True, slots=True)
class Objects:
    """Everything in the store at one revision."""

    revision: int = 0
    rows: Mapping[tuple[Kind, str], Row] = field(default_factory=dict)

    def of(self, kind: Kind) -> list[Row]:
        return sorted((row for (k, _), row in self.rows.items() if k == kind), key=lambda row: row.name)

    def get(self, kind: Kind, name: str) -> Row | None:
        return self.rows.get((kind, name))

    def with_change(self, kind: Kind, name: str, body: Mapping[str, Any] | None) -> Objects:
        """These objects as they would be after one change (``None`` deletes), for validation."""
        rows = dict(self.rows)
        if body is None:
            rows.pop((kind, name), None)
        else:
            rows[(kind, name)] = Row(kind, name, body, self.revision + 1)
        return Objects(self.revision + 1, rows)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the store's objects landed in the merged document, to point an error at its body."""

    file_api_keys: int = 0
    file_role_mappings: int = 0
    file_policy_rules: int = 0
    file_rate_limit_rules: int = 0
    api_keys: tuple[str, ...] = ()  # store key ids, in merged order after the file's
    role_mappings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Merged:
    data: dict[str, Any]
    layout: Layout
    shadowed: tuple[str, ...] = ()  # store objects left out, and why, for the log


def owned_by_file(file: Mapping[str, Any], kind: Kind, name: str) -> str | None:
    """Why the file owns ``name`` of ``kind`` (so the store may not take it), or None."""
    if kind == "upstream" and name in _dict(file.get("upstreams")):
        return f"upstream {name!r} is defined in the configuration file"
    if kind == "api_key" and any(_dict(k).get("id") == name for k in _list(_dict(file.get("auth")).get("api_keys"))):
        return f"API key {name!r} is defined in the configuration file"
    return None


def needs_from_file(file: Mapping[str, Any], kind: Kind) -> str | None:
    """What the file must have for objects of ``kind`` to mean anything, when it lacks it."""
    auth = file.get("auth")
    if kind == "api_key" and not isinstance(auth, dict):
        return (
            "the configuration file has no auth section, so clients are not authenticated; a key would "
            "change that for every client: add 'auth: {}' to the file first"
        )
    if kind == "role_mapping" and not isinstance(_dict(auth).get("jwt"), dict):
        return "role mappings apply to JWTs: the configuration file has no auth.jwt section"
    return None


def merge(file: Mapping[str, Any], objects: Objects) -> Merged:
    """The effective document: the file's, with the store's objects laid over it (see the module)."""
    data: dict[str, Any] = copy.deepcopy(dict(file))
    shadowed: list[str] = []
    upstreams = data.setdefault("upstreams", {})
    for row in objects.of("upstream"):
        if row.name in upstreams:
            shadowed.append(f"store upstream {row.name!r}: the file defines one of that name, and it wins")
        else:
            upstreams[row.name] = copy.deepcopy(dict(row.body))
    layout: dict[str, Any] = {}
    auth = data.get("auth")
    keys = objects.of("api_key")
    if isinstance(auth, dict):
        file_keys = auth.setdefault("api_keys", [])
        taken = {_dict(k).get("id") for k in file_keys}
        layout["file_api_keys"] = len(file_keys)
        added = [row for row in keys if row.name not in taken]
        shadowed += [f"store API key {r.name!r}: the file defines one of that id" for r in keys if r.name in taken]
        file_keys += [{"id": row.name, **_without(row.body, "id")} for row in added]
        layout["api_keys"] = tuple(row.name for row in added)
    elif keys:
        shadowed.append(f"{len(keys)} store API key(s): the file has no auth section, so keys are not used")
    mappings = objects.of("role_mapping")
    jwt = _dict(auth).get("jwt")
    if isinstance(jwt, dict):
        file_mappings = jwt.setdefault("role_mappings", [])
        layout["file_role_mappings"] = len(file_mappings)
        file_mappings += [copy.deepcopy(dict(row.body)) for row in mappings]
        layout["role_mappings"] = tuple(row.name for row in mappings)
    elif mappings:
        shadowed.append(f"{len(mappings)} store role mapping(s): the file has no auth.jwt section")
    lists: tuple[tuple[Kind, str, str], ...] = (
        ("policy", "policy", "file_policy_rules"),
        ("rate_limits", "rate_limit", "file_rate_limit_rules"),
    )
    for kind, section, count in lists:
        stored = objects.get(kind, SINGLETON[kind])
        if stored is None:
            continue
        if isinstance(data.get(section), dict):
            rules = data[section].setdefault("rules", [])
            layout[count] = len(rules)
            rules += copy.deepcopy(list(stored.body.get("rules", [])))
        else:
            data[section] = copy.deepcopy(dict(stored.body))
    return Merged(data, Layout(**layout), tuple(shadowed))


def body_pointer(kind: Kind, name: str, layout: Layout, path: tuple[str | int, ...]) -> str | None:
    """The JSON pointer, into the body of the object ``kind``/``name``, of a merged document's
    ``path``; None when the path lies outside that object."""
    inside: tuple[str | int, ...] | None = None
    if kind == "upstream" and path[:2] == ("upstreams", name):
        inside = path[2:]
    elif kind == "api_key" and path[:2] == ("auth", "api_keys") and len(path) > 2:
        index = layout.file_api_keys + layout.api_keys.index(name) if name in layout.api_keys else -1
        inside = path[3:] if path[2] == index else None
    elif kind == "role_mapping" and path[:3] == ("auth", "jwt", "role_mappings") and len(path) > 3:
        index = layout.file_role_mappings + layout.role_mappings.index(name) if name in layout.role_mappings else -1
        inside = path[4:] if path[3] == index else None
    elif kind in SINGLETON:
        section, offset = (
            ("policy", layout.file_policy_rules) if kind == "policy" else ("rate_limit", layout.file_rate_limit_rules)
        )
        if path[:1] == (section,):
            inside = path[1:]
            if inside[:1] == ("rules",) and len(inside) > 1 and isinstance(inside[1], int):
                if inside[1] < offset:
                    return None  # one of the file's rules
                inside = ("rules", inside[1] - offset, *inside[2:])
    if inside is None:
        return None
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in inside)


def pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


# Upstream credentials, by where they sit in an upstream's body.
def secret_paths(body: Mapping[str, Any]) -> Iterator[tuple[str, ...]]:
    auth = _dict(body.get("auth"))
    for key in ("token", "value"):
        if key in auth:
            yield ("auth", key)
    for section in ("headers", "env"):
        for name in _dict(body.get(section)):
            yield (section, name)


def split_secrets(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the body with every credential replaced by ``REDACTED``, the credentials by pointer)."""
    public = copy.deepcopy(dict(body))
    secrets: dict[str, Any] = {}
    for path in secret_paths(body):
        node = public
        for part in path[:-1]:
            node = node[part]
        secrets[pointer(path)] = node[path[-1]]
        node[path[-1]] = REDACTED
    return public, secrets


def join_secrets(public: Mapping[str, Any], secrets: Mapping[str, Any]) -> dict[str, Any]:
    """``public`` with each ``REDACTED`` credential put back from ``secrets`` (unknown ones stay)."""
    body = copy.deepcopy(dict(public))
    for path in secret_paths(body):
        node = body
        for part in path[:-1]:
            node = node[part]
        if node[path[-1]] == REDACTED and pointer(path) in secrets:
            node[path[-1]] = secrets[pointer(path)]
    return body


def url_credentials(url: object) -> bool:
    """Whether an upstream URL carries a user or password (``https://user:pw@host``)."""
    from urllib.parse import urlsplit

    try:
        return isinstance(url, str) and "@" in (urlsplit(url).netloc or "")
    except ValueError:
        return False


def _without_userinfo(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=REDACTED + "@" + parts.netloc.rsplit("@", 1)[1]))


def redacted(kind: Kind, body: Mapping[str, Any]) -> dict[str, Any]:
    """What may be shown of an object: credentials and key hashes replaced."""
    if kind == "upstream":
        shown = split_secrets(body)[0]
        if url_credentials(shown.get("url")):  # the file's (the store refuses them)
            shown["url"] = _without_userinfo(shown["url"])
        return shown
    shown = copy.deepcopy(dict(body))
    if "key_hash" in shown:
        shown["key_hash"] = REDACTED
    if "key" in shown:
        shown["key"] = REDACTED
    return shown


def redacted_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """The effective configuration with every credential replaced, for GET /admin/v1/config."""
    shown = copy.deepcopy(dict(data))
    for name, upstream in _dict(shown.get("upstreams")).items():
        shown["upstreams"][name] = redacted("upstream", _dict(upstream))
    auth = _dict(shown.get("auth"))
    if "api_keys" in auth:
        auth["api_keys"] = [redacted("api_key", _dict(k)) for k in _list(auth["api_keys"])]
    admin = _dict(shown.get("admin"))
    if "api_keys" in admin:
        admin["api_keys"] = [redacted("api_key", _dict(k)) for k in _list(admin["api_keys"])]
    hidden = (("store", "url"), ("store", "encryption_key"), ("sessions", "redis_url"), ("rate_limit", "redis_url"))
    for section, key in hidden:
        if key in _dict(shown.get(section)):
            shown[section][key] = REDACTED
    return shown


def _without(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in body.items() if k != key}


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
