"""``admin``: the admin REST API (``/admin/v1``) driven from a shell, one request per command.

The client is ``urllib.request``, not aiohttp: each command makes one request and waits for it,
so a plain blocking call says it more simply than a coroutine and an event loop, and the stdlib
client keeps aiohttp's import off a path that scripts run in loops. Two of its defaults are
turned off because the request carries an admin credential: proxies named by ``*_proxy``
variables (the admin listener is private; the credential must not travel through a third
party) and redirects (urllib would repeat the ``Authorization`` header to wherever one points).

The credential comes from a file (``--key-file``) or ``MCPGATE_ADMIN_KEY``, never from a flag:
a command line is visible to every user of the machine in ``ps``. The address defaults to the
admin listener that the configuration ``start`` would read describes, so that on the gateway's
own host ``mcpgate admin upstreams list`` needs nothing else.

Exit codes follow the other verbs: 1 when the API answered with an error (its problem details
printed like ``validate``'s issues, with the file's line and column when the body came from
``-f``), 69 when no answer came at all (a later try may succeed), 2 for usage. A change that was
stored but could not be put in force yet (``applied: false``) is a success with a warning: it is
in the store, and the gateway applies it when it can.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from mcpgate import __version__
from mcpgate.cli.common import (
    EXIT_FAILURE,
    EXIT_UNAVAILABLE,
    configure_cli_logging,
    exit_with,
    load_or_exit,
    shared_options,
)
from mcpgate.cli_output import emit_json, host_port, print_issues, reachable_host, render_table

if TYPE_CHECKING:
    import urllib.request

DEFAULT_ADMIN_URL: Final = "http://127.0.0.1:8081"
PREFIX: Final = "/admin/v1"
KEY_ENV: Final = "MCPGATE_ADMIN_KEY"
CREDENTIAL_HINT: Final = f"pass --key-file PATH (a file holding an admin key) or set {KEY_ENV}"

F = TypeVar("F", bound=Callable[..., Any])


# -- talking to the API ------------------------------------------------------------------------


@functools.cache
def opener() -> urllib.request.OpenerDirector:
    """Without proxies and redirects (see the module). Built on first use: ``mcpgate --version``
    and ``health`` (a Docker HEALTHCHECK) load this module too, and should not pay for HTTP and TLS."""
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # urllib then raises HTTPError with the 3xx: reported, never followed

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirects())


@dataclass(frozen=True)
class Answer:
    status: int
    etag: str | None
    body: Any  # parsed JSON, the text when it is not JSON, or None when empty
    content_type: str = ""


@dataclass(frozen=True)
class Document:
    """A body read from ``-f``: the data sent, and the YAML tree that knows where each value was."""

    source: str
    data: dict[str, Any]
    tree: Any = None


@dataclass
class Settings:
    """The group's options; the URL and the credential are worked out when a command first
    needs them, so that ``--help`` and usage errors never read a configuration file."""

    url: str | None
    config_path: str | None
    key_file: str | None
    timeout: float
    as_json: bool
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            base, note = resolve_url(self.url, self.config_path)
            credential, origin = read_credential(self.key_file)
            self._client = Client(base, credential, origin, self.timeout, self.as_json, note)
        return self._client


@dataclass(frozen=True)
class Client:
    base: str  # scheme://host:port, no path
    credential: str | None
    origin: str | None  # where the credential came from, for hints: "--key-file PATH", "MCPGATE_ADMIN_KEY"
    timeout: float
    as_json: bool
    note: str | None = None  # why this base URL, when a wrong guess would explain a failure

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        if_match: str | None = None,
        document: Document | None = None,
    ) -> Answer:
        """The API's answer to one request; any error answer is reported and exits 1, no answer
        exits 69."""
        import http.client
        import urllib.error
        import urllib.request

        headers = {"Accept": "application/json", "User-Agent": f"mcpgate/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if self.credential is not None:
            headers["Authorization"] = f"Bearer {self.credential}"
        if if_match is not None:
            headers["If-Match"] = etag_of(if_match)
        url = self.base + PREFIX + path  # http or https only: normalised_url checked the scheme
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with opener().open(request, timeout=self.timeout) as response:
                answer = _answer(
                    response.status, response.headers.get("Content-Type"), response.headers.get("ETag"), response.read()
                )
        except urllib.error.HTTPError as err:
            with err:
                answer = _answer(err.code, err.headers.get("Content-Type"), err.headers.get("ETag"), err.read())
            self.fail(answer, document)
        except urllib.error.URLError as err:
            self.unreachable(err.reason)
        except (OSError, http.client.HTTPException) as exc:  # timeouts and resets while reading
            self.unreachable(exc)
        if answer.status != 204 and not isinstance(answer.body, dict):
            self.fail(answer, document)
        return answer

    def unreachable(self, reason: object) -> NoReturn:
        why = describe_failure(reason, self.timeout)
        note = f" ({self.note})" if self.note else ""
        exit_with(EXIT_UNAVAILABLE, f"mcpgate admin: cannot reach the admin API at {self.base}: {why}{note}")

    def fail(self, answer: Answer, document: Document | None) -> NoReturn:
        """The error answer on stderr (and, with --json, its body on stdout); exit 1."""
        problem = answer.body if is_problem(answer) else None
        if problem is None:
            exit_with(
                EXIT_FAILURE,
                f"mcpgate admin: HTTP {answer.status} from {self.base}, and not an admin API answer: "
                "is this the admin listener (admin.host, admin.port)? Pass --url or set MCPGATE_ADMIN_URL",
            )
        if self.as_json:
            emit_json(problem)
        title = problem.get("title") or "Error"
        click.echo(f"mcpgate admin: {answer.status} {title}: {problem.get('detail', '')}", err=True)
        for error in problem.get("errors") or []:
            if isinstance(error, Mapping):
                click.echo(error_line(error, document), err=True)
        hint = self.hint(answer.status, problem)
        if hint:
            click.echo(f"hint: {hint}", err=True)
        # 503: the API answered, but its store did not; like no answer at all, a later try may work.
        sys.exit(EXIT_UNAVAILABLE if answer.status == 503 else EXIT_FAILURE)

    def hint(self, status: int, problem: Mapping[str, Any]) -> str | None:
        if status == 401 and self.credential is None:
            return f"no admin credential was sent: {CREDENTIAL_HINT}"
        if status == 401:
            return (
                f"the credential from {self.origin} was refused: an admin key's hash must be in admin.api_keys "
                f"(mcpgate hash-key prints it); {CREDENTIAL_HINT}"
            )
        if status == 403:
            return (
                f"the credential from {self.origin} is valid, but not an admin's: use a key from admin.api_keys "
                f"or a token holding one of admin.roles; {CREDENTIAL_HINT}"
            )
        if status == 412 and problem.get("etag"):
            return f"the current ETag is {problem['etag']}: get the object again, then send --if-match with it"
        return None


def _answer(status: int, content_type: str | None, etag: str | None, raw: bytes) -> Answer:
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")[:300]
    return Answer(status, etag, body, (content_type or "").split(";")[0].strip())


def is_problem(answer: Answer) -> bool:
    body = answer.body
    if not isinstance(body, dict):
        return False
    return answer.content_type == "application/problem+json" or ("title" in body and "status" in body)


def describe_failure(reason: object, timeout: float) -> str:
    """Why there was no answer, from the error's type and errno, never its text (which can hold
    the URL)."""
    import http.client
    import socket
    import ssl

    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "its TLS certificate is not trusted"
    if isinstance(reason, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(reason, socket.gaierror):
        return "cannot resolve host"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.RemoteDisconnected | ConnectionResetError):
        return "the server closed the connection"
    if isinstance(reason, http.client.HTTPException):
        return "not an HTTP answer"
    if isinstance(reason, OSError) and reason.errno:
        return os.strerror(reason.errno).lower()
    return type(reason).__name__ if not isinstance(reason, str) else reason


def error_line(error: Mapping[str, Any], document: Document | None) -> str:
    """One error like a validate issue: ``FILE:LINE:COL: /pointer: detail`` when the body came
    from a file, else ``/pointer: detail``; a ``path`` is elsewhere in the effective configuration."""
    detail = error.get("detail", "")
    if "pointer" in error:
        pointer = str(error["pointer"])
        shown = pointer or "(root)"
        if document is not None:
            line, col = position(document.tree, pointer)
            return f"{document.source}:{line}:{col}: {shown}: {detail}"
        return f"{shown}: {detail}"
    if "parameter" in error:  # an analytics question's query parameter
        return f"--{str(error['parameter']).replace('_', '-')}: {detail}"
    return f"{error.get('path') or '(root)'}: {detail} (in the effective configuration)"


def etag_of(text: str) -> str:
    """An ETag as the API wants it: ``7`` and ``"7"`` both mean revision 7; ``*`` matches any."""
    text = text.strip()
    return f'"{text}"' if text.isdigit() else text


def quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# -- the URL and the credential ----------------------------------------------------------------


def resolve_url(url: str | None, config_path: str | None) -> tuple[str, str | None]:
    """(base URL, a note on where it came from when that is a guess)."""
    if url:
        return url, None  # normalised by the option's callback
    from mcpgate.config import ConfigError, find_config_file
    from mcpgate.config.overrides import from_environment

    try:
        find_config_file(config_path)
    except ConfigError as err:
        if config_path is not None:  # asked for a file that is not there
            exit_with(EXIT_FAILURE, f"{print_issues(err)} error(s)")
        return DEFAULT_ADMIN_URL, "no --url, MCPGATE_ADMIN_URL or configuration file: the default address"
    overrides = from_environment(os.environ)  # MCPGATE__ADMIN__PORT moves start's listener: follow it
    trailer = "{count} error(s) in the configuration; pass --url to skip it"
    config = load_or_exit(
        config_path,
        overrides.values,
        code=EXIT_FAILURE,
        trailer=trailer,
        check_support=False,
        origins=overrides.origins,
    )
    if config.admin is None:
        return DEFAULT_ADMIN_URL, f"{config.source} has no admin section, so its gateway serves no admin API"
    if config.admin.port == 0:
        exit_with(EXIT_FAILURE, f"mcpgate admin: {config.source} sets admin.port 0 (any free port): pass --url")
    return f"http://{host_port(reachable_host(config.admin.host), config.admin.port)}", f"from {config.source}"


def normalised_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    """``http://host:port``, with or without a trailing ``/`` or ``/admin/v1``, as a base."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"expected an http:// or https:// URL such as {DEFAULT_ADMIN_URL}")
    if "@" in parts.netloc:
        raise click.BadParameter(f"must not hold a credential: {CREDENTIAL_HINT}")
    path = parts.path.rstrip("/").removesuffix(PREFIX).rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def read_credential(key_file: str | None) -> tuple[str | None, str | None]:
    """(the credential, where it came from); a file wins over the variable."""
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as handle:
                value, origin = handle.read().strip(), f"--key-file {key_file}"
        except (OSError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"--key-file {key_file}: cannot read it ({type(exc).__name__})") from None
    elif os.environ.get(KEY_ENV):
        value, origin = os.environ[KEY_ENV].strip(), KEY_ENV
    else:
        return None, None
    if not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise click.UsageError(f"{origin}: expected one admin key or token, on one line")
    return value, origin


