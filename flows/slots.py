"""Device slots: a slot of the global concurrency limit ``gpu``/``cpu``, with every wait on the
Prefect server bounded, and a slot held across a server restart given back.

Why not ``prefect.concurrency.sync.concurrency``: it hands every acquisition to one
``ConcurrencySlotAcquisitionWithLeaseService`` per set of limit names per *process*
(``prefect/concurrency/_asyncio.py``, ``_QueueServiceBase.instance``). That service opens
its ``PrefectClient`` once, at its first use (``_lifespan``, ``prefect/concurrency/services.py``),
with the API URL and client settings of that moment, and keeps it for the life of the process;
it handles one acquisition at a time. A process whose first flow ran against another server
(or under other settings) sends every later slot request to that server: connection refused,
retried with back-off for about a minute per request, request after request, queued one behind
the other, with no bound unless ``timeout_seconds`` is given (and that bound counts from the
moment the service takes the item, not from the caller's call). The leases live, by default, in
the server's memory (``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``,
``prefect.server.concurrency.lease_storage.memory``): a server restart forgets them, and the
holder's ``decrement-with-lease`` then answers 204 without decrementing, so the slot stays taken
for ever and every later acquisition waits for ever.

Here each exchange with the server opens a client for the settings in force *now*, runs on a
fresh event loop in a thread of its own and is given up after ``api_wait_s`` (a half-closed
keep-alive socket, a server that accepts and never answers, the client's own retries: all
inside that bound). Waiting for a slot the server refuses (423) is bounded by ``slot_wait_s``;
the clock stops while a slot of the same limit is held in this process (a sibling task is
working: the queue moves) and restarts when one is given back. Past either bound the attempt
fails with :class:`DeviceSlotError`, naming the limit and the server, and the task's retry
(``prefect.retries``) takes over.

A held slot's lease is renewed in the background. When the server answers that it no longer
knows a lease that cannot have expired yet, it restarted and forgot it: the slot is still
counted, so it is given back by name (``/decrement``) instead of by lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID

from electra.core.config import Params

T = TypeVar("T")

# Defaults until params.prefect has fields of these names (then the field is used); an
# environment variable of the upper-case name with the ELECTRA_PREFECT_ prefix wins over both.
SLOT_WAIT_S = 1800.0   # waiting for a slot the server refuses, while no slot of it is held here
API_WAIT_S = 180.0     # one exchange with the server, the client's own retries included
LEASE_S = 300.0        # a held slot's lease; renewed every 3/4 of it (the server's minimum is 60)

RENEW_FRACTION = 0.75
RENEW_RETRY_S = 5.0        # after a failed renewal
EXPIRY_MARGIN_S = 5.0      # a lease forgotten this long before its expiry was lost, not expired
THREAD_GRACE_S = 10.0      # past the deadline, how long an exchange's thread may take to unwind

logger = logging.getLogger(__name__)


class DeviceSlotError(RuntimeError):
    """A slot of a device limit could not be had (or the server did not answer in time).

    Transient: the task's retry takes over."""


class _ServerTimeout(Exception):
    pass


def setting(params: Any, name: str, default: float) -> float:
    """``ELECTRA_PREFECT_<NAME>`` if set, else ``params.prefect.<name>`` if the field exists, else ``default``."""
    env = os.environ.get(f"ELECTRA_PREFECT_{name.upper()}")
    if env:
        return float(env)
    value = getattr(getattr(params, "prefect", None), name, None)
    return float(value) if value is not None else float(default)


def api_url() -> str:
    """The Prefect API this thread talks to, for messages (a password in it masked)."""
    from prefect.settings import PREFECT_API_URL

    from electra.core.tracking import redact_uri

    url = PREFECT_API_URL.value()
    return redact_uri(url) if url else "(ephemeral Prefect server, no PREFECT_API_URL)"


