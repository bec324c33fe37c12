"""mailgate.client and the `mailgate` CLI against a real running server.

The example `echo` driver stands in for mail servers: its "login" accepts only the
API key `let-me-in`, so every path (created, refused, checked) runs without SMTP.
"""
from __future__ import annotations

import io
import json
import re
import socket
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

import mailgate_echo_driver
from mailgate.cli import build_parser, candidate, main
from mailgate.client import MailgateClient, MailgateError
from mailgate.v1 import provider_pb2

Provider = provider_pb2.Provider
KEY = "let-me-in"


@pytest.fixture
def mailgate_plugins():
    return [mailgate_echo_driver]


@pytest.fixture
def mg(mailgate_server):
    with MailgateClient(mailgate_server.address, token=mailgate_server.token) as client:
        yield client


def echo(name: str = "Support line", key: str = KEY, **fields) -> Provider:
    settings = struct_pb2.Struct()
    settings.update({"greeting": "hello", "api_key": key})
    fields.setdefault("account", "support@example.test")
    return Provider(display_name=name, type="echo", plugin_settings=settings, **fields)


def create_args(name: str = "Support line", *extra: str) -> list[str]:
    return ["providers", "create", "--type", "echo", "--name", name,
            "--account", "support@example.test", "--setting", "greeting=hello",
            "--password-stdin", *extra]


# ------------------------------------------------------------------ client
def test_client_round_trip_resolves_every_kind_of_ref(mg):
    p = mg.create_provider(echo(campaign="billing"))
    assert p.state == Provider.STATE_GREEN and p.name.startswith("providers/")
    pid = p.name.removeprefix("providers/")
    for ref in (p.name, pid, "Support line", "  support LINE "):
        assert mg.get_provider(ref) == p

    updated = mg.update_provider(Provider(name="Support line", from_name="Team", campaign="x"),
                                 ["from_name"])
    assert updated.from_name == "Team" and updated.campaign == "billing"
    assert mg.validate_provider("Support line").report.ok
    assert not mg.validate_provider(echo("Candidate", key="nope")).report.ok
    activated = mg.activate_provider(pid).provider
    assert activated.state == Provider.STATE_GREEN
    assert {"echo", "smtp_imap"} <= {d.type for d in mg.list_drivers()}

    mg.delete_provider("support line", etag=activated.etag)
    with pytest.raises(MailgateError) as missing:
        mg.get_provider("Support line")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and "'Support line'" in missing.value.message


def test_ref_matching_several_providers_is_refused_clearly(mg):
    first = mg.create_provider(echo("First"))
    pid = first.name.removeprefix("providers/")
    mg.create_provider(echo(pid))  # a provider whose *name* is the other one's id
    with pytest.raises(MailgateError) as err:
        mg.get_provider(pid)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.reason == "AMBIGUOUS_REF"
    assert "several providers" in err.value.message and first.name in err.value.message
    assert mg.get_provider(first.name).display_name == "First"  # the resource name is never ambiguous


def test_list_providers_follows_page_tokens(mg):
    names = [mg.create_provider(echo(f"P{i}")).name for i in range(5)]
    tokens: list[str] = []
    real = mg.stub.ListProviders
    mg.stub.ListProviders = lambda request, **kw: tokens.append(request.page_token) or real(request, **kw)
    assert [p.name for p in mg.list_providers(page_size=2)] == names
    assert len(tokens) == 3 and tokens[0] == "" and all(tokens[1:])
    assert [p.display_name for p in mg.list_providers(filter='type = "echo"')] == [f"P{i}" for i in range(5)]


def test_error_invalid_argument_names_fields(mg):
    with pytest.raises(MailgateError) as e:
        mg.create_provider(echo(" ", account="not-an-address"))
    err = e.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_ARGUMENT"
    assert {"provider.display_name", "provider.account"} <= set(err.violations)
    assert err.report is None and err.retry_delay is None
    assert isinstance(err.__cause__, grpc.RpcError)


