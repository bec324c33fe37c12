"""Assembles and runs the grpc.aio server: store, drivers, services, health,
reflection, graceful shutdown on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from mailgate.drivers import network
from mailgate.drivers.network import NetworkPolicy
from mailgate.drivers.registry import DriverRegistry
from mailgate.v1 import (inbound_service_pb2, inbound_service_pb2_grpc, mail_service_pb2, mail_service_pb2_grpc,
                         provider_service_pb2, provider_service_pb2_grpc, token_service_pb2, token_service_pb2_grpc)

from . import limits
from .access import audit, tls
from .access.guard import Guard
from .access.servicer import TokenServicer
from .access.tokens import Tokens
from .config import ConfigError, Settings, check_listen, event_retention, load_campaigns, load_drivers_config
from .inbound.queue import InboundQueue, InboundSettings
from .inbound.servicer import InboundServicer
from .inbound.sources import Sources
from .inbound.wakeups import Listener
from .outbound.outbox import Outbox, OutboxSettings
from .outbound.servicer import MailServicer
from .paging import PageTokens
from .providers.callback import CallbackListener
from .providers.events import ProviderEvents
from .providers.history import History
from .providers.lifecycle import Providers
from .providers.records import ProviderRecords
from .providers.servicer import ProviderServicer
from .calls import CallInterceptor
from .runtime import Runtime
from .secrets import SecretBox
from .store.db import Database

log = logging.getLogger("mailgate.server")

SERVICE_NAMES = [provider_service_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
                 mail_service_pb2.DESCRIPTOR.services_by_name["MailService"].full_name,
                 inbound_service_pb2.DESCRIPTOR.services_by_name["InboundService"].full_name,
                 token_service_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name]


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    port: int
    db: Database
    runtime: Runtime
    health: health.aio.HealthServicer
    providers: Providers
    outbox: Outbox
    inbound: InboundQueue
    sources: Sources
    drivers: DriverRegistry
    tokens: Tokens
    history: History
    callback: CallbackListener | None = None
    wakeups: Listener | None = None
    previous_policy: NetworkPolicy | None = None  # put back on stop (tests run servers one after another)

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        if self.callback:
            await asyncio.to_thread(self.callback.close)
        await self.server.stop(self.settings.grace if grace is None else grace)
        await self.inbound.drain()  # consumers cut off by the stop give their leases back
        await self.outbox.stop()  # attempts under way record their result first
        await self.sources.close()
        for driver in self.drivers:  # their connections and the threads that watch mailboxes
            await driver.release_all()
        await self.history.stop()  # what the windows held back
        await asyncio.to_thread(self.inbound.parsers.close)
        if self.wakeups:
            await asyncio.to_thread(self.wakeups.close)
        self.runtime.close()
        self.db.close()
        if self.previous_policy is not None:
            network.use(self.previous_policy)
        log.info("stopped")


async def start(settings: Settings, extra_plugins: Iterable[object] = ()) -> App:
    check_listen(settings)  # refuse a bad address or an open network before touching anything
    configs = load_drivers_config(settings.drivers_config)
    campaigns = load_campaigns(settings)
    retention = event_retention(settings)
    try:
        policy = NetworkPolicy.parse(settings.network_allow, settings.network_deny)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    clients = tls.Clients.load(settings.clients_file) if settings.auth else tls.Clients({})  # a bad file, too
    db = Database(settings.database_url)
    await asyncio.to_thread(db.upgrade)
    box = SecretBox.from_environment(settings.key_file)
    drivers = DriverRegistry.from_entry_points(extra_plugins)
    callback = CallbackListener(settings.oauth_callback_listen) if settings.oauth_callback_listen else None
    if callback:  # OAuth applications without a redirect URI of their own use the listener
        for section in configs.values():
            section.setdefault("redirect_uri", callback.redirect_uri)
    events = ProviderEvents()
    pages = PageTokens(box.derive_key("page-tokens"))  # one key for every list's tokens
    history = History(db, pages, retention)
    records = ProviderRecords(db, box, events, history)
    runtime = Runtime(records, io_workers=settings.io_workers, default_timeout=settings.timeout,
                      login_backoff=settings.login_backoff, login_backoff_cap=settings.login_backoff_cap,
                      poll_interval=settings.poll_interval, driver_configs=configs)
    providers = Providers(db, box, events, history, drivers, runtime, pages,
                          authorization_ttl=settings.authorization_ttl)
    outbox = Outbox(db, records, drivers, runtime, OutboxSettings(
        max_message_bytes=settings.max_message_bytes, retry_base=settings.retry_base,
        first_attempt_wait=settings.first_attempt_wait, commit_delay=settings.commit_delay,
        lease=settings.outbox_lease, max_recipients=settings.max_recipients,
        budget_bytes=settings.send_budget_bytes), pages)
    inbound = InboundQueue(db, runtime.run_blocking, InboundSettings(
        parse_workers=settings.parse_workers, claim_bytes=settings.claim_bytes,
        dead_letter_after=settings.dead_letter_after, campaigns=campaigns), asyncio.get_running_loop(), pages)
    sources = Sources(records, drivers, runtime, inbound)
    # Told of every provider created, changed or deleted, after the store.
    events.listen(outbox.provider_changed)  # mail that waited for a provider now GREEN
    events.listen(sources.provider_changed)  # its mailbox watched, or no longer
    tokens = Tokens(db)
    listener = None
    if db.engine.dialect.name == "postgresql":  # other replicas may commit mail or revoke tokens: hear of it
        def heard(topics: list[str]) -> None:
            inbound.wake(topics)
            tokens.forget(topics)
        listener = Listener(db.engine, heard)
        await asyncio.to_thread(listener.start)
    # SendEmail's requests may be as large as a message; every other method's are small.
    large = {f"/{SERVICE_NAMES[1]}/SendEmail": 2 * settings.max_message_bytes + (1 << 20)}
    audit.configure(settings.audit_file)
    if settings.auth:
        await tokens.ensure_admin_file(settings.admin_token_file)
    calls = CallInterceptor(settings.max_concurrent_calls, limits.REQUEST_BYTES, large,
                            Guard(tokens, clients) if settings.auth else None)
    previous_policy = network.use(policy)
    # The interceptor answers calls past the limit in words; gRPC's own limit, at twice
    # that, holds back calls that would pile up before they reach it.
    server = grpc.aio.server(interceptors=[calls], maximum_concurrent_rpcs=2 * settings.max_concurrent_calls or None,
                             options=[
        # gRPC's 4 MB default would refuse a SendEmail with a large attachment before
        # our own size check could answer it in words; responses (a raw message with
        # its attachments) may be larger still.
        ("grpc.max_receive_message_length", 2 * settings.max_message_bytes + (1 << 20)),
        ("grpc.max_send_message_length", -1),
    ])
    provider_service_pb2_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(providers, drivers), server)
    mail_service_pb2_grpc.add_MailServiceServicer_to_server(MailServicer(outbox, providers), server)
    inbound_service_pb2_grpc.add_InboundServiceServicer_to_server(InboundServicer(inbound, providers), server)
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(tokens, pages), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server, SERVICE_NAMES + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    port = (server.add_secure_port(settings.listen, tls.server_credentials(settings)) if settings.tls_cert
            else server.add_insecure_port(settings.listen))
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    await history.start()
    await server.start()
    outbox.start()
    await sources.start()
    for name in SERVICE_NAMES + [""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if callback:
        callback.start(providers, asyncio.get_running_loop())
    app = App(settings, server, port, db, runtime, health_servicer, providers, outbox, inbound, sources,
              drivers, tokens, history, callback, listener, previous_policy)
    access = (f"API tokens required; administrator token in {settings.admin_token_file}" if settings.auth
              else "authentication OFF: anyone who reaches the port may do anything")
    log.info("mailgate listening on %s (database %s; drivers: %s; %s)", app.address,
             db.engine.url.render_as_string(hide_password=True), ", ".join(drivers.types()), access)
    return app


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.aio.Server, names: list[str]) -> None:
    """grpcio-reflection serves v1alpha; some tools speak only v1, whose messages are
    the same on the wire: the same servicer answers under both names."""
    servicer = reflection.aio.ReflectionServicer(names + [reflection.SERVICE_NAME, REFLECTION_V1])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


async def serve(settings: Settings) -> None:
    app = await start(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: finishing calls in flight (up to %.0f s)", settings.grace)
    await app.stop()
