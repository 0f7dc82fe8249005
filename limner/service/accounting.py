"""``AccountsGate``: rate limits, credits and usage around every ``ImageService.run``.

    open ──> admit ──> reserve ───> deliver ──> exit ──> response sent ──> commit the hold + record usage
              │ rate limit (429)                  │       (``Delivery``)        (one transaction)
              └ reserve: price = per image x n x scale, held (402 when short);
                                                  any error / cancellation, or a response that was
                                                  not sent whole: refund the hold + record usage

When a request is charged: over HTTP, only after the last byte of its successful response has been
handed to the server's connection (``limner.http.delivery`` runs the deferred commit then); a process
that dies before that never charges, and its hold is refunded at the next start or sweep
(``Accounts.recover``). One that dies between sending and committing delivered the images uncharged:
the error is always in the client's favour. Outside HTTP (no ``Delivery`` in the context) the commit
happens when the run ends. Settlement runs shielded from cancellation, so a client that disconnects
mid-request (the server cancels its task) is still refunded.

In a started server, settling is batched (``limner.accounts.usage.UsageWriter``): a request's usage row,
and a delivered request's commit with it, go into one transaction with those of other requests, written
off the request path within ``usage_flush_seconds``. A refund is written at once, with its usage row, so
credits that were not spent are back before the next request. The consumer's policy comes from the
accounts' cache, so an unmetered request touches the database only in those batches, and a metered one
also once to reserve.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType

from sqlalchemy.orm import Session

from limner.accounts import consumers, credits, usage
from limner.accounts.consumers import Access
from limner.accounts.credits import Hold
from limner.accounts.models import to_micros
from limner.accounts.ratelimit import Limits
from limner.accounts.service import Accounts
from limner.accounts.tokens import principal_var
from limner.core.errors import InvalidRequest, LimnerError, ModelNotFound
from limner.core.models import ImageRequest, ImageResult
from limner.engines.catalog import Catalog, ModelEntry
from limner.service.gate import Admission
from limner.service.metrics import Metrics

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499
"""Status recorded when the client went away before its images were delivered."""

Settle = Callable[[bool], Awaitable[None]]
Within = Callable[[Session], None]
"""A delivered request's commit and usage row, written into a transaction someone else holds."""


class Delivery:
    """Settlements waiting for one HTTP response: run with ``sent=True`` once it went out whole and
    successful, else with ``False`` (refunded). Set in ``delivery_var`` by ``limner.http.delivery``.

    A response that is kept (a job's result, a response kept for an ``Idempotency-Key``) counts as
    delivered when it is stored: ``settle_within`` commits the settlements in the transaction that stores
    it, so a process that dies right after cannot leave a kept response uncharged."""

    def __init__(self) -> None:
        self.pending: list[tuple[Settle, Within | None]] = []
        self.closed = False

    def defer(self, settle: Settle, *, within: Within | None = None) -> bool:
        """Queue ``settle`` for after the response (``within``: the same as rows of a caller's transaction);
        False once the response is over (settle now)."""
        if self.closed:
            return False
        self.pending.append((settle, within))
        return True

    def settle_within(self, session: Session) -> None:
        """Commit, in ``session``, every settlement that can be written there (the rest wait for ``settle``)."""
        waiting: list[tuple[Settle, Within | None]] = []
        for settle, within in self.pending:
            if within is None:
                waiting.append((settle, within))
            else:
                within(session)
        self.pending = waiting

    async def settle(self, sent: bool) -> None:
        self.closed = True
        pending, self.pending = self.pending, []
        for settle, _ in pending:
            try:
                await settle(sent)
            except Exception:
                log.exception("settling a request after its response failed (its hold is recovered later)")


delivery_var: ContextVar[Delivery | None] = ContextVar("limner_delivery", default=None)

_micros = functools.lru_cache(maxsize=1024)(to_micros)
"""A price in micro-credits: the same few prices every request, and the exact conversion is a Decimal's."""


