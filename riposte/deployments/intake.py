"""The intake: the door Defender (or any HTTP sender) pushes alerts through.

It authenticates the sender, validates the body, and writes the alerts to its journal
(`riposte.deployments.journal`, fsynced) before it answers 202; the forwarder then creates their
response runs through Prefect's API, with idempotency keys. A sender is never held by Prefect's
pace: a storm, or Prefect down for minutes, is answered at the speed of the local disk. When the
journal cannot take the alerts (disk full, or more waiting than its bound), the answer is 503
with Retry-After, so that the sender retries; never a 202 for alerts that were not written.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prefect.blocks.system import Secret
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from starlette.requests import ClientDisconnect

from riposte.alerts.errors import AlertParseError
from riposte.alerts.model import Alert, Status
from riposte.alerts.response import AlertRef, ref_for
from riposte.alerts.run_plan import RunRequest, plan_runs
from riposte.alerts.sources import SOURCES, iter_alert_payloads, parser_for
from riposte.deployments.approval_pages import approval_router
from riposte.deployments.journal import Journal, JournalUnavailable
from riposte.deployments.signing import SIGNATURE_HEADER, plausible, verify
from riposte.settings import Settings, get_settings

logger = logging.getLogger("riposte.intake")

MAX_BODY_BYTES = 1024 * 1024
# A sender has this long to deliver its body once its credentials passed (a 1 MiB body needs
# well under a second on any link a Defender automation uses).
BODY_SECONDS = 10.0
# Connections the intake serves at once; more are answered 503 by uvicorn at once, so a crowd
# of slow clients cannot hold every socket. Keep-alive connections close after 5 s idle.
MAX_CONNECTIONS = 200
RETRY_AFTER_SECONDS = "5"


class PrefectUnavailable(Exception):
    """Prefect did not accept the work; the sender should retry."""


def _split(value: str) -> list[bytes]:
    return [v.strip().encode() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class SenderKeys:
    """What the intake accepts: bearer tokens and HMAC keys, several of each for rotation."""

    tokens: list[bytes]
    hmac_keys: list[bytes]

    def __bool__(self) -> bool:
        return bool(self.tokens or self.hmac_keys)

    def may_send(self, request: Request) -> bool:
        """Checked before the body is read: a bearer token that matches, or a signature header
        that is well formed and fresh (verified against the body once it is read). Anyone else
        is refused without holding memory or a socket for their body."""
        signed = request.headers.get(SIGNATURE_HEADER)
        if signed is not None:
            return bool(self.hmac_keys) and plausible(signed)
        return self.authenticates(request, b"")

    def authenticates(self, request: Request, body: bytes) -> bool:
        signed = request.headers.get(SIGNATURE_HEADER)
        if signed is not None:
            return verify(signed, body, self.hmac_keys)
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        candidate = presented.strip().encode()
        # Compare against every token, without stopping early, so timing tells nothing.
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched


_WARNED_OBJECT_BLOCKS: set[str] = set()


async def _keys_from_block(name: str) -> SenderKeys:
    secret = cast(Secret[Any], await Secret.aload(name))
    value = secret.get()
    if isinstance(value, str):
        value = json.loads(value)
    elif isinstance(value, dict) and name not in _WARNED_OBJECT_BLOCKS:
        # Prefect hides a Secret's value from its API and UI only when it is one string: the
        # keys of an object are shown in clear to anyone who can read blocks.
        _WARNED_OBJECT_BLOCKS.add(name)
        logger.warning(
            "Secret block %r holds an object, which Prefect shows in clear in its API and UI: "
            "save the keys as one JSON string instead",
            name,
        )
    return _sender_keys(value, f"Secret block {name!r}")


# A sender key shorter than this is refused: a typo (a string where a list belongs, split
# into characters) must never become a one-letter key.
MIN_SENDER_KEY = 16


def _key_list(value: Any, name: str, origin: str) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{origin}: {name} must be a list of strings")
    short = [k for k in value if len(k.strip()) < MIN_SENDER_KEY]
    if short:
        raise ValueError(f"{origin}: {name} holds a key shorter than {MIN_SENDER_KEY} characters")
    return [k.strip().encode() for k in value]


def _sender_keys(value: Any, origin: str) -> SenderKeys:
    if not isinstance(value, dict):
        raise ValueError(f"{origin} must hold an object with tokens and hmac_keys")
    return SenderKeys(
        tokens=_key_list(value.get("tokens"), "tokens", origin),
        hmac_keys=_key_list(value.get("hmac_keys"), "hmac_keys", origin),
    )


class KeyFile:
    """Sender keys in a local JSON file, read again whenever it changes (a rotation is a write
    of the file, no restart). A file that cannot be parsed, or whose keys are not lists of
    strings of 16+ characters, keeps the last good keys and says so once per change; a file
    that is gone revokes every key it held (deleting it is how to revoke in a hurry)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys = SenderKeys([], [])
        self.load()

    def load(self) -> SenderKeys:
        try:
            stat = self.path.stat()
        except OSError as exc:
            if self._stamp != (0, 0, -1):
                self._stamp = (0, 0, -1)
                logger.error(
                    "Intake key file %s cannot be read (%s): its keys are revoked",
                    self.path,
                    exc.strerror or type(exc).__name__,
                )
            self._keys = SenderKeys([], [])
            return self._keys
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._keys
        self._stamp = stamp
        if stat.st_mode & 0o077:
            logger.warning(
                "Intake key file %s is readable by others than its owner: chmod 600 it", self.path
            )
        try:
            self._keys = _sender_keys(
                json.loads(self.path.read_text(encoding="utf-8")), f"intake key file {self.path}"
            )
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            reason = str(exc) if not isinstance(exc, json.JSONDecodeError) else "not JSON"
            logger.warning("%s; keeping the last good keys", reason.split("\n")[0][:200])
        return self._keys


