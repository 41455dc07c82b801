"""Hostile input: the intake, the alert parsers, `riposte normalize` and the message templates
fed whatever a fuzzer makes. Each must answer as documented (a status, an `AlertParseError`, a
refused template), never crash, hang, or show its insides.

The intake runs on a real loopback port with the response runs recorded instead of created, so
the fuzzing needs no Prefect server; what it checks is that a run is asked for exactly when the
request was authenticated and every alert in it parsed.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import resource
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from riposte.alerts.errors import AlertParseError
from riposte.alerts.messages import MessageRenderer
from riposte.alerts.model import Alert, Status
from riposte.alerts.policy import Templates
from riposte.alerts.response import AlertRef, ref_for
from riposte.alerts.sources import SOURCES, detect_source, iter_alert_payloads, parse_alert
from riposte.alerts.templating import (
    MAX_STEPS,
    TemplateRenderError,
    UnsafeTemplateError,
    check_template,
    render,
)
from riposte.deployments.cli import main as riposte_cli
from riposte.deployments.intake import MAX_BODY_BYTES, create_app, id_problem
from riposte.deployments.journal import Journal
from riposte.deployments.signing import SIGNATURE_HEADER, sign
from riposte.sandbox.samples import sample_alerts_by_source
from riposte.settings import Settings
from tests.alert_factory import entity, make_alert
from tests.servers import free_port, serve_in_thread

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKEN = f"hostile-token-{secrets.token_hex(8)}"
HMAC_KEY = f"hostile-hmac-{secrets.token_hex(8)}"
DOCUMENTED = {202, 400, 401, 404, 413, 415, 422, 503}
# What must never reach a sender: a traceback, a source path, an object's repr.
INSIDES = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+|\bobject at 0x[0-9a-fA-F]+"
    r"|<(class|function|module|bound method) |\b[A-Z]\w*(Error|Exception)\(|\briposte/\w+"
    r"|\.py\b|Internal Server Error"
)
SAMPLES = sample_alerts_by_source(datetime.now(UTC))
SOURCE_NAMES = sorted(SOURCES)

# --- strategies --------------------------------------------------------------------------------

ODD_TEXT = [
    "\ud800",  # lone surrogates: valid as JSON escapes, not encodable as UTF-8
    "\udfff",
    "a\ud83d",
    "\x00",
    "\u202e\u2066evil",  # bidi overrides
    "\ufeff",
    "e\u0301\u0301\u0301",
    "\U0001d518\U0001d52b",
    "\uffff",
    "\U0010ffff",
    "",
    " ",
    "null",
    "NaN",
    "2021-02-30T00:00:00Z",
    "9999-12-31T23:59:59.9999999-14:00",
    "{{ 7 * 7 }}",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%s%s%s%n",
    "A" * 5000,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(ODD_TEXT)), children),
    ),
    max_leaves=25,
)


def nested(depth: int, leaf: Any = "x") -> Any:
    """``leaf`` inside ``depth`` alternating lists and objects."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def deep_json(depth: int) -> str:
    """JSON text of ``nested(depth)``, made without recursion (json.dumps would need it)."""
    opening = "".join('{"a":' if level % 2 else "[" for level in reversed(range(depth)))
    closing = "".join("}" if level % 2 else "]" for level in range(depth))
    return opening + '"x"' + closing


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a decoded JSON document (object keys and list indexes)."""
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        yield (*prefix, key)
        yield from paths(item, (*prefix, key))


def mutated(payload: Any, path: tuple[Any, ...], operation: str, value: Any) -> Any:
    """A deep copy of ``payload`` with the field at ``path`` replaced, deleted or re-cased."""
    copy = json.loads(json.dumps(payload))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "recase" and isinstance(last, str):
        parent[last.swapcase()] = parent.pop(last)
    else:
        parent[last] = value
    return copy


@st.composite
def source_shaped(draw: st.DrawFn) -> tuple[str, Any]:
    """A sample alert of some source with one or two fields mutated, wrapped as the intake takes
    it: alone, in a list, or in the source's envelope."""
    source = draw(st.sampled_from(SOURCE_NAMES))
    payload = draw(st.sampled_from(SAMPLES[source]))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        path = draw(st.sampled_from(list(paths(payload))))
        operation = draw(st.sampled_from(["set", "set", "delete", "recase"]))
        value = draw(st.one_of(json_values, st.builds(nested, st.integers(1, 300))))
        payload = mutated(payload, path, operation, value)
    wrapper = draw(st.sampled_from(["alone", "list", "value", "data"]))
    if wrapper == "list":
        return source, [payload]
    if wrapper in ("value", "data"):
        return source, {wrapper: [payload]}
    return source, payload