def exchange(what: str, seconds: float, call: Callable[[Any], Awaitable[T]]) -> T:
    """``await call(client)`` with a client opened now, for this thread's settings, given up after
    ``seconds``: on a fresh event loop in a daemon thread, so that nothing here (a dead keep-alive
    socket, a name lookup, the client's back-off) can hold the caller past the bound."""
    import httpx
    from prefect.client.orchestration import get_client

    box: dict[str, Any] = {}

    async def run() -> T:
        # A client that has never connected does not retry a refused connection (Prefect retries
        # ConnectError only after a first success): a server restarting refuses for a while.
        delay = 0.5
        while True:
            try:
                async with get_client() as client:
                    return await call(client)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:   # nothing was sent: safe to repeat
                box["last"] = exc
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)

    def target() -> None:
        try:
            box["value"] = asyncio.run(asyncio.wait_for(run(), seconds))
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    context = contextvars.copy_context()   # the settings (PREFECT_API_URL ...) are context variables
    thread = threading.Thread(target=context.run, args=(target,), daemon=True, name=f"prefect-exchange: {what}")
    thread.start()
    thread.join(seconds + THREAD_GRACE_S)
    error = box.get("error")
    if thread.is_alive() or isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        last = box.get("last")
        raise _ServerTimeout(f"the Prefect server at {api_url()} did not answer within {seconds:.0f} s ({what})"
                             + (f"; last: {type(last).__name__}: {last}" if last is not None else ""))
    if error is not None:
        raise error
    return box["value"]


def _status(exc: BaseException) -> int | None:
    import httpx

    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


# Slots held by this process, per (server, limit): a holder here is working, so the queue moves.
_cond = threading.Condition()
_held: Counter[tuple[str, str]] = Counter()
_releases: Counter[tuple[str, str]] = Counter()


def _holder() -> Any:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return ConcurrencyLeaseHolder(type="task_run", id=ctx.task_run.id) if ctx and ctx.task_run else None


def _limit_state(name: str, api_wait_s: float) -> str:
    """``1/1 slots taken`` for a message; empty when the server does not say."""
    try:
        limit = exchange(f"read limit {name!r}", api_wait_s,
                         lambda c: c.read_global_concurrency_limit_by_name(name))
        return f"{limit.active_slots}/{limit.limit} slots taken"
    except Exception:
        return ""


def _acquire(name: str, slot_wait_s: float, api_wait_s: float, lease_s: float) -> UUID | None:
    """A lease on one slot of ``name``; None when the server has no such limit."""
    import httpx

    server, key, holder = api_url(), (api_url(), name), _holder()
    counted_from = time.monotonic()
    while True:
        with _cond:
            releases = _releases[key]

        async def increment(client: Any) -> Any:
            try:
                response = await client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=lease_s, holder=holder)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                return float(exc.response.headers.get("Retry-After", 1.0))
            return response.json()

        try:
            answer = exchange(f"acquire a slot of {name!r}", api_wait_s, increment)
        except _ServerTimeout as exc:
            raise DeviceSlotError(f"no slot of the global concurrency limit {name!r}: {exc}") from None
        except Exception as exc:
            raise DeviceSlotError(f"no slot of the global concurrency limit {name!r} from the Prefect server at "
                                  f"{server}: {type(exc).__name__}: {exc}") from exc
        if isinstance(answer, dict):
            if not answer.get("limits"):
                logger.warning("no global concurrency limit %r on %s: running without a slot", name, server)
                return None
            return UUID(answer["lease_id"])
        retry_after = answer
        now = time.monotonic()
        with _cond:
            if _held[key] or _releases[key] != releases:
                counted_from = now          # a slot is held (or was just given back) here: the queue moves
            if now - counted_from >= slot_wait_s:
                break
            if _releases[key] == releases:  # sleep until the server's retry time or a release here
                _cond.wait(timeout=max(0.5, min(retry_after, slot_wait_s - (now - counted_from))))
    taken = _limit_state(name, api_wait_s)
    raise DeviceSlotError(
        f"no slot of the global concurrency limit {name!r} on the Prefect server at {server} within "
        f"{slot_wait_s:.0f} s{f' ({taken})' if taken else ''}, none of them held by this process. If no "
        f"other run holds them, they were lost by a server restart while held (the server keeps leases in "
        f"memory unless PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE says otherwise): free them with "
        f"`prefect global-concurrency-limit update {name} --active-slots 0`.")