# -- bodies from files -------------------------------------------------------------------------


def read_document(stream: IO[str]) -> Document:
    """The object in a YAML or JSON file; exits 1 (like validate) when it is not one."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    name = str(getattr(stream, "name", "-"))
    source = "<stdin>" if name in ("<stdin>", "-") else name
    text = stream.read()
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        # The parser's own words and position only: its snippet of the file could hold a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "0:0"
        exit_with(EXIT_FAILURE, f"{source}:{where}: YAML syntax error: {exc.problem or exc.context}")
    except YAMLError as exc:
        exit_with(EXIT_FAILURE, f"{source}:0:0: YAML error: {type(exc).__name__}")
    if not isinstance(tree, dict):
        exit_with(EXIT_FAILURE, f"{source}:1:1: expected one object (a mapping), as in the configuration file")
    problems: list[str] = []
    data = plain(tree, "", problems)
    if problems:
        exit_with(EXIT_FAILURE, "\n".join(f"{source}: {problem}" for problem in problems))
    return Document(source, data, tree)


def plain(node: Any, pointer: str, problems: list[str]) -> Any:
    """JSON data from a YAML tree: ruamel's scalar types become plain ones; what JSON cannot say
    (dates, binary) is a problem to quote, as in the configuration file."""
    from ruamel.yaml.scalarbool import ScalarBoolean

    if isinstance(node, dict):
        return {str(k): plain(v, f"{pointer}/{escape(str(k))}", problems) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v, f"{pointer}/{i}", problems) for i, v in enumerate(node)]
    if isinstance(node, bool | ScalarBoolean):
        return bool(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if node is None:
        return None
    problems.append(f"{pointer or '(root)'}: unsupported YAML value ({type(node).__name__}); quote it")
    return None


def escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def position(tree: Any, pointer: str) -> tuple[int, int]:
    """1-based line:col of what ``pointer`` names in the file, or of its deepest ancestor there."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []
    line = col = 0
    node = tree
    for part in parts:
        lc = getattr(node, "lc", None)
        entry: Any = None
        if isinstance(node, dict) and lc is not None:
            key = next((k for k in node if str(k) == part), None)
            if key is not None:
                entry, node = lc.data.get(key), node[key]
        elif isinstance(node, list) and lc is not None and part.isdigit() and int(part) < len(node):
            entry, node = lc.data.get(int(part)), node[int(part)]
        if entry is None:
            break
        line, col = entry[0], entry[1]
    return line + 1, col + 1


