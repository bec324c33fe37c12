"""The server's standard faces: reflection and health checking."""
from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_reflection_lists_and_describes_provider_service(mailgate_server):
    db = ProtoReflectionDescriptorDatabase(mailgate_server.channel)
    services = set(db.get_services())
    assert {"mailgate.v1.ProviderService", "grpc.health.v1.Health"} <= services
    fd = db.FindFileContainingSymbol("mailgate.v1.ProviderService")
    methods = {m.name for m in fd.service[0].method}
    assert {"CreateProvider", "GetProvider", "ListProviders", "UpdateProvider", "DeleteProvider",
            "ValidateProvider", "ActivateProvider", "ListDrivers"} <= methods


def test_health_serves_and_turns_not_serving_on_shutdown(mailgate_server):
    health = health_pb2_grpc.HealthStub(mailgate_server.channel)
    for service in ("", "mailgate.v1.ProviderService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    mailgate_server.call(mailgate_server.app.health.enter_graceful_shutdown())
    resp = health.Check(health_pb2.HealthCheckRequest(service="mailgate.v1.ProviderService"))
    assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
