"""Another language, proven: a TypeScript client built only from the stubs that
`scripts/gen-protos ts` generates (protoc-gen-es, Connect's gRPC transport for Node)
drives a real `mailgate serve` with real Dovecot and aiosmtpd: rich errors from the
`grpc-status-details-bin` trailer, a provider, a send, the inbound stream and its ack,
and the refusals of a scoped token and of no token (interop/interop.ts)."""
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
from mailgate.testing.servers.smtpd import SmtpServer

from support import PASSWORD, USER

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def interop_script() -> Path:
    """The TypeScript stubs generated from protos/ and interop.ts compiled against them."""
    node, tsc = shutil.which("node"), ROOT / "node_modules" / ".bin" / "tsc"
    if node is None or not tsc.exists():
        pytest.fail("node or the npm packages are missing: run scripts/setup")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "scripts" / "gen-protos"), "ts"], env=env, check=True, capture_output=True)
    subprocess.run([str(tsc), "-p", str(ROOT / "interop")], check=True)
    return ROOT / "build" / "interop" / "interop" / "interop.js"


def test_a_typescript_client_from_the_generated_stubs_works_the_whole_contract(
        interop_script, tmp_path, clean_dovecot, mail_ca, mail_users):
    # What the test SMTP server accepts lands in the mailbox the provider watches.
    def deliver(raw: bytes, rcpts: list[str]) -> None:
        clean_dovecot.deliver(USER, raw)

    [port] = free_ports(1)
    env = serve_env()
    with SmtpServer("STARTTLS", dict(mail_users), mail_ca, deliver_to=deliver) as smtp:
        proc = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--listen", f"127.0.0.1:{port}"],
                                cwd=tmp_path, env=env)
        try:
            connect_process(f"127.0.0.1:{port}", tmp_path / "mailgate.token").close()  # listening
            config = tmp_path / "interop.json"
            config.write_text(json.dumps({
                "address": f"127.0.0.1:{port}", "token": (tmp_path / "mailgate.token").read_text().strip(),
                "account": USER, "password": PASSWORD, "wrongPassword": "not-the-password",
                "caPem": mail_ca.ca_pem, "smtp": {"host": smtp.host, "port": smtp.port},
                "imap": {"host": clean_dovecot.host, "port": clean_dovecot.imaps_port},
                "campaign": "interop", "otherCampaign": "elsewhere", "to": "customer@example.test"}))
            run = subprocess.run(["node", str(interop_script), str(config)], capture_output=True, text=True,
                                 timeout=90)
            sent_over_smtp = [m.rcpt_tos for m in smtp.messages]
        finally:
            proc.terminate()
            proc.wait(30)
    assert run.returncode == 0, run.stdout + run.stderr
    steps = {s.pop("step"): s for s in map(json.loads, run.stdout.splitlines())}

    assert steps["no_token"] == {"code": "Unauthenticated", "reason": "UNAUTHENTICATED"}
    wrong = steps["wrong_password"]
    assert wrong["code"] == "FailedPrecondition" and wrong["statusCode"] == 9  # google.rpc.Status.code
    assert wrong["reason"] == "SMTP_AUTH_FAILED" and wrong["domain"] == "mailgate.dev"
    assert wrong["failedChecks"] == "smtp.auth,imap.auth"
    assert "SMTP authentication failed" in wrong["message"] and "not-the-password" not in run.stdout

    created = steps["created"]
    assert created["state"] == "GREEN" and created["campaign"] == "interop" and created["passwordSet"] is True
    assert steps["listed"]["names"] == [created["name"]]  # the refused provider was not stored

    sent = steps["sent"]
    assert sent["provider"] == created["name"] and sent_over_smtp == [["customer@example.test"]]
    received = steps["received"]
    assert received["subject"] == "interop from TypeScript" and received["messageId"] == sent["messageId"]
    assert received["campaign"] == "interop" and received["provider"] == created["name"]
    assert received["textBody"] == "Hello from the generated stubs."
    assert steps["acked"]["state"] == "ACKNOWLEDGED"

    scoped = steps["scoped_token"]
    assert scoped["token"].startswith("tokens/")
    assert scoped["send"] == {"code": "PermissionDenied", "reason": "PERMISSION_DENIED", "permission": "mail.send"}
    assert scoped["stream"] == {"code": "PermissionDenied", "reason": "PERMISSION_DENIED",
                                "permission": "inbound.consume"}  # the campaign is out of its scope
    assert "done" in steps