# -- printing ----------------------------------------------------------------------------------


def to_yaml(data: Any) -> str:
    """Block YAML in the API's key order, nulls spelled out: what a person reads, and what
    ``put -f`` takes back."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096  # a long URL stays on one line
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue().rstrip("\n")


def comments(*lines: str) -> str:
    return "\n".join(f"# {line}" for line in lines if line)


def announce(answer: Answer, settings: Settings, text: str) -> None:
    """A change's outcome: the answer with --json, else one line; a warning when it is stored but
    not in force yet."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if settings.as_json:
        emit_json(body)
    else:
        click.echo(text)
    if body.get("applied") is False:
        click.echo(f"warning: stored, but not in force yet: {body.get('problem') or 'see the gateway log'}", err=True)


def revision_of(item: Mapping[str, Any]) -> str:
    return str(item["revision"]) if item.get("revision") is not None else "-"


def roles_of(item: Mapping[str, Any]) -> str:
    roles = item.get("roles")
    return ", ".join(map(str, roles)) if isinstance(roles, list) and roles else "-"


def target_of(spec: Mapping[str, Any]) -> str:
    from mcpgate.observability.logging import Redactor

    redactor = Redactor()
    if isinstance(spec.get("url"), str):
        return redactor.url(spec["url"])
    command = spec.get("command")
    if isinstance(command, list):
        return shlex.join(redactor.argv([str(part) for part in command]))
    return "-"