# --- the intake --------------------------------------------------------------------------------


@dataclass
class Intake:
    client: httpx.Client = field(repr=False)
    journal: Journal = field(repr=False)

    @property
    def calls(self) -> list[list[AlertRef]]:
        """The entries the intake wrote to its journal (Prefect is never reached: they stay)."""
        return [entry.refs for entry in self.journal.pending(1 << 30)]


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    dead = f"http://127.0.0.1:{free_port()}/api"  # never reached: what is accepted stays queued
    folder = tmp_path_factory.mktemp("journal")
    settings = Settings(intake_tokens=TOKEN, intake_hmac_keys=HMAC_KEY, intake_journal=folder)
    app = create_app(settings, dead)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield Intake(client, app.state.journal)


def signed(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return {"Content-Type": content_type, SIGNATURE_HEADER: sign(body, [HMAC_KEY.encode()])}


def bearer(content_type: str = "application/json") -> dict[str, str]:
    return {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}


def expected_refs(source: str, body: bytes) -> list[AlertRef] | None:
    """The runs the intake should ask for, or None when it should refuse the body."""
    try:
        document = json.loads(body)
        alerts = [SOURCES[source][0](p) for p in iter_alert_payloads(document)]
        for alert in alerts:  # a run's parameters must be UTF-8 JSON for Prefect to take them
            json.dumps(ref_for(alert).model_dump(), ensure_ascii=False).encode()
            if id_problem(alert.id):  # an id that is a path, or holds a control character
                return None
    except (ValueError, RecursionError, AlertParseError):
        return None
    if not alerts:
        return None
    return [ref_for(a) for a in alerts if a.status != Status.RESOLVED]


def sent_text(body: bytes) -> str:
    """The body as text, and its decoded values, as an error message may quote them."""
    text = body.decode("utf-8", "replace")
    try:
        return text + repr(json.loads(body))
    except (ValueError, RecursionError):
        return text


def post(
    intake: Intake, source: str, body: bytes, headers: Mapping[str, str | bytes]
) -> httpx.Response:
    """Post and check what every answer must be; return the response."""
    before = len(intake.calls)
    raw_headers = {
        name.encode(): value if isinstance(value, bytes) else value.encode("latin-1")
        for name, value in headers.items()
    }
    response = intake.client.post(f"/alerts/{source}", content=body, headers=raw_headers)
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:300])
    for inside in INSIDES.finditer(response.text):  # unless the sender wrote it (a field echoed)
        assert inside.group(0) in sent_text(body), response.text[:500]
    answer = response.json()  # always JSON, even when refused
    assert isinstance(answer, dict)
    new_calls = intake.calls[before:]
    if response.status_code == 202:
        accepted = answer["accepted"]
        assert accepted and all(isinstance(a["id"], str) for a in accepted)
        started = [ref for call in new_calls for ref in call]
        assert all(a["flow_run_id"] for a in accepted if a["status"] == "started")
        assert {ref.key for ref in started} <= {
            f"{a['source']}:{a['id']}:{a['revision']}" for a in accepted
        }
    else:
        assert new_calls == [], f"runs asked for on a {response.status_code}"
        assert isinstance(answer.get("detail"), str)
    return response


