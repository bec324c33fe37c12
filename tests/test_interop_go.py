"""The Go stubs that `scripts/gen-protos go` generates compile and vet with Debian's Go
toolchain and modules (GOPATH mode over /usr/share/gocode: nothing is downloaded), and
a Go client built from them (interop/go) talks to a real `mailgate serve`, reading the
google.rpc details of its errors with genproto's errdetails."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailgate.testing.harness import connect_process, serve_env
from mailgate.testing.servers.silent import free_ports

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_GOPATH = Path("/usr/share/gocode")
MODULE = "github.com/mailgate/mailgate/gen/go"


@pytest.fixture(scope="module")
def go_env(tmp_path_factory) -> dict[str, str]:
    """A GOPATH holding the generated module beside Debian's Go modules."""
    if shutil.which("go") is None or not (DEBIAN_GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.skip("Go is not installed: scripts/setup installs golang-go and Debian's grpc, protobuf and "
                    "genproto Go packages")
    subprocess.run([str(ROOT / "scripts" / "gen-protos"), "go"], env={**os.environ, "PYTHON": sys.executable},
                   check=True, capture_output=True)
    gopath = tmp_path_factory.mktemp("gopath")
    shutil.copytree(ROOT / "build" / "gen" / "go", gopath / "src" / MODULE)
    env = {**os.environ, "GO111MODULE": "off", "GOFLAGS": "", "GOPATH": f"{gopath}:{DEBIAN_GOPATH}"}
    if not any(env.get(k) for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(ROOT / "build" / "go-cache")
    return env


def go(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(["go", *args], cwd=ROOT / "interop" / "go", env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"go {' '.join(args)}:\n{run.stdout}{run.stderr}"
    return run.stdout


def test_the_generated_go_stubs_build_and_vet(go_env):
    generated = sorted(p.name for p in (ROOT / "build" / "gen" / "go" / "mailgate" / "v1").iterdir())
    assert "provider_service_grpc.pb.go" in generated and "inbound_service.pb.go" in generated
    go(go_env, "build", f"{MODULE}/mailgate/v1")
    go(go_env, "vet", f"{MODULE}/mailgate/v1", ".")
    assert subprocess.run(["gofmt", "-l", "."], cwd=ROOT / "interop" / "go", capture_output=True,
                          text=True, check=True).stdout == ""


def test_a_go_client_from_the_generated_stubs_reads_rich_errors(go_env, tmp_path):
    binary = tmp_path / "interop-go"
    go(go_env, "build", "-o", str(binary), ".")
    [port] = free_ports(1)
    env = serve_env()
    proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=tmp_path, env=env)
    try:
        connect_process(f"127.0.0.1:{port}", tmp_path / "mailgate.token").close()  # listening
        run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60, env={
            **os.environ, "MAILGATE_ADDRESS": f"127.0.0.1:{port}",
            "MAILGATE_TOKEN": (tmp_path / "mailgate.token").read_text().strip()})
    finally:
        proc.terminate()
        proc.wait(30)
    assert run.returncode == 0, run.stdout + run.stderr
    steps = {s.pop("step"): s for s in map(json.loads, run.stdout.splitlines())}
    assert steps["no_token"] == {"code": "Unauthenticated", "reason": "UNAUTHENTICATED"}
    assert "smtp_imap" in steps["drivers"]["types"]
    invalid = steps["invalid"]
    assert invalid["code"] == "InvalidArgument" and invalid["domain"] == "mailgate.dev"
    assert invalid["reason"] == "INVALID_ARGUMENT"
    assert {"provider.account", "provider.smtp_imap.smtp.host"} <= set(invalid["fields"])  # BadRequest
