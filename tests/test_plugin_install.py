"""A third-party driver, installed with pip like any other, is found through its
entry point by a `mailgate serve` process, listed, and usable end to end."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailgate.testing.harness import connect_process
from mailgate.testing.servers.silent import free_ports
from mailgate.v1 import provider_pb2, provider_service_pb2 as pb, provider_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # Build from a copy: setuptools writes egg-info into the source tree it builds.
    source = tmp_path_factory.mktemp("src") / "echo-driver"
    shutil.copytree(ROOT / "examples" / "echo-driver", source, ignore=shutil.ignore_patterns("tests"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)], check=True)
    assert (target / "mailgate_echo_driver").is_dir()
    return target


def test_installed_plugin_is_served(installed_plugin, tmp_path):
    [port] = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAILGATE_SECRET_KEY")}
    env["PYTHONPATH"] = str(installed_plugin)  # only the pip-installed copy, not the source tree
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        channel = connect_process(f"127.0.0.1:{port}", tmp_path / "mailgate.token")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = provider_service_pb2_grpc.ProviderServiceStub(channel)
        drivers = {d.type: d for d in stub.ListDrivers(pb.ListDriversRequest()).drivers}
        assert drivers["echo"].source == "mailgate-echo-driver 0.1.0"
        assert drivers["echo"].display_name == "Echo (example plugin)"
        settings = struct_pb2.Struct()
        settings.update({"greeting": "hi", "api_key": "let-me-in"})
        created = stub.CreateProvider(pb.CreateProviderRequest(provider=provider_pb2.Provider(
            display_name="Installed", type="echo", account="echo@example.test", plugin_settings=settings)))
        assert created.state == provider_pb2.Provider.STATE_GREEN
        assert created.plugin_settings["api_key_set"] is True and "api_key" not in created.plugin_settings
        channel.close()
        # SIGTERM: a graceful stop, and the store and key file are in the working directory.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "shutting down" in err and "stopped" in err
        assert (tmp_path / "mailgate.db").exists() and (tmp_path / "mailgate.key").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