def check_authenticated(intake: Intake, source: str, body: bytes, response: httpx.Response) -> None:
    """A signed or bearer request: 202 exactly when every alert of the body parses."""
    expected = expected_refs(source, body)
    if expected is None:
        assert response.status_code in (400, 422), (response.status_code, response.text[:300])
        return
    assert response.status_code == 202, response.text[:300]
    if expected:
        assert [r.key for r in intake.calls[-1]] == [r.key for r in expected]


@FUZZ
@given(body=st.binary(max_size=2000), source=st.sampled_from([*SOURCE_NAMES, "nope", "Graph"]))
def test_arbitrary_bytes_get_a_documented_answer(intake: Intake, body: bytes, source: str) -> None:
    unsigned = post(intake, source, body, {"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    response = post(intake, source, body, signed(body))
    if source in SOURCES:
        check_authenticated(intake, source, body, response)
    else:
        assert response.status_code == 404


@FUZZ
@given(document=json_values, source=st.sampled_from(SOURCE_NAMES))
def test_arbitrary_json_gets_a_documented_answer(
    intake: Intake, document: Any, source: str
) -> None:
    body = json.dumps(document).encode()
    check_authenticated(intake, source, body, post(intake, source, body, signed(body)))


@settings(FUZZ, max_examples=150)
@given(shaped=source_shaped(), wrong_source=st.booleans())
def test_source_shaped_alerts_with_mutated_fields(
    intake: Intake, shaped: tuple[str, Any], wrong_source: bool
) -> None:
    source, document = shaped
    if wrong_source:
        source = SOURCE_NAMES[(SOURCE_NAMES.index(source) + 1) % len(SOURCE_NAMES)]
    body = json.dumps(document).encode()
    headers = signed(body) if len(body) % 2 else bearer()
    check_authenticated(intake, source, body, post(intake, source, body, headers))


CONTENT_TYPES = [
    "",
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json-patch+json",
    "application/jsonx",
    "application/xml",
    "*/*",
    "application/json; charset=utf-16",
    "APPLICATION/JSON",
    " application/json ;",
]


@FUZZ
@given(
    content_type=st.one_of(
        st.sampled_from(CONTENT_TYPES),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    )
)
def test_any_content_type_is_accepted_only_as_json(intake: Intake, content_type: str) -> None:
    content_type = content_type.strip(" ")  # HTTP drops the spaces around a header value
    payload = SAMPLES["graph"][0]
    body = json.dumps(payload).encode()
    response = post(intake, "graph", body, signed(body, content_type))
    if content_type.split(";")[0].strip().lower() == "application/json":
        assert response.status_code == 202
    else:
        assert response.status_code == 415


# What an HTTP header value may hold: visible ASCII, spaces, and bytes 0x80-0xFF (as latin-1).
LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")


@FUZZ
@given(
    header=st.one_of(
        st.text(LATIN1, max_size=80),
        st.builds(
            lambda t, v: f"t={t},v1={v}",
            st.one_of(st.text(LATIN1, max_size=14), st.integers().map(str)),
            st.text(LATIN1, max_size=70),
        ),
        st.builds(
            lambda t, v: f"t={t},v1={v}",
            st.sampled_from(["\u00b2", "\u00b9\u00b3", "1\u00bd", "0" * 13, "-1", "1e3"]),
            st.sampled_from(["", "0" * 64, "zz", "\u00ff" * 64]),
        ),
    ),
    token=st.one_of(st.none(), st.text(LATIN1, max_size=40)),
)
@example(header="t=\u00b2,v1=00", token=None)  # "²".isdigit() but int("²") fails
def test_bad_or_absent_signatures_and_tokens_get_401(
    intake: Intake, header: str, token: str | None
) -> None:
    body = json.dumps(SAMPLES["graph"][0]).encode()
    headers: dict[str, str | bytes] = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: header.strip(" ").encode("latin-1"),
    }
    assert post(intake, "graph", body, headers).status_code == 401
    if token is not None:
        headers = {
            "Content-Type": "application/json",
            "Authorization": (b"Bearer " + token.encode("latin-1")).strip(b" "),
        }
        assert post(intake, "graph", body, headers).status_code == 401


def test_huge_bodies_are_413_declared_or_streamed(intake: Intake) -> None:
    big = b'{"id": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert post(intake, "graph", big, signed(big)).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the intake must count for itself
        for _ in range(40):
            yield b" " * 65536

    # Without credentials, refused before a byte of the body is read.
    response = intake.client.post(
        "/alerts/graph", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    response = intake.client.post("/alerts/graph", content=chunks(), headers=bearer())
    assert response.status_code == 413
    assert response.json() == {"detail": f"body larger than {MAX_BODY_BYTES} bytes"}


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_json_nested_ten_thousand_levels_deep_is_400(intake: Intake, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    response = post(intake, "graph", body, signed(body))
    assert response.status_code == 400
    assert response.json() == {"detail": "body is JSON nested too deeply"}
    body = b'{"a":' * depth + b"1" + b"}" * depth
    response = post(intake, "defender_cloud", body, bearer())
    assert response.status_code == 400
    assert response.json() == {"detail": "body is JSON nested too deeply"}


@pytest.mark.parametrize("source", SOURCE_NAMES)
@pytest.mark.parametrize("depth", [100, 450, 600, 900, 990])
def test_deep_values_inside_an_alert_never_give_a_500(
    intake: Intake, source: str, depth: int
) -> None:
    """Regression: a Graph alert with an unknown field nested 500 deep made the parser raise
    RecursionError, which the intake answered with a 500."""
    for key in ("zzUnknownField", "@odata.type", "evidence", "properties", "entities"):
        text = json.dumps({**SAMPLES[source][0], key: "DEEP"}).replace('"DEEP"', deep_json(depth))
        body = text.encode()
        response = post(intake, source, body, signed(body))
        # Whether json.loads itself gives up depends on the stack depth it starts at.
        assert response.status_code in (202, 400, 422), response.text[:300]
        if response.status_code == 202:
            assert expected_refs(source, body) is not None


@pytest.mark.parametrize(
    ("field_name", "odd"),
    list(
        itertools.product(
            ["id", "title", "description", "severity", "createdDateTime"], ODD_TEXT[:10]
        )
    ),
)
def test_unicode_oddities_in_alert_fields(intake: Intake, field_name: str, odd: str) -> None:
    payload = {**SAMPLES["graph"][0], field_name: odd}
    body = json.dumps(payload).encode()
    check_authenticated(intake, "graph", body, post(intake, "graph", body, signed(body)))


@pytest.mark.parametrize(
    "body",
    [
        "\ufeff" + json.dumps(SAMPLES["graph"][0]),  # a byte order mark
        json.dumps(SAMPLES["graph"][0]).encode("utf-16").decode("latin-1"),
        '{"id": "\xc0\xaf"}',  # an overlong UTF-8 sequence, as latin-1 bytes
        '{"id": 1' + "0" * 5000 + "}",  # more digits than Python converts
        '{"id": 1e999999}',
        "NaN",
        '{"value": [' + ",".join(["{}"] * 20_000) + "]}",
    ],
    ids=["bom", "utf16", "overlong", "long-int", "huge-float", "nan", "many-empty"],
)
def test_encodings_and_number_oddities(intake: Intake, body: str) -> None:
    raw = body.encode("latin-1", "surrogatepass") if "\ufeff" not in body else body.encode()
    check_authenticated(intake, "graph", raw, post(intake, "graph", raw, signed(raw)))


# --- the parsers and `riposte normalize` --------------------------------------------------------


def only_alerts_or_parse_errors(document: Any) -> None:
    try:
        payloads = list(iter_alert_payloads(document))
    except AlertParseError:
        return
    for payload in payloads:
        for source in (None, *SOURCE_NAMES):
            try:
                assert isinstance(parse_alert(payload, source), Alert)
            except AlertParseError as exc:
                assert str(exc)
        with contextlib.suppress(AlertParseError):
            assert detect_source(payload) in SOURCES


@settings(FUZZ, max_examples=150)
@given(document=st.one_of(json_values, source_shaped().map(lambda shaped: shaped[1])))
def test_parsers_give_an_alert_or_a_parse_error_for_any_json(document: Any) -> None:
    only_alerts_or_parse_errors(document)


@pytest.mark.parametrize("depth", [100, 500, 990, 5_000])
def test_deeply_nested_values_are_refused_cleanly_by_every_parser(depth: int) -> None:
    for samples in SAMPLES.values():
        for key in [*samples[0], "zzUnknownField"]:
            only_alerts_or_parse_errors({**samples[0], key: nested(depth)})
            only_alerts_or_parse_errors([{**samples[0], key: nested(depth)}])
        only_alerts_or_parse_errors(nested(depth, samples[0]))


def test_oversized_alerts_parse_in_bounded_time() -> None:
    started = time.monotonic()
    for samples in SAMPLES.values():
        payload = dict(samples[0])
        payload["evidence"] = [{"@odata.type": "#x", "ipAddress": "192.0.2.1"}] * 20_000
        payload["entities"] = [{"Type": "ip", "Address": "192.0.2.1"}] * 20_000
        payload["description"] = "d" * MAX_BODY_BYTES
        only_alerts_or_parse_errors(payload)
    assert time.monotonic() - started < 30


def normalize(text: str) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alerts.json"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = riposte_cli(["normalize", str(path)])
    return code, out.getvalue(), err.getvalue()


def check_normalize(text: str) -> None:
    code, out, err = normalize(text)
    assert code in (0, 2), (code, err)
    if code == 2:
        assert out == "" and err.count("\n") == 1 and err.startswith("riposte normalize: ")
        assert not INSIDES.search(err), err
    else:
        for line in out.splitlines():
            assert {"source", "id", "title", "severity"} <= set(json.loads(line))


@settings(FUZZ, max_examples=60)
@given(
    text=st.one_of(
        json_values.map(json.dumps),
        source_shaped().map(lambda shaped: json.dumps(shaped[1])),
        st.lists(json_values.map(json.dumps), min_size=2, max_size=4).map("\n".join),
        st.text(max_size=200),
    )
)
@example(text="1" * 5000)  # regression: Python's int digit limit raised ValueError
@example(text=json.dumps(SAMPLES["graph"][0]) + "\n" + "1" * 5000)
@example(text=json.dumps(SAMPLES["graph"][0]) + "\n" + "[" * 50_000)
def test_riposte_normalize_exits_0_or_2_on_any_file(text: str) -> None:
    check_normalize(text)


@pytest.mark.parametrize("depth", [500, 990, 10_000])
def test_riposte_normalize_refuses_deep_json_cleanly(depth: int) -> None:
    check_normalize(json.dumps({**SAMPLES["graph"][0], "zz": nested(min(depth, 900))}))
    check_normalize("[" * depth + "]" * depth)


# --- templates ---------------------------------------------------------------------------------

# What a hostile (or careless) policy template may try. The Python-internals ones are refused by
# the checks covered in test_templates.py; here they are mixed with each other, with attribute
# access on the alert's own fields, and with loops and recursion meant to run for hours.
# Each would build hundreds of megabytes to gigabytes in one expression, or print that much.
MEMORY_BOMBS = [
    '{{ "x"|center(400000000) }}',
    '{{ "x".ljust(400000000) }}',
    '{{ "%400000000s"|format("x") }}',
    '{{ "%400000000s" % "x" }}',
    '{{ "{:>400000000}".format("x") }}',
    '{{ "{:>{}}".format("x", 400000000) }}',
    '{{ "a\nb"|indent(400000000) }}',
    '{{ ("x" * 100000)|replace("x", "y" * 10000) }}',
    '{{ "\t".expandtabs(400000000) }}',
    '{{ ("\t" * 100000).expandtabs(100000) }}',
    '{% set s = "x" * 100000 %}{% set t = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}{{ t }}',
    '{% set s = "x" * 100000 %}{% set t = s + s + s + s + s + s + s + s + s + s + s %}{{ t }}',
    '{% set s = ["x" * 100000] * 10 %}{{ (s * 10)|join("-" * 100) }}',
    '{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}',
    '{% for i in range(100000) %}{% set t = "x" * 999999 %}{% endfor %}',
]

HOSTILE_FRAGMENTS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ alert.__class__.__init__.__globals__ }}",
    "{{ alert.raw.__class__.__base__.__subclasses__() }}",
    "{{ alert.model_fields['id'].annotation.mro() }}",
    "{{ alert.model_dump() }}",
    "{{ alert.model_copy(update={'id': 'pwned'}).id }}",
    "{{ alert.raw.update({'id': 'pwned'}) }}",
    "{{ alert.raw.pop('id') }}",
    "{{ alert.raw.setdefault('pwned', 1) }}",
    "{{ alert.raw.clear() }}",
    "{{ alert.entities|list|attr('append') }}",
    "{{ alert.title.format(alert) }}",
    "{{ '{0.raw}'.format(alert) }}",
    "{{ alert.model_config }}",
    "{{ alert['raw']['id'] }}",
    "{{ alert.created_at.replace(year=1) }}",
    "{{ self }}{{ config }}{{ request }}{{ joiner }}{{ lipsum }}",
    "{{ range(10 ** 9)|list }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) if j < 0 %}{% endfor %}{% endfor %}",
    "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(60) }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "{% set ns = namespace(n=0) %}{% for i in range(1000) %}{% set ns.n = ns.n + 1 %}"
    "{% endfor %}{{ ns.n }}",
    "{% include 'self.j2' %}",
    "{{ alert.id }}",
    "plain text",
    *MEMORY_BOMBS,
]
_template_names = itertools.count()