def test_error_already_exists_carries_metadata(mg):
    mg.create_provider(echo("Billing"))
    with pytest.raises(MailgateError) as e:
        mg.create_provider(echo("BILLING"))
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert e.value.metadata["display_name"] == "BILLING" and e.value.domain == "mailgate.dev"


def test_error_not_found_from_the_server(mg):
    with pytest.raises(MailgateError) as e:
        mg.delete_provider("providers/nope")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.reason == "NOT_FOUND"


def test_error_failed_precondition_carries_the_report(mg):
    with pytest.raises(MailgateError) as e:
        mg.create_provider(echo(key="wrong"))
    err = e.value
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "ECHO_AUTH_FAILED"
    assert err.metadata["check"] == "echo.auth"
    assert [(c.id, c.outcome) for c in err.report.checks] == [("echo.auth", err.report.checks[0].OUTCOME_FAILED)]
    assert str(err).startswith("FAILED_PRECONDITION ECHO_AUTH_FAILED: ")
    assert list(mg.list_providers()) == []


# ------------------------------------------------------------------ CLI
def test_cli_create_with_settings_and_password_from_stdin(cli, mg):
    code, out, err = cli(*create_args("Support line", "--setting", "retries=3",
                                      "--reply-to", "a@example.test;b@example.test"), stdin=KEY + "\n")
    assert code == 0, err
    assert "created providers/" in out and re.search(r"api_key:\s+set", out)
    assert KEY not in out + err
    stored = mg.get_provider("Support line")
    assert stored.plugin_settings["retries"] == 3 and stored.plugin_settings["api_key_set"] is True
    assert list(stored.reply_to) == ["a@example.test", "b@example.test"]


def test_cli_list_is_an_aligned_table_without_colour_off_a_terminal(cli, mg):
    mg.create_provider(echo("Support line", campaign="billing"))
    mg.create_provider(echo("Sales", account="sales@example.test"))
    code, out, _ = cli("providers", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "ACCOUNT", "STATE", "CAMPAIGN", "REASON"]
    assert rows[0].split()[:6] == ["Support", "line", "echo", "support@example.test", "GREEN", "billing"]
    assert rows[1].startswith("Sales ") and rows[1].index("GREEN") == header.index("STATE")
    assert "\x1b[" not in out


def test_cli_colours_state_words_only_on_a_terminal_without_no_color(cli, mg, monkeypatch):
    mg.create_provider(echo())

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    for no_color, coloured in ((None, True), ("1", False)):
        if no_color:
            monkeypatch.setenv("NO_COLOR", no_color)
        else:
            monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setattr(sys, "stdout", Terminal())
        assert cli("providers", "list")[0] == 0
        assert ("\x1b[32mGREEN\x1b[0m" in sys.stdout.getvalue()) is coloured


def test_cli_json_output_is_protobuf_json(cli, mg):
    mg.create_provider(echo(campaign="billing"))
    code, out, _ = cli("providers", "list", "--json")
    assert code == 0
    [p] = json.loads(out)
    assert p["displayName"] == "Support line" and p["state"] == "STATE_GREEN"
    assert p["pluginSettings"]["api_key_set"] is True and "api_key" not in p["pluginSettings"]
    code, out, _ = cli("--json", "providers", "get", "Support line")
    assert code == 0 and json.loads(out)["campaign"] == "billing"
    code, out, _ = cli("providers", "validate", "Support line", "--json")
    assert code == 0 and json.loads(out)["report"]["checks"][0]["id"] == "echo.auth"


def test_cli_get_says_set_and_never_shows_the_secret(cli, mg):
    mg.create_provider(echo())
    code, out, _ = cli("providers", "get", "support line")
    assert code == 0
    assert re.search(r"^name:\s+Support line$", out, re.M) and re.search(r"^state:\s+GREEN", out, re.M)
    assert re.search(r"^cause:\s+CHECKS_PASSED$", out, re.M)
    assert re.search(r"^  api_key:\s+set$", out, re.M) and re.search(r"^  greeting:\s+hello$", out, re.M)
    assert KEY not in out