class Reservations:
    """Reservations written together: while one transaction of them is on its way to the database, the
    requests that arrive wait for the next, which takes them all (``credits.reserve_many``). A lone request
    is written at once, as before; many concurrent ones share a transaction instead of queueing for the
    database's write lock one by one. A request learns its outcome only once its hold is committed."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.waiting: list[tuple[credits.Ask, asyncio.Future[Hold]]] = []
        self.writing: asyncio.Future[None] | None = None

    def ask(self, ask: credits.Ask) -> asyncio.Future[Hold]:
        """A future for the hold (or ``InsufficientCredits``); it completes even if its awaiter is cancelled."""
        future: asyncio.Future[Hold] = asyncio.get_running_loop().create_future()
        self.waiting.append((ask, future))
        if self.writing is None:
            self.writing = asyncio.ensure_future(self._write())
        return future

    async def _write(self) -> None:
        db = self.accounts.db
        batch: list[tuple[credits.Ask, asyncio.Future[Hold]]] = []
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    outcomes = await db.call(credits.reserve_many, db, [ask for ask, _ in batch])
                except Exception as exc:  # the pool itself failed: every request in the batch sees it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:  # cancelled (the loop is closing): nobody is left waiting for an answer
            self.writing = None
            stopped = LimnerError("Internal error: the reservation was interrupted.")
            for _, future in [*batch, *self.waiting]:
                if not future.done():
                    future.set_exception(stopped)  # a hold written meanwhile is refunded by recovery
            self.waiting = []


def _reservations(accounts: Accounts) -> Reservations:
    """The accounts' reservation queue (one per ``Accounts``, made on first use)."""
    queue = _queues.get(accounts)
    if queue is None:
        queue = _queues[accounts] = Reservations(accounts)
    return queue


_queues: weakref.WeakKeyDictionary[Accounts, Reservations] = weakref.WeakKeyDictionary()


class AccountsGate:
    def __init__(self, accounts: Accounts, catalog: Catalog, metrics: Metrics | None = None) -> None:
        self.accounts = accounts
        self.catalog = catalog
        self.metrics = metrics

    def open(self, request: ImageRequest, request_id: str) -> AccountTicket:
        return AccountTicket(self, request, request_id)

    async def limits(self, consumer: str) -> tuple[consumers.Policy, Limits]:
        """The consumer's policy and its rate limits (its own, else the server's defaults)."""
        policy = await self.accounts.policy(consumer)
        defaults = self.accounts.options.default_limits
        return policy, Limits(policy.rpm or defaults.rpm, policy.ipm or defaults.ipm)

    async def admit_waiter(self, request: ImageRequest, entry: ModelEntry) -> None:
        """One request, no images, from the consumer's buckets for this model (see ``Gate.admit_waiter``)."""
        _, limits = await self.limits(request.consumer)
        if not limits.unlimited:
            await self.accounts.limiter.acquire(f"{request.consumer}|{entry.id}", 0, limits)

    def check_access(self, access: Access, asked: str, entry: ModelEntry, loras: tuple[str, ...]) -> None:
        """A model or adapter the consumer may not use answers as one that does not exist."""
        if not access.allows_model(entry.id):
            allowed = [name for e in self.catalog.entries if access.allows_model(e.id) for name in (e.id, *e.aliases)]
            raise ModelNotFound(asked, allowed)
        for name in loras:
            if not access.allows_lora(name):
                offered = ", ".join(lora.name for lora in entry.loras if access.allows_lora(lora.name))
                offers = f"it offers: {offered}" if offered else "it offers no LoRA adapters"
                raise InvalidRequest(f"Unknown LoRA '{name}' for model '{entry.id}'; {offers}.", param="loras")

    def model_label(self, name: str) -> str:
        """The catalog id for a metrics label; never a free-form name a client typed."""
        try:
            return self.catalog.resolve(name).id
        except ModelNotFound:
            return "unknown"