def hostile_alert() -> Alert:
    return make_alert(
        "a-1",
        title="{{ 7 * 7 }} <script>",
        entities=(entity("ip", "203.0.113.45"),),
        raw={"id": "a-1", "nested": {"list": [1, 2]}},
    )


def rendered_or_refused(source: str, folder: Path) -> str | None:
    """Render ``source`` as a custom template: a bounded string, or TemplateRenderError."""
    name = f"t{next(_template_names)}.j2"
    (folder / name).write_text(source)
    (folder / "self.j2").write_text("{% include 'self.j2' %}")
    alert = hostile_alert()
    before = alert.model_dump()
    started = time.monotonic()
    try:
        text: str | None = render(name, folder, alert=alert)
    except TemplateRenderError as exc:
        assert str(exc).startswith(f"template {name}")
        text = None
    assert time.monotonic() - started < 20, "a template ran for too long"
    assert alert.model_dump() == before, "the template changed the alert"
    if text is not None:
        assert len(text) < 10 * MAX_STEPS
        assert "pwned" not in text or "'pwned'" in source
        for inside in ("<module ", "__builtins__", "<function ", "os.popen"):
            assert inside not in text
    return text


@settings(FUZZ, max_examples=40)
@given(
    parts=st.lists(st.one_of(st.sampled_from(HOSTILE_FRAGMENTS), st.text(max_size=10)), max_size=4)
)
def test_hostile_templates_are_refused_or_inert(parts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        rendered_or_refused("".join(parts), Path(folder))


def test_a_policy_template_that_loops_for_hours_is_refused(tmp_path: Path) -> None:
    """Regression: ``range(100000)`` nested in itself ran 10^10 iterations (hours of a worker)
    in the sandbox; now every render has a budget of loop iterations and calls."""
    (tmp_path / "slow.json.j2").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        '{"text": "x"}'
    )
    renderer = MessageRenderer(Templates(slack="slow.json.j2"), tmp_path)
    assert renderer.problems() == []  # it compiles: only running it shows the problem
    started = time.monotonic()
    with pytest.raises(UnsafeTemplateError, match=f"more than {MAX_STEPS} loop iterations"):
        renderer.slack(hostile_alert(), None)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "source",
    [
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(50) }}",
        "{% for i in range(100000) %}{% for j in range(100000) if j < 0 %}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 99999 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    ],
    ids=["doubling-macro", "filtered-loops", "loops-over-strings"],
)
def test_exponential_or_quadratic_work_is_cut_off(tmp_path: Path, source: str) -> None:
    (tmp_path / "work.j2").write_text(source)
    started = time.monotonic()
    with pytest.raises(UnsafeTemplateError, match="loop iterations and calls"):
        render("work.j2", tmp_path, alert=hostile_alert())
    assert time.monotonic() - started < 10