def test_cli_update_changes_exactly_the_flags_given(cli, mg):
    before = mg.create_provider(echo(campaign="billing", from_name="Old", active_reference=True))
    code, out, err = cli("providers", "update", "Support line", "--from-name", "New",
                         "--setting", "retries=2", "--no-receive-emails")
    assert code == 0, err
    assert "from_name, receive_emails, plugin_settings.retries" in out
    after = mg.get_provider(before.name)
    assert after.from_name == "New" and after.plugin_settings["retries"] == 2
    assert after.campaign == "billing" and after.active_reference  # not given: untouched
    assert after.plugin_settings["greeting"] == "hello" and after.plugin_settings["api_key_set"]

    # the secret goes through the same mask (plugin_settings.api_key), and a wrong one is refused
    code, _, err = cli("providers", "update", "Support line", "--password-stdin", stdin="wrong\n")
    assert code == 1 and "ECHO_AUTH_FAILED" in err
    assert mg.get_provider(before.name).etag == after.etag
    assert cli("providers", "update", "Support line", "--password-stdin", stdin=KEY + "\n")[0] == 0

    code, _, err = cli("providers", "update", "Support line")
    assert code == 2 and "nothing to change" in err


def test_update_flags_map_to_smtp_imap_mask_paths(mg):
    smtp = next(d for d in mg.list_drivers() if d.type == "smtp_imap")
    args = build_parser().parse_args([
        "providers", "update", "x", "--smtp-port", "465", "--smtp-security", "tls",
        "--inbound-protocol", "pop3", "--no-receive-emails", "--password-env", "MG_TEST_PW"])
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MG_TEST_PW", "s3cret")
        patch, paths = candidate.build(args, "smtp_imap", smtp, prompt=False)
    assert paths == ["receive_emails", "smtp_imap.smtp.port", "smtp_imap.smtp.security",
                     "smtp_imap.inbound_protocol", "smtp_imap.password"]
    s = patch.smtp_imap
    assert (s.smtp.port, s.smtp.security, s.inbound_protocol, s.password) == (
        465, provider_pb2.SECURITY_TLS, provider_pb2.INBOUND_PROTOCOL_POP3, "s3cret")
    assert patch.receive_emails is False and not patch.from_name  # only what the flags said


def test_cli_validate_prints_the_report_and_exits_1_on_failure(cli, mg):
    mg.create_provider(echo())
    code, out, _ = cli("providers", "validate", "Support line")
    assert code == 0
    assert out.splitlines()[0].split() == ["CHECK", "RESULT", "CODE", "TIME", "ms", "SERVER", "SAID"]
    assert re.search(r"^echo\.auth\s+PASSED\s+\d+\s+key accepted$", out, re.M)

    code, out, _ = cli("providers", "validate", "--type", "echo", "--name", "Candidate",
                       "--account", "c@example.test", "--setting", "greeting=hi",
                       "--password-stdin", stdin="nope\n")
    assert code == 1
    assert re.search(r"^echo\.auth\s+FAILED\s+AUTH_FAILED\s+\d+\s+key refused$", out, re.M)
    assert "FAILED: 1 of 1" in out
    assert [p.display_name for p in mg.list_providers()] == ["Support line"]

    code, _, err = cli("providers", "validate", "Support line", "--campaign", "x")
    assert code == 2 and "not both" in err


def test_cli_activate_and_delete(cli, mg):
    mg.create_provider(echo())
    code, out, _ = cli("providers", "activate", "Support line")
    assert code == 0 and "GREEN" in out and "echo.auth" in out
    code, out, _ = cli("providers", "delete", "Support line")
    assert code == 0 and out.startswith("deleted providers/")
    assert list(mg.list_providers()) == []
    code, _, err = cli("providers", "delete", "Support line")
    assert code == 1 and err.startswith("error: NOT_FOUND")