def created_or_replaced(answer: Answer) -> str:
    return "created" if answer.status == 201 else "replaced"


def deleted(settings: Settings, kind: str, name: str, verb: str = "deleted") -> None:
    if settings.as_json:
        emit_json({"kind": kind, "name": name, verb: True})
    else:
        click.echo(f"{kind} {name!r} {verb}")


# -- options -----------------------------------------------------------------------------------


def json_flag(func: F) -> F:
    """``--json`` after the command as well as after ``admin``: where the other verbs take it."""

    def turn_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Settings).as_json = True  # type: ignore[union-attr]

    return click.option(
        "--json", is_flag=True, expose_value=False, callback=turn_on, help="Print the API's JSON answer."
    )(func)


def if_match_option(func: F) -> F:
    return click.option(
        "--if-match",
        metavar="ETAG",
        help="Only if the object is still at this ETag (a revision, as get shows it): a concurrent change "
        "makes this fail with 412 instead of being overwritten.",
    )(func)


def file_option(what: str) -> Callable[[F], F]:
    return click.option(
        "-f",
        "--file",
        "stream",
        type=click.File("r", encoding="utf-8-sig"),
        required=True,
        metavar="FILE",
        help=f"{what}, in YAML or JSON; '-' reads standard input.",
    )


pass_settings = click.make_pass_decorator(Settings)


# -- the group ---------------------------------------------------------------------------------