class KeyRing:
    """The sender keys from settings, a key file read again when it changes, and a Secret block
    re-read every minute."""

    REFRESH_SECONDS = 60.0

    def __init__(self, settings: Settings) -> None:
        self.static = SenderKeys(_split(settings.intake_tokens), _split(settings.intake_hmac_keys))
        self.file = KeyFile(settings.intake_key_file) if settings.intake_key_file else None
        self.block = settings.intake_secret_block
        self._from_block = SenderKeys([], [])
        self._loaded_at = -self.REFRESH_SECONDS

    @property
    def configured(self) -> bool:
        return bool(self.static) or self.file is not None or bool(self.block)

    async def current(self) -> SenderKeys:
        from_file = self.file.load() if self.file else SenderKeys([], [])
        if self.block and time.monotonic() - self._loaded_at >= self.REFRESH_SECONDS:
            try:
                self._from_block = await _keys_from_block(self.block)
                self._loaded_at = time.monotonic()
            except Exception as exc:  # keep the last keys: a Prefect blip must not lock senders out
                logger.warning(
                    "Cannot read sender keys from block %r: %s", self.block, type(exc).__name__
                )
        return SenderKeys(
            self.static.tokens + from_file.tokens + self._from_block.tokens,
            self.static.hmac_keys + from_file.hmac_keys + self._from_block.hmac_keys,
        )