def test_cli_refused_create_prints_reason_and_report_and_exits_1(cli, mg):
    code, out, err = cli(*create_args(), stdin="wrong\n")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: FAILED_PRECONDITION ECHO_AUTH_FAILED: ")
    assert any(line.split()[:2] == ["CHECK", "RESULT"] for line in lines)
    assert any(re.match(r"echo\.auth\s+FAILED\s+AUTH_FAILED", line) for line in lines)
    assert "wrong" not in err

    code, _, err = cli(*create_args(), "--account", "broken@", stdin=KEY + "\n")
    assert code == 1 and err.startswith("error: INVALID_ARGUMENT")
    assert re.search(r"^  provider\.account: .*broken@", err, re.M)

    mg.create_provider(echo())
    code, _, err = cli(*create_args(), stdin=KEY + "\n")
    assert code == 1 and err.startswith("error: ALREADY_EXISTS")


def test_cli_json_errors_on_stderr(cli):
    code, out, err = cli("--json", *create_args(), stdin="wrong\n")
    assert code == 1 and out == ""
    e = json.loads(err)
    assert (e["code"], e["reason"]) == ("FAILED_PRECONDITION", "ECHO_AUTH_FAILED")
    assert e["report"]["checks"][0]["errorCode"] == "ERROR_CODE_AUTH_FAILED" and e["violations"] == {}


def test_cli_usage_errors_exit_2(cli):
    code, _, err = cli("providers", "create", "--smtp-port", "many")
    assert code == 2 and "--smtp-port" in err
    code, _, err = cli("providers", "create", "--type", "echo", "--smtp-host", "mail.example.test")
    assert code == 2 and "--smtp-host is a smtp_imap setting" in err
    code, _, err = cli("providers", "create", "--type", "echo", "--setting", "nonsense")
    assert code == 2 and "KEY=VALUE" in err


def test_cli_password_on_the_command_line_warns(cli):
    code, _, err = cli("providers", "create", "--type", "echo", "--name", "X",
                       "--account", "x@example.test", "--setting", "greeting=hi", "--password", KEY)
    assert code == 0 and "warning: --password puts the secret in your shell history" in err


def test_cli_unreachable_server_exits_3_with_a_hint(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["--server", f"127.0.0.1:{port}", "providers", "list"])
    err = capsys.readouterr().err
    assert code == 3 and err.startswith("error: UNAVAILABLE") and "mailgate serve" in err


def test_cli_drivers_table_and_schema(cli):
    code, out, _ = cli("drivers")
    assert code == 0 and out.split()[:4] == ["TYPE", "NAME", "CAN", "SOURCE"]
    assert re.search(r"^smtp_imap\s+SMTP / IMAP\s+send, receive", out, re.M)
    code, out, _ = cli("drivers", "smtp_imap")
    assert code == 0
    assert re.search(r"^inbound\.host\s+hostname\s+when receive_emails=true", out, re.M)
    assert re.search(r"^smtp\.security\s+enum\s+STARTTLS\s+STARTTLS\|TLS\|NONE", out, re.M)
    assert re.search(r"^password\s+string, secret\s+yes", out, re.M)
    code, _, err = cli("drivers", "fax")
    assert code == 1 and "no driver 'fax'" in err


def test_console_script_runs(mailgate_server, mg):
    mg.create_provider(echo())
    script = Path(sys.executable).with_name("mailgate")
    done = subprocess.run([str(script), "--server", mailgate_server.address, "providers", "list", "--json"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MAILGATE_TOKEN=mailgate_server.token))
    assert done.returncode == 0, done.stderr
    assert [p["displayName"] for p in json.loads(done.stdout)] == ["Support line"]