@click.group(short_help="Drive a running gateway's admin API")
@click.option(
    "--url",
    metavar="URL",
    envvar="MCPGATE_ADMIN_URL",
    callback=normalised_url,
    help="The admin listener, http://host:port. Default: http://<admin.host>:<admin.port> from the "
    f"configuration when one is found (0.0.0.0 and :: mean 127.0.0.1), else {DEFAULT_ADMIN_URL}.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help=f"A file holding the admin key (or an admin's JWT). Default: ${KEY_ENV}. There is no --key "
    "flag: a command line is visible to every user in ps.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Time allowed for the answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answers, for scripts.")
@shared_options
@click.pass_context
def admin(
    ctx: click.Context,
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    timeout: float,
    key_file: str | None,
    url: str | None,
) -> None:
    """Manage the upstreams, API keys, role mappings and rules a running gateway keeps in its store.

    Each command is one request to the admin API (admin: in the configuration). Changes take
    effect at once, on every instance sharing the store within seconds. Names the configuration
    file defines are read-only here. Credentials are never shown: they read <redacted>, and
    sending <redacted> back keeps the stored value, so get, edit, put is safe. Exits 1 when the
    API refuses (every error printed, like validate's), 69 when it cannot be reached.

    \b
    Examples:
      export MCPGATE_ADMIN_KEY="$(cat /run/secrets/mcpgate-admin)"
      mcpgate admin upstreams list
      mcpgate admin upstreams get github > github.yml
      mcpgate admin upstreams put github -f github.yml --if-match 12
      mcpgate admin --url http://10.0.0.5:8081 --key-file admin.key keys create --id ci --role engineer
      mcpgate admin config --json | jq .upstreams
    """
    configure_cli_logging(log_level, log_format)
    ctx.obj = Settings(url, config_path, key_file, timeout, as_json)


# -- upstreams ---------------------------------------------------------------------------------


@admin.group(short_help="List, show, add, replace and remove upstreams")
def upstreams() -> None:
    """The upstreams: the file's (read-only here) and the store's."""


@upstreams.command("list", short_help="List every upstream")
@json_flag
@pass_settings
def upstreams_list(settings: Settings) -> None:
    """A table of every upstream: name, where it is defined, its URL or command, its revision."""
    answer = settings.client().call("GET", "/upstreams")
    items = answer.body.get("upstreams", [])
    if settings.as_json:
        emit_json(answer.body)
        return
    rows = [[i["name"], i.get("source", "-"), target_of(i.get("spec") or {}), revision_of(i)] for i in items]
    click.echo(render_table(("NAME", "SOURCE", "TARGET", "REVISION"), rows))


@upstreams.command("get", short_help="Show one upstream, as YAML that put takes back")
@click.argument("name")
@json_flag
@pass_settings
def upstreams_get(settings: Settings, name: str) -> None:
    """Print one upstream's definition as YAML, its revision in a comment; credentials read
    <redacted>, which put keeps as stored."""
    answer = settings.client().call("GET", f"/upstreams/{quoted(name)}")
    body = answer.body
    if settings.as_json:
        emit_json(body)
        return
    if body.get("source") == "file":
        header = comments(f"upstream {name!r}: from the configuration file (read-only here)")
    else:
        header = comments(
            f"upstream {name!r}: revision {body.get('revision')} (ETag {answer.etag}), "
            f"updated {body.get('updated_at')} by {body.get('updated_by')}",
            "<redacted> keeps the stored value when this is put back",
        )
    click.echo(f"{header}\n{to_yaml(body.get('spec') or {})}")


@upstreams.command("put", short_help="Add or replace an upstream")
@click.argument("name")
@file_option("The upstream's definition, as under upstreams.NAME in the configuration")
@if_match_option
@json_flag
@pass_settings
def upstreams_put(settings: Settings, name: str, stream: IO[str], if_match: str | None) -> None:
    """Add the upstream NAME, or replace it, with the definition in FILE."""
    document = read_document(stream)
    path = f"/upstreams/{quoted(name)}"
    answer = settings.client().call("PUT", path, document.data, if_match=if_match, document=document)
    announce(answer, settings, f"upstream {name!r} {created_or_replaced(answer)} (revision {answer.body['revision']})")


@upstreams.command("delete", short_help="Remove an upstream")
@click.argument("name")
@if_match_option
@json_flag
@pass_settings
def upstreams_delete(settings: Settings, name: str, if_match: str | None) -> None:
    """Remove the upstream NAME from the store; its client sessions end."""
    settings.client().call("DELETE", f"/upstreams/{quoted(name)}", if_match=if_match)
    deleted(settings, "upstream", name)


# -- API keys ----------------------------------------------------------------------------------


@admin.group(short_help="List, create and revoke client API keys")
def keys() -> None:
    """Client API keys (auth.api_keys): the file's (read-only here) and the store's."""


@keys.command("list", short_help="List every API key, never the keys themselves")
@json_flag
@pass_settings
def keys_list(settings: Settings) -> None:
    """A table of every client API key: id, roles, where it is defined, revision and creation."""
    answer = settings.client().call("GET", "/api-keys")
    if settings.as_json:
        emit_json(answer.body)
        return
    rows = [
        [k["id"], roles_of(k), k.get("source", "-"), revision_of(k), k.get("created_at") or "-"]
        for k in answer.body.get("api_keys", [])
    ]
    click.echo(render_table(("ID", "ROLES", "SOURCE", "REVISION", "CREATED"), rows))


@keys.command("create", short_help="Create an API key and show it once")
@click.option(
    "--id", "key_id", metavar="ID", help="The key's id (what logs and policy call the client). Default: generated."
)
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="A role to grant (repeatable).")
@json_flag
@pass_settings
def keys_create(settings: Settings, key_id: str | None, roles: tuple[str, ...]) -> None:
    """Have the gateway generate a client API key; print it once, on standard output.

    Only its hash is kept: it cannot be shown again. A note on standard error says so, so that
    KEY=$(mcpgate admin keys create ...) captures the key alone.
    """
    body: dict[str, Any] = {}
    if key_id is not None:
        body["id"] = key_id
    if roles:
        body["roles"] = list(roles)
    answer = settings.client().call("POST", "/api-keys", body)
    made = answer.body
    if settings.as_json:
        emit_json(made)
    else:
        granted = ", ".join(made.get("roles") or []) or "none"
        click.echo(
            f"# API key {made['id']!r} created (roles: {granted}); it is shown this once: give it to the client",
            err=True,
        )
        click.echo(made["key"])
    if made.get("applied") is False:
        click.echo(f"warning: stored, but not in force yet: {made.get('problem') or 'see the gateway log'}", err=True)