def test_a_template_recursing_forever_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    """Regression: RecursionError escaped `render` (and `check_template`) as itself."""
    (tmp_path / "deep.j2").write_text("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}")
    (tmp_path / "parens.j2").write_text("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    with pytest.raises(UnsafeTemplateError, match="nested too deeply"):
        render("deep.j2", tmp_path, alert=hostile_alert())
    with pytest.raises(UnsafeTemplateError, match="nested too deeply"):
        render("parens.j2", tmp_path, alert=hostile_alert())
    assert check_template("parens.j2", tmp_path) == "nested too deeply"


@pytest.mark.parametrize("source", MEMORY_BOMBS)
def test_a_template_building_a_huge_string_is_refused_before_it_is_built(
    tmp_path: Path, source: str
) -> None:
    """Regression: ``center(400000000)``, a format width, ``replace`` or ``~`` built strings of
    hundreds of megabytes (a gigabyte for ``replace``) in one expression."""
    (tmp_path / "big.j2").write_text(source)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(UnsafeTemplateError, match="refused by the sandbox"):
        render("big.j2", tmp_path, alert=hostile_alert())
    assert time.monotonic() - started < 10
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 50 * 1024, f"the peak memory grew by {grown_kib // 1024} MiB"


def test_ordinary_text_work_is_within_the_bounds(tmp_path: Path) -> None:
    (tmp_path / "ok.j2").write_text(
        '{{ "x"|center(40) }}|{{ "%-12s"|format(alert.id) }}|{{ "{:>8}".format(1) }}|'
        '{{ ("a" * 1000)|replace("a", "bc")|length }}|{{ ["a", "b"]|join(", ") }}|'
        '{{ alert.title ~ " " ~ alert.id }}|{{ (["x"] * 3 + ["y"])|join }}|'
        '{{ "%5.1f" % 2.25 }}|{{ "line\nnext"|indent(4) }}'
    )
    alert = hostile_alert()
    expected = "|".join(
        [
            "x".center(40),
            f"{alert.id:<12}",
            f"{1:>8}",
            "2000",
            "a, b",
            f"{alert.title} {alert.id}",
            "xxxy",
            f"{2.25:5.1f}",
            "line\n    next",
        ]
    )
    assert render("ok.j2", tmp_path, alert=alert) == expected.strip()


def test_ordinary_loops_still_work_within_the_budget(tmp_path: Path) -> None:
    (tmp_path / "ok.j2").write_text(
        "{% for e in alert.entities %}{{ e.value }}{% if loop.last %}.{% endif %}{% endfor %}"
        "{% for i in range(50000) %}{% endfor %}"
        "{% for k, v in alert.raw|dictsort %}{{ k }}{% else %}none{% endfor %}"
    )
    assert render("ok.j2", tmp_path, alert=hostile_alert()) == "203.0.113.45.idnested"