class _Lease:
    """A held slot: its lease renewed in the background until it is given back."""

    def __init__(self, name: str, lease_id: UUID, lease_s: float, api_wait_s: float) -> None:
        self.name, self.lease_id, self.lease_s, self.api_wait_s = name, lease_id, lease_s, api_wait_s
        self.server = api_url()
        self.acquired = self.renewed = time.monotonic()   # the lease runs at least lease_s from here
        self.state = "held"          # "lost": the server forgot it unexpired (slot still counted); "expired"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._keep,), daemon=True,
                                        name=f"device-slot-lease-{lease_id}")
        self._thread.start()

    def renew(self) -> bool:
        """One renewal; False when it failed (the state says whether for good)."""
        sent = time.monotonic()
        try:
            exchange(f"renew the lease of a slot of {self.name!r}", self.api_wait_s,
                     lambda c: c.renew_concurrency_lease(lease_id=self.lease_id, lease_duration=self.lease_s))
        except Exception as exc:
            if _status(exc) in (404, 410):
                answered = time.monotonic()
                self.state = "lost" if answered < self.renewed + self.lease_s - EXPIRY_MARGIN_S else "expired"
                logger.warning(
                    "the Prefect server at %s no longer knows the lease of this slot of %r (%s): %s", self.server,
                    self.name, "it restarted and forgot it; the slot is still counted and is given back by name"
                    if self.state == "lost" else "it expired", exc)
            else:
                logger.warning("renewing the lease of a slot of %r on %s failed, retried in %.0f s: %s", self.name,
                               self.server, RENEW_RETRY_S, exc)
            return False
        self.renewed = sent
        return True

    def _keep(self) -> None:
        delay = self.lease_s * RENEW_FRACTION
        while not self._stop.wait(delay) and self.state == "held":
            delay = self.lease_s * RENEW_FRACTION if self.renew() else RENEW_RETRY_S

    def release(self) -> None:
        """Give the slot back; never raises (the stage's work is done): a failure is logged."""
        self._stop.set()
        self._thread.join(self.api_wait_s + THREAD_GRACE_S)
        try:
            if self.state == "held":
                # A server that restarted since the last renewal has forgotten the lease, and its
                # decrement-with-lease would be a silent no-op: ask first.
                self.renew()
            if self.state == "held":
                exchange(f"release a slot of {self.name!r}", self.api_wait_s,
                         lambda c: c.release_concurrency_slots_with_lease(lease_id=self.lease_id))
            elif self.state == "lost":
                occupied = max(0.001, time.monotonic() - self.acquired)
                exchange(f"release a slot of {self.name!r} by name", self.api_wait_s,
                         lambda c: c.release_concurrency_slots(names=[self.name], slots=1, occupancy_seconds=occupied))
            else:
                logger.warning("the lease of a slot of %r on %s expired while held: nothing to give back (if the "
                               "server restarted meanwhile the slot may still be counted: `prefect "
                               "global-concurrency-limit update %s --active-slots N`)", self.name, self.server,
                               self.name)
        except Exception as exc:
            logger.warning("a slot of %r was not given back to the Prefect server at %s (its lease, %s, frees it "
                           "when it expires): %s", self.name, self.server, self.lease_id, exc)


@contextlib.contextmanager
def device_slot(name: str, params: Any = None) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the block (see the module's doc)."""
    slot_wait_s = setting(params, "slot_wait_s", SLOT_WAIT_S)
    api_wait_s = setting(params, "api_wait_s", API_WAIT_S)
    lease_s = max(60.0, setting(params, "lease_s", LEASE_S))
    lease_id = _acquire(name, slot_wait_s, api_wait_s, lease_s)
    if lease_id is None:
        yield
        return
    lease = _Lease(name, lease_id, lease_s, api_wait_s)
    key = (lease.server, name)
    with _cond:
        _held[key] += 1
    try:
        yield
    finally:
        try:
            lease.release()
        finally:
            with _cond:
                _held[key] -= 1
                _releases[key] += 1
                _cond.notify_all()


def device_limit_name(params: Params) -> str:
    """The global concurrency limit fine-tuning and evaluation hold a slot of: ``gpu`` or ``cpu``."""
    from electra.core.runtime import resolve_device

    return "gpu" if resolve_device(params.finetune.device).type == "cuda" else "cpu"


def ensure_device_limit(name: str, slots: int, params: Params | None = None) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists
    (an operator's own setting, e.g. the number of GPUs of the pool, is left alone).
    Given up after ``api_wait_s`` (flows/slots.py) with an error naming the server."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async def ensure(client) -> None:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another flow created it meanwhile
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))

    try:
        exchange(f"create the global concurrency limit {name!r}", setting(params, "api_wait_s", API_WAIT_S), ensure)
    except Exception as exc:
        raise DeviceSlotError(f"the global concurrency limit {name!r} could not be read or created on the "
                              f"Prefect server at {api_url()}: {exc}") from exc