@keys.command("revoke", short_help="Revoke an API key")
@click.argument("key_id", metavar="ID")
@json_flag
@pass_settings
def keys_revoke(settings: Settings, key_id: str) -> None:
    """Delete the API key ID from the store: requests with it are refused (401), at once on the
    instance that answered, within seconds on the others."""
    settings.client().call("DELETE", f"/api-keys/{quoted(key_id)}")
    deleted(settings, "API key", key_id, "revoked")


# -- role mappings -----------------------------------------------------------------------------


@admin.group("role-mappings", short_help="List, add, replace and remove JWT role mappings")
def role_mappings() -> None:
    """JWT role mappings (auth.jwt.role_mappings): the file's, then the store's."""


@role_mappings.command("list", short_help="List every role mapping")
@json_flag
@pass_settings
def mappings_list(settings: Settings) -> None:
    """A table of every role mapping: id (the file's have none), claim, value, roles, revision."""
    answer = settings.client().call("GET", "/role-mappings")
    if settings.as_json:
        emit_json(answer.body)
        return
    rows = []
    for m in answer.body.get("role_mappings", []):
        spec = m.get("spec") or {}
        value = spec.get("value")
        shown = value if isinstance(value, str) else json.dumps(value)
        rows.append(
            [m.get("id", "-"), m.get("source", "-"), str(spec.get("claim", "-")), shown, roles_of(spec), revision_of(m)]
        )
    click.echo(render_table(("ID", "SOURCE", "CLAIM", "VALUE", "ROLES", "REVISION"), rows))


@role_mappings.command("put", short_help="Add or replace a role mapping")
@click.argument("mapping_id", metavar="ID")
@click.option("--claim", required=True, metavar="CLAIM", help="The token claim to look at (groups, roles, scope).")
@click.option("--value", required=True, metavar="VALUE", help="The value the claim must hold (or contain).")
@click.option("--role", "roles", required=True, multiple=True, metavar="ROLE", help="A role it grants (repeatable).")
@if_match_option
@json_flag
@pass_settings
def mappings_put(
    settings: Settings, mapping_id: str, claim: str, value: str, roles: tuple[str, ...], if_match: str | None
) -> None:
    """Grant roles to JWT identities whose CLAIM holds VALUE, as the mapping ID."""
    body = {"claim": claim, "value": value, "roles": list(roles)}
    answer = settings.client().call("PUT", f"/role-mappings/{quoted(mapping_id)}", body, if_match=if_match)
    text = f"role mapping {mapping_id!r} {created_or_replaced(answer)} (revision {answer.body['revision']})"
    announce(answer, settings, text)


@role_mappings.command("delete", short_help="Remove a role mapping")
@click.argument("mapping_id", metavar="ID")
@if_match_option
@json_flag
@pass_settings
def mappings_delete(settings: Settings, mapping_id: str, if_match: str | None) -> None:
    """Remove the role mapping ID from the store."""
    settings.client().call("DELETE", f"/role-mappings/{quoted(mapping_id)}", if_match=if_match)
    deleted(settings, "role mapping", mapping_id)