def _error(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _refusal(status: int, detail: str, **headers: str) -> JSONResponse:
    """An answer given before the body was read: the connection closes with it, so that a
    client cannot hold it open by never sending the rest."""
    return _error(status, detail, **headers, Connection="close")


class QuickRetries(httpx.AsyncBaseTransport):
    """Asks again soon, 5 times within about 2 seconds (the wait of the client's first retry),
    when Prefect answers a run creation with its database's "not now".

    Prefect's server answers 503 `{"exception_message": "Service Unavailable"}` when its
    database refuses a write for now (SQLite's "database is locked" when two writes meet, a
    PostgreSQL serialization failure), and Prefect's client then waits 2 seconds before it asks
    again: two seconds added to an alert's response for a conflict that is over in
    milliseconds. Only a creation that carries an idempotency key is asked again (asking again
    then never makes a second run), and only for that answer: a 503 with `Retry-After`, from
    Prefect's maintenance mode or from a load balancer, and every other request, go straight
    to the client's own retries. After a round of quick tries that all failed, the next 10
    seconds' creations are left to the client's retries alone: a server that stays refused
    is not asked several times as often."""

    DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
    JITTER = 0.5  # each delay is stretched by up to this share, so that replicas spread out
    REST_SECONDS = 10.0
    _REFUSED_FOR_NOW = b"Service Unavailable"

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self._rest_until = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        quick = (
            request.method == "POST"
            and request.url.path.endswith("/create_flow_run")
            and time.monotonic() >= self._rest_until
            and b'"idempotency_key"' in _body_of(request)
        )
        for delay in self.DELAYS if quick else ():
            response = await self.inner.handle_async_request(request)
            if not await self._refused_for_now(response):
                return response
            await response.aclose()
            await asyncio.sleep(delay * (1 + random.random() * self.JITTER))
        response = await self.inner.handle_async_request(request)
        if quick and response.status_code == 503:
            self._rest_until = time.monotonic() + self.REST_SECONDS
            logger.warning(
                "Prefect refused a run creation %d times in a row (503): the next %.0f s of "
                "creations wait for its client's own retries",
                len(self.DELAYS) + 1,
                self.REST_SECONDS,
            )
        return response

    async def _refused_for_now(self, response: httpx.Response) -> bool:
        if (
            response.status_code != 503
            or "retry-after" in response.headers
            or response.headers.get("prefect-maintenance") == "true"
        ):
            return False
        body = await response.aread()
        return self._REFUSED_FOR_NOW in body[:200]

    async def aclose(self) -> None:
        await self.inner.aclose()


def _body_of(request: httpx.Request) -> bytes:
    try:
        return request.content
    except httpx.RequestNotRead:  # a streamed body: not one we send twice
        return b""


def with_quick_retries(client: PrefectClient) -> bool:
    """Put `QuickRetries` under ``client``'s HTTP client; False (and nothing changed) when this
    Prefect's client is not built as expected, or when its requests to the API go through a
    transport of their own (a proxy)."""
    http = getattr(client, "_client", None)
    inner = getattr(http, "_transport", None)
    pick = getattr(http, "_transport_for_url", None)
    if (
        not isinstance(http, httpx.AsyncClient)
        or not isinstance(inner, httpx.AsyncBaseTransport)
        or not callable(pick)
        or pick(http.base_url) is not inner
    ):
        return False
    http._transport = QuickRetries(inner)
    return True


class RunStarter:
    """Creates response runs through the Prefect API, looking each deployment up once."""

    def __init__(self, client: PrefectClient) -> None:
        self.client = client
        self._deployment_ids: dict[str, UUID] = {}

    async def _deployment_id(self, name: str) -> UUID:
        if name not in self._deployment_ids:
            deployment = await self.client.read_deployment_by_name(name)
            self._deployment_ids[name] = deployment.id
        return self._deployment_ids[name]

    async def create(self, request: RunRequest) -> str:
        try:
            run = await self.client.create_flow_run_from_deployment(
                await self._deployment_id(request.deployment),
                parameters=request.parameters,
                name=request.name,
                tags=request.tags,
                idempotency_key=request.idempotency_key,
            )
        except ObjectNotFound:
            # Not registered yet, or deleted and registered again: look it up next time.
            self._deployment_ids.pop(request.deployment, None)
            raise PrefectUnavailable(f"deployment {request.deployment} is not registered") from None
        except (httpx.HTTPError, PrefectHTTPStatusError, OSError) as exc:
            raise PrefectUnavailable(f"Prefect API unavailable ({type(exc).__name__})") from None
        return str(run.id)


class Forwarder:
    """Turns the journal's entries into Prefect runs, in the background, at Prefect's pace.

    Calm traffic (a few alerts at a time) waits 50 ms and gets a `respond_to_alert` run per
    alert. While alerts arrive faster than runs are created, each pass waits up to a second and
    takes everything written meanwhile (up to `PASS_ALERTS`) into `respond_batch` runs of up to
    100 alerts, because a flow run costs the Prefect server far more than an alert's share of a
    batch. The runs of a pass are written to the journal before they are created, and asked for
    again identically after a crash or a refusal (idempotency keys), until Prefect has them all.
    While Prefect cannot be reached, it tries again after 1, 2, 4... up to 30 seconds.
    """

    CALM_WINDOW = 0.05
    BUSY_WINDOW = 1.0
    # More alerts than this in one pass make a batch.
    CALM_SINGLE_LIMIT = 4
    PASS_ALERTS = 1000
    # A request waits for its runs only while no more alerts than this wait beside its own.
    WAIT_BACKLOG = CALM_SINGLE_LIMIT
    RETRY_FIRST = 1.0
    RETRY_MOST = 30.0
    # Alert keys remembered with their runs, so that a duplicate delivery gets the run that
    # answers it instead of a second response. Per replica, lost at restart (then the
    # idempotency keys and the steps' find-or-create are what keep it to one response).
    REMEMBERED = 100_000

    def __init__(self, journal: Journal, starter: RunStarter) -> None:
        self.journal = journal
        self.starter = starter
        self.failing: str | None = None
        self._busy = False
        self._waiters: dict[int, list[asyncio.Future[bool]]] = {}
        self._runs_of: OrderedDict[str, str] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def run_id(self, key: str) -> str | None:
        return self._runs_of.get(key)

    def behind(self, own: int) -> bool:
        """Prefect is failing, or other alerts than the request's ``own`` wait to be forwarded
        (written just before, in a storm): a sender is not held."""
        return self.failing is not None or self.journal.backlog - own > self.WAIT_BACKLOG

    async def wait(self, number: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the runs of entry ``number``; whether they exist.
        A failed attempt to create them ends the wait at once (the sender is not held while
        the forwarder waits to try again)."""
        if number <= self.journal.forwarded:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(number, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(number, [])
            if future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[number]

    async def _loop(self) -> None:
        journal = self.journal
        delay = self.RETRY_FIRST
        while True:
            if not journal.planned and not journal.backlog:
                journal.new_entries.clear()
                await journal.new_entries.wait()
            try:
                await self._forward_once()
            except PrefectUnavailable as exc:
                if self.failing is None:
                    logger.warning(
                        "Cannot start responses now (%s): %d alert(s) wait in the journal",
                        exc,
                        journal.backlog,
                    )
                self.failing = str(exc)
                self._end_waits(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MOST)
                continue
            except Exception as exc:  # the journal's state unwritable, or a bug: never stop
                logger.error("Forwarding the intake journal failed: %s; trying again", exc)
                self.failing = f"forwarding failed ({type(exc).__name__})"
                self._end_waits(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MOST)
                continue
            if self.failing is not None:
                logger.warning("Prefect accepts runs again: forwarding the journal")
            self.failing = None
            delay = self.RETRY_FIRST

    async def _forward_once(self) -> None:
        journal = self.journal
        if not journal.planned:
            await asyncio.sleep(self.BUSY_WINDOW if self._busy else self.CALM_WINDOW)
            entries = journal.pending(self.PASS_ALERTS)
            if not entries:
                return
            refs = [ref for entry in entries for ref in entry.refs]
            self._busy = len({ref.key for ref in refs}) > self.CALM_SINGLE_LIMIT
            fresh = [ref for ref in refs if ref.key not in self._runs_of]
            runs = plan_runs(fresh, single_limit=self.CALM_SINGLE_LIMIT)
            journal.plan(entries[-1].number, runs)
        through, runs = journal.planned_through, journal.planned
        created: dict[str, str] = {}
        for run_request in runs:
            run_id = await self.starter.create(run_request)
            for key in _keys_of(run_request):
                created[key] = run_id
        journal.done(through)
        for key, run_id in created.items():
            self._runs_of[key] = run_id
            self._runs_of.move_to_end(key)
        while len(self._runs_of) > self.REMEMBERED:
            self._runs_of.popitem(last=False)
        self._end_waits(True, through)

    def _end_waits(self, started: bool, through: int | None = None) -> None:
        """Answer the requests waiting for entries up to ``through`` (all, when None)."""
        for number in [n for n in self._waiters if through is None or n <= through]:
            for future in self._waiters.pop(number):
                if not future.done():
                    future.set_result(started)


def _keys_of(run_request: RunRequest) -> list[str]:
    params = run_request.parameters
    if "alerts" in params:
        return [AlertRef.model_validate(a).key for a in params["alerts"]]
    return [AlertRef.model_validate({**params}).key]


MAX_ID_CHARS = 256
_ID_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an alert id, or None: an id becomes part of URL paths, run names
    and keys, so it holds no path separator or control character and has a sane length."""
    if len(value) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters"
    if _ID_FORBIDDEN.search(value):
        return "holds a path separator or a control character"
    if value.strip(".") == "":
        return "is dots only"
    return None


def create_app(settings: Settings | None = None, prefect_api_url: str | None = None) -> FastAPI:
    """The intake app; ``prefect_api_url`` overrides the Prefect API of the current settings."""
    settings = settings or get_settings()
    keyring = KeyRing(settings)
    if not keyring.configured:
        raise RuntimeError(
            "the intake needs sender keys: RIPOSTE_INTAKE_TOKENS, RIPOSTE_INTAKE_HMAC_KEYS, "
            "RIPOSTE_INTAKE_KEY_FILE or RIPOSTE_INTAKE_SECRET_BLOCK"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        journal = Journal(settings.journal_folder, settings.intake_journal_max_mb * 1024 * 1024)
        client = PrefectClient(prefect_api_url) if prefect_api_url else get_client()
        if not with_quick_retries(client):
            logger.info("Run creations refused for now wait for Prefect's client's own retries")
        try:
            async with client:
                app.state.journal = journal
                app.state.starter = RunStarter(client)
                app.state.forwarder = Forwarder(journal, app.state.starter)
                app.state.forwarder.start()
                try:
                    yield
                finally:
                    await app.state.forwarder.stop()
        finally:
            journal.close()

    app = FastAPI(
        title="Riposte intake",
        version="1",
        description="Receives Microsoft Defender alerts, writes them to its journal and starts "
        "their response runs.",
        lifespan=lifespan,
    )

    app.include_router(approval_router(settings))

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """Prefect reachable, and the alerts accepted but not yet in runs (`waiting`), with the
        age of the oldest in seconds."""
        starter: RunStarter = request.app.state.starter
        journal: Journal = request.app.state.journal
        forwarder: Forwarder = request.app.state.forwarder
        failure = await starter.client.api_healthcheck()
        prefect = "ok" if failure is None else "unreachable"
        code = 200 if prefect == "ok" else 503
        oldest = journal.oldest
        return JSONResponse(
            {
                "status": "ok" if code == 200 else "degraded",
                "prefect": prefect,
                "waiting": journal.backlog,
                "oldest_waiting_seconds": round(time.time() - oldest, 1) if oldest else 0.0,
                "forwarding": forwarder.failing or "ok",
            },
            code,
        )

    @app.post(
        "/alerts/{source}",
        status_code=202,
        responses={
            401: {"description": "missing or wrong bearer token"},
            404: {"description": "unknown source"},
            413: {"description": "body larger than 1 MiB"},
            415: {"description": "not application/json"},
            400: {"description": "malformed JSON, or JSON nested too deeply"},
            422: {"description": "not an alert of this source"},
            503: {
                "description": "the journal cannot take the alerts now (disk full, or too many "
                "waiting for Prefect); retry after Retry-After seconds"
            },
        },
    )
    async def receive(source: str, request: Request) -> JSONResponse:
        """Accept one alert, a list of alerts, or the source's envelope (`value` / `data`)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _refusal(413, f"body larger than {MAX_BODY_BYTES} bytes")
        keys = await keyring.current()
        if not keys.may_send(request):
            return _refusal(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_SECONDS):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        return _refusal(413, f"body larger than {MAX_BODY_BYTES} bytes")
        except TimeoutError:
            return _refusal(408, f"the body did not arrive within {BODY_SECONDS:.0f} s")
        except ClientDisconnect:
            logger.info("A sender went away before its body was read (%d bytes)", len(body))
            return _refusal(400, "the body was cut short")
        if not keys.authenticates(request, bytes(body)):
            return _error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        if source not in SOURCES:
            return _error(404, f"unknown source '{source}'; known: {', '.join(sorted(SOURCES))}")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "content type must be application/json")
        try:
            document: Any = json.loads(body)
        except RecursionError:
            return _error(400, "body is JSON nested too deeply")
        except ValueError:
            return _error(400, "body is not valid JSON")

        parse = parser_for(source)
        alerts: list[Alert] = []
        try:
            for index, payload in enumerate(iter_alert_payloads(document)):
                try:
                    alerts.append(parse(payload))
                except AlertParseError as exc:
                    raise exc.located(f"alert [{index}]") from None
        except AlertParseError as exc:
            return _error(422, str(exc))
        if not alerts:
            return _error(422, "no alert in the body")
        for index, alert in enumerate(alerts):
            problem = id_problem(alert.id)
            if problem:
                return _error(422, f"alert [{index}]: id: {problem}")

        # A resolved alert needs no response; it is acknowledged so that the sender stops.
        refs = [ref_for(alert) for alert in alerts if alert.status != Status.RESOLVED]
        journal: Journal = request.app.state.journal
        forwarder: Forwarder = request.app.state.forwarder
        started = False
        if refs:
            try:
                number = await journal.append(refs)
            except JournalUnavailable as exc:
                logger.warning("Refusing %d alert(s) for now: %s", len(alerts), exc)
                return _error(
                    503,
                    "cannot take alerts now; retry later",
                    **{"Retry-After": RETRY_AFTER_SECONDS},
                )
            # Durable now. While Prefect keeps up, wait a moment for the runs, to name them.
            if not forwarder.behind(len(refs)) and settings.intake_run_wait_seconds > 0:
                started = await forwarder.wait(number, settings.intake_run_wait_seconds)
        accepted = []
        for alert in alerts:
            ref = ref_for(alert)
            answered = alert.status != Status.RESOLVED
            run_id = forwarder.run_id(ref.key) if answered and started else None
            accepted.append(
                {
                    "source": alert.source,
                    "id": alert.id,
                    "revision": ref.revision,
                    "flow_run_id": run_id,
                    "status": (
                        "resolved at the source"
                        if not answered
                        else "started"
                        if run_id
                        else "queued"
                    ),
                }
            )
        return JSONResponse({"accepted": accepted}, status_code=202)

    return app


def main() -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.intake_port,
        log_level="warning",
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