class AccountTicket:
    def __init__(self, gate: AccountsGate, request: ImageRequest, request_id: str) -> None:
        self.gate = gate
        self.request = request
        self.request_id = request_id
        self.started = time.perf_counter()
        self.model = request.model
        self.entry: ModelEntry | None = None
        self.policy: consumers.Policy | None = None
        self.n = 0
        self.price = 0
        self.hold: Hold | None = None
        self._reserving: asyncio.Future[Hold] | None = None
        self.result: ImageResult | None = None
        principal = principal_var.get()
        self.token_id = principal.token_id if principal and principal.consumer == request.consumer else None

    async def __aenter__(self) -> AccountTicket:
        return self

    async def admit(self, entry: ModelEntry, *, n: int, loras: tuple[str, ...] = ()) -> Admission:
        accounts = self.gate.accounts
        consumer = self.request.consumer
        self.policy, limits = await self.gate.limits(consumer)
        access = self.policy.access
        self.gate.check_access(access, self.request.model, entry, loras)
        self.model, self.entry, self.n = entry.id, entry, n
        if limits.ipm is not None and n > limits.ipm:
            raise InvalidRequest(
                f"n={n} exceeds this consumer's limit of {limits.ipm} images per minute on '{entry.id}'.", param="n"
            )
        if not limits.unlimited:
            await accounts.limiter.acquire(f"{consumer}|{entry.id}", n, limits)
        priority = min(self.request.priority or 0, access.max_priority)
        deadline = self.request.start_deadline if self.request.start_deadline is not None else access.start_deadline
        return Admission(priority, deadline)

    async def reserve(self, *, width: int, height: int, cached: bool = False) -> None:
        accounts, entry, policy = self.gate.accounts, self.entry, self.policy
        if entry is None or policy is None:
            raise LimnerError("Internal error: credits reserved before the request was admitted.")
        if cached and entry.cache_price_per_image is not None:
            self.price = _micros(entry.cache_price_per_image * self.n)
        else:
            self.price = _micros(entry.price_for(self.n, width, height, self.request.quality))
        if self.price > 0 and policy.consumer_id is not None and policy.balance is not None:
            # Shielded: a reservation that completes after its client left must still be found and refunded.
            ask = credits.Ask(
                policy.consumer_id,
                self.price,
                model=entry.id,
                request_id=self.request_id,
                ttl=accounts.options.reservation_ttl,
                instance_id=accounts.instance_id,
            )
            self._reserving = _reservations(accounts).ask(ask)
            self.hold = await asyncio.shield(self._reserving)

    def deliver(self, result: ImageResult) -> None:
        self.result = result

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        result = self.result if exc is None else None
        delivered = result is not None and not result.storage_error
        if delivered:
            status, code = 200, None
        elif result is not None:
            status, code = 500, "storage_error"
        elif isinstance(exc, LimnerError):
            status, code = exc.status, exc.code
        elif isinstance(exc, asyncio.CancelledError):
            status, code = CLIENT_CLOSED, "client_closed"
        else:
            status, code = 500, "internal_error"
        images = result.images if result is not None else []
        event = usage.UsageEvent(
            request_id=self.request_id,
            consumer=self.request.consumer,
            token_id=self.token_id,
            model=self.model,
            dialect=self.request.dialect,
            images=len(images),
            pixels=sum(image.width * image.height for image in images),
            seconds=time.perf_counter() - self.started,
            cost=self.price if delivered else 0,
            status=status,
            error_code=code,
        )
        if self.gate.metrics is not None:
            self.gate.metrics.observe_generation(
                event.dialect, self.gate.model_label(self.model), code or "ok", event.seconds, len(images)
            )
        delivery = delivery_var.get()
        within = functools.partial(_settle_rows, self.hold, event, True)
        if (
            delivered
            and delivery is not None
            and delivery.defer(functools.partial(self._after_response, event), within=within)
        ):
            return  # committed (or refunded) once the response is sent: see the module doc
        settling = asyncio.ensure_future(self._settle(event, delivered))
        try:
            await asyncio.shield(settling)
        except asyncio.CancelledError:
            if exc is None:
                raise  # cancelled while settling a success: it still completes; let the cancellation through
        except Exception:
            log.exception(
                "settling request %s failed (a held reservation is recovered when it expires)", self.request_id
            )

    async def _after_response(self, event: usage.UsageEvent, sent: bool) -> None:
        """Commit a delivered result once its response went out; refund it (a 499) if it did not."""
        if not sent:
            event = dataclasses.replace(event, status=CLIENT_CLOSED, error_code="client_closed", cost=0)
        await self._settle(event, sent)

    async def _settle(self, event: usage.UsageEvent, delivered: bool) -> None:
        if self.hold is None and self._reserving is not None:
            with contextlib.suppress(LimnerError):  # a 402 reserved nothing
                self.hold = await self._reserving  # cancelled mid-reservation: wait for it, to refund it
        accounts = self.gate.accounts
        if self.hold is None:  # nothing to commit or refund: the usage row is written with others, later
            await accounts.record_usage(event)
            return
        if delivered and await accounts.commit_delivered(self.hold, event):
            return  # committed with its usage row in the next batch (refunds are not batched)
        await accounts.db.call(_settle, accounts, self.hold, event, delivered)


def _settle(accounts: Accounts, hold: Hold | None, event: usage.UsageEvent, delivered: bool) -> None:
    """Commit or refund the hold and record the usage, in one transaction (a charge never lacks its row)."""
    with accounts.db.write() as session:
        _settle_rows(hold, event, delivered, session)


def _settle_rows(hold: Hold | None, event: usage.UsageEvent, delivered: bool, session: Session) -> None:
    charged = True
    if hold is not None:
        if delivered:
            charged = credits.commit(session, hold, request_id=event.request_id)
        else:
            credits.refund(session, hold, request_id=event.request_id, note=event.error_code or "")
    if not charged:
        event = dataclasses.replace(event, cost=0)
    usage.add(session, event)