# -- policy and rate limits: one ordered list each ---------------------------------------------


def ordered_group(name: str, section: str, what: str) -> click.Group:
    """``get``, ``put`` and ``delete`` of the store's rules for one section: one list, replaced whole."""

    @click.group(name, short_help=f"Show, replace or remove the store's {what}")
    def group() -> None:
        pass

    group.help = (
        f"The store's {what}: one ordered list, after the configuration file's {section} rules "
        "(first match wins, so the file keeps the last word)."
    )

    @group.command("get", short_help=f"Show the store's {what}, as YAML that put takes back")
    @json_flag
    @pass_settings
    def get(settings: Settings) -> None:
        answer = settings.client().call("GET", f"/{name}")
        body = answer.body
        if settings.as_json:
            emit_json(body)
            return
        stored = {key: body[key] for key in ("default", "shadow") if key in body}
        stored["rules"] = body.get("rules", [])
        file = body.get("file")
        if isinstance(file, dict):
            default = f" (default: {file['default']})" if "default" in file else ""
            where = f"the configuration file's {len(file.get('rules') or [])} {section} rule(s) come first{default}"
        else:
            where = f"the configuration file has no {section} section: this is the whole of it"
        header = comments(
            f"{what} in the store: revision {body.get('revision', 0)} (ETag {answer.etag})",
            where,
            f"the effective {section}: mcpgate admin config",
        )
        click.echo(f"{header}\n{to_yaml(stored)}")

    get.help = f"Print the store's {what} as YAML, with its revision and the file's share in comments."

    @group.command("put", short_help=f"Replace the store's {what}")
    @file_option(f"The {what}: rules (and, when the file has no {section} section, default)")
    @if_match_option
    @json_flag
    @pass_settings
    def put(settings: Settings, stream: IO[str], if_match: str | None) -> None:
        document = read_document(stream)
        answer = settings.client().call("PUT", f"/{name}", document.data, if_match=if_match, document=document)
        announce(answer, settings, f"{what} {created_or_replaced(answer)} (revision {answer.body['revision']})")

    put.help = f"Replace the store's {what} with FILE's, whole; --if-match guards against a concurrent change."

    @group.command("delete", short_help=f"Remove the store's {what}")
    @if_match_option
    @json_flag
    @pass_settings
    def delete(settings: Settings, if_match: str | None) -> None:
        settings.client().call("DELETE", f"/{name}", if_match=if_match)
        if settings.as_json:
            emit_json({"kind": name, "deleted": True})
        else:
            click.echo(f"{what} removed from the store")

    delete.help = f"Remove the store's {what}: the configuration file's {section} section alone is in force again."
    return group


admin.add_command(ordered_group("policy", "policy", "policy rules"))
admin.add_command(ordered_group("rate-limits", "rate_limit", "rate-limit rules"))


# -- the whole ---------------------------------------------------------------------------------


@admin.command("config", short_help="Show the effective configuration, credentials redacted")
@json_flag
@pass_settings
def effective_config(settings: Settings) -> None:
    """Print the configuration in force: the file's with the store's objects merged in, every
    credential replaced by <redacted>. YAML, or JSON with --json."""
    answer = settings.client().call("GET", "/config")
    if settings.as_json:
        emit_json(answer.body)
    else:
        revision = (answer.etag or "?").strip('"')
        click.echo(
            comments(f"the effective configuration: the file's, with the store's objects at revision {revision}")
        )
        click.echo(to_yaml(answer.body))


@admin.command("audit", short_help="Show the latest changes made through the admin API")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, metavar="N", help="How many entries."
)
@json_flag
@pass_settings
def audit(settings: Settings, limit: int) -> None:
    """A table of the latest admin changes, newest first: when, who, what. --json adds each
    change's before and after, credentials redacted."""
    answer = settings.client().call("GET", f"/audit?limit={limit}")
    if settings.as_json:
        emit_json(answer.body)
        return
    rows = [
        [str(e.get(k, "-")) for k in ("at", "actor", "action", "kind", "name", "revision")]
        for e in answer.body.get("entries", [])
    ]
    click.echo(render_table(("AT", "ACTOR", "ACTION", "KIND", "NAME", "REVISION"), rows))


__all__ = ["admin"]
