"""A private Dovecot (IMAP, POP3, LMTP) for the tests, started as a subprocess.

Each :class:`Dovecot` is its own instance: own config, ``base_dir``, ``state_dir``,
``instance_name`` and log, listening on free ports of 127.0.0.1 only. It never touches
the system Dovecot (/etc/dovecot, /run/dovecot) and must never be left running: the
whole process group is killed on :meth:`Dovecot.stop`, at garbage collection or
interpreter exit (weakref.finalize), and by the kernel if the test process dies
(PR_SET_PDEATHSIG on the master).

Settings this needed, found by trying them (Dovecot 2.3.19, tests running as root):

* Mail processes may not run as root: a userdb uid of 0 gives "userdb returned 0 as
  uid", ``mail_uid = root`` with ``first_valid_uid = first_valid_gid = 0`` still gives
  "Mail access not allowed for root". So mail belongs to ``nobody:nogroup`` (present on
  every Debian; uid 65534 passes the default first_valid_uid = 500 check).
  The login and auth processes keep the package's defaults (``dovenull``, ``dovecot``).
* Those unprivileged users must be able to reach the passwd-file (read by the auth
  process as ``dovecot``) and the Maildirs (``nobody``). pytest's tmp directories are
  0700 root, so both live in a separate :func:`tempfile.mkdtemp` directory made
  traversable (0711), linked as ``<directory>/data`` and removed by :meth:`close`.
* Failed logins: ``auth_failure_delay = 0`` is not enough in 2.3.19, the auth process
  still holds every failure for its 500 ms flush timer. Only the passdb extra field
  ``nodelay`` answers at once, and a failing passdb drops its own extra fields, so a
  first ``static`` passdb with ``noauthenticate nodelay=yes`` sets the field without
  authenticating anybody (wrong or empty passwords and unknown users still fail; see
  tests/test_servers.py). The anvil-auth-penalty listener with ``mode = 0`` disables
  the per-IP penalty (1.6 s, 6 s, 10 s+ after repeated failures) as a second guard.
  A failed LOGIN is then answered in <1 ms instead of ~0.5 s.
* The passwd-file is checked at most once per wall-clock second: set_users() and
  add_user() wait for the next second so the change is seen at once.
* With ``client_limit`` (many sessions per imap process), IDLE sessions of the same
  user in one process are not all woken by inotify; ``mailbox_idle_check_interval
  = 1 secs`` makes every IDLE session see new mail within ~1 s.
* LMTP prepends ``Return-Path: <sender>`` to every message (not configurable in 2.3);
  the Received and Delivered-To headers are switched off, so :meth:`deliver` stores
  exactly ``b"Return-Path: <sender>\\r\\n" + raw``. :meth:`append` stores ``raw``.
* ``mail_max_userip_connections`` (default 10 per user and IP) is raised: every test
  client comes from 127.0.0.1.
* XOAUTH2 / OAUTHBEARER (``oauth2_introspection_url``, e.g. an OAuthServer's
  ``introspection_uri``): oauth2 passdbs in ``introspection_mode = post`` ("get" and
  "auth" turn a bad token into "[UNAVAILABLE] Temporary authentication failure"
  instead of AUTHENTICATIONFAILED); the passwd-file passdb is limited to PLAIN and
  LOGIN so a token is never compared with a password. Dovecot 2.3.19 checks the
  answer in this order: ``active_attribute`` (absent = accepted, another value =
  "not valid"), then ``username_attribute`` (absent = internal failure, i.e.
  UNAVAILABLE), expanded with ``username_format`` on both sides (login user,
  returned value) and compared. The first passdb matches the token's user
  (``%Lu``, case-blind); the second takes app-only tokens (answer with ``app_only``
  true) for any mailbox: its username_format is a constant. An introspection server
  must therefore put ``app_only`` (true or false) in every answer, inactive ones
  too, or the second passdb fails them as internal errors. Introspection URLs are
  not variable-expanded and the login user is not sent. A refused token takes
  ~40 ms (two introspections), answered AUTHENTICATIONFAILED.
* Stopping: SIGTERM to the master alone takes ~1 s; SIGTERM to the process group
  and SIGKILL for the master once its children are gone takes ~20 ms (_kill_group).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path

from imapclient import IMAPClient

from .certs import TestCA
from .silent import free_ports  # noqa: F401 (also importable from here)

__all__ = ["Dovecot", "DovecotError", "ensure_installed"]

# Mail files belong to this user (see module docstring: not root).
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"

# Dovecot 2.3.19's post-login capabilities without IDLE, for imap_idle=False. An
# explicit imap_capability replaces the list (login and post-login) instead of
# filtering it, so the default list is spelled out here.
CAPABILITIES_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT "
    "CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH "
    "ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY "
    "PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
)

START_TIMEOUT = 10.0
_PORT_NAMES = ("imap_port", "imaps_port", "pop3_port", "pop3s_port", "lmtp_port")
_counter = itertools.count(1)


class DovecotError(RuntimeError):
    """Dovecot is missing, did not start, or refused an operation."""


def ensure_installed() -> str:
    """Path of the ``dovecot`` binary, or a clear error telling how to install it."""
    path = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    libexec = [d for d in ("/usr/lib/dovecot", "/usr/libexec/dovecot") if os.path.isdir(d)]
    missing = [p for p in ("imap", "pop3", "lmtp")
               if libexec and not any(os.path.exists(f"{d}/{p}") for d in libexec)]
    if path is None or missing:
        what = "the `dovecot` binary" if path is None else f"Dovecot's {', '.join(missing)}"
        raise DovecotError(
            "The tests need Dovecot (dovecot-imapd, dovecot-pop3d, dovecot-lmtpd) but "
            f"{what} was not found. Run `scripts/setup` (as root).")
    if os.geteuid() != 0:
        # Untested without root: mail must belong to another user than the one
        # running the tests, and the instance uses the package's system users.
        raise DovecotError("The test Dovecot must be started as root.")
    return path


def _check_credential(value: str, what: str) -> None:
    # The passwd-file format is colon-separated lines.
    if not value or any(c in value for c in ":\n\r\t"):
        raise ValueError(f"{what} {value!r} cannot go into a passwd-file")


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, split after ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def _kill_group(proc: subprocess.Popen, owner_pid: int) -> None:
    """Stop the instance in ~10 ms and leave nothing behind.

    SIGTERM goes to the whole process group: the children (imap, login, auth...)
    exit within ~20 ms, imap sessions get "* BYE Server shutting down". The master
    then sometimes idles ~1 s before exiting (and SIGTERM to the master alone takes
    ~1 s), so once its children are gone it gets SIGKILL. Waiting for every member
    matters: a dying child still holding a listening socket would make the next
    start() wait in bind().
    """
    if os.getpid() != owner_pid:
        return  # a forked copy of the test process exiting: not its Dovecot
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while (set(_live_members(pgid)) - {pgid}) and time.monotonic() < deadline:
        time.sleep(0.005)
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        if not _live_members(pgid):
            return
        time.sleep(0.005)


# Looked up here, not in the forked child (no dlopen between fork and exec).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the Dovecot master if the test process dies without
    running its exit handlers (kill -9, os._exit). The children notice that the
    master is gone and exit on their own."""
    PR_SET_PDEATHSIG = 1
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Dovecot:
    """A private Dovecot instance serving ``users`` (login -> password).

    Use as a context manager, or ``start()`` / ``stop()`` / ``close()``. Ports are
    chosen in ``__init__`` and kept across :meth:`restart`.
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path | str, users: dict[str, str], ca: TestCA, *,
                 imap_idle: bool = True, client_limit: int | None = None,
                 oauth2_introspection_url: str | None = None):
        self.directory = Path(directory)
        self.oauth2_introspection_url = oauth2_introspection_url
        self.ca = ca
        self.imap_idle = imap_idle
        self.client_limit = client_limit
        self.instance_name = f"mailgate-test-{os.getpid()}-{next(_counter)}"
        (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port,
         self.lmtp_port) = free_ports(len(_PORT_NAMES), self.host)
        self.config_path = self.directory / "dovecot.conf"
        self.log_path = self.directory / "dovecot.log"
        self._stderr_path = self.directory / "dovecot.stderr"
        self.data_dir: Path | None = None  # made on first start(), see module docstring
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # users file writes
        self.users: dict[str, str] = {}
        self.set_users(users)  # checks them; the file is written at start()

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start Dovecot and wait until every port accepts connections."""
        if self.running:
            return
        binary = ensure_installed()
        self._prepare_files()
        # A master killed by stop() can leave its dotlock on state/instances; the next
        # master would then wait ~12 s for it to go stale before it serves anyone.
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "state" / "instances.lock").unlink()
        with open(self._stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True,  # own process group, killed as a whole
                # PDEATHSIG follows the thread that forked: only safe from the main one.
                preexec_fn=(_die_with_parent
                            if threading.current_thread() is threading.main_thread()
                            else None),
            )
        # Runs on stop(), garbage collection and interpreter exit, whichever is first.
        self._kill = weakref.finalize(self, _kill_group, self._proc, os.getpid())
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the whole process group; keep config, mail and ports for start()."""
        if self._proc is not None:
            self._kill()
            self._proc = None

    def kick(self, user: str) -> None:
        """Disconnect every session of `user` (doveadm kick), as a server does when it
        ends a session; the server itself keeps running."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        done = subprocess.run([doveadm, "-c", str(self.config_path), "kick", user],
                              capture_output=True, text=True, timeout=10)
        if done.returncode not in (0, 68):  # 68: nobody to kick
            raise DovecotError(f"doveadm kick {user} failed: {done.stderr.strip()}")

    def sessions(self, user: str | None = None, protocol: str = "imap") -> int:
        """Sessions logged in now (of `user`, or of everyone), as Dovecot counts them
        (doveadm who): the server's view, not the client's."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        done = subprocess.run([doveadm, "-c", str(self.config_path), "who", "-1", *([user] if user else [])],
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise DovecotError(f"doveadm who failed: {done.stderr.strip()}")
        rows = [line.split() for line in done.stdout.splitlines()[1:]]  # the first line is a header
        return sum(1 for row in rows if len(row) >= 2 and row[1] == protocol)

    def restart(self) -> None:
        """Stop and start again on the same ports (clients see their connections
        drop, as with a server restart); mail and users are kept."""
        self.stop()
        self.start()

    def close(self) -> None:
        """stop() and delete the mail and users data."""
        self.stop()
        if self.data_dir is not None:
            self._remove_data()
            self.data_dir = None
            with contextlib.suppress(FileNotFoundError):
                (self.directory / "data").unlink()

    # -- users and mail ------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        """Add a user or change a password (takes up to 1 s, see set_users)."""
        self.set_users({**self.users, user: password})

    def set_users(self, users: dict[str, str]) -> None:
        """Replace the users (login -> password). Takes up to 1 s when running: the
        auth process checks the passwd-file at most once per wall-clock second (and
        re-reads it when its size or mtime in whole seconds changed), so this waits
        for the next second, after which every login sees the change."""
        for user, password in users.items():
            _check_credential(user, "user")
            _check_credential(password, "password")
        self.users = dict(users)
        if self.data_dir is not None:
            self._write_users()
            if self.running:
                now = time.time()
                time.sleep(int(now) + 1 - now + 0.01)

    def clear(self) -> None:
        """Empty every user's mail: INBOX expunged, other folders deleted. Open
        sessions see the expunges as usual."""
        for user in self.users:
            client = self._imap(user)
            try:
                names = [name for _, _, name in client.list_folders()]
                # Children before parents.
                for name in sorted(names, key=len, reverse=True):
                    if name.upper() != "INBOX":
                        client.delete_folder(name)
                client.select_folder("INBOX")
                uids = client.search()
                if uids:
                    client.delete_messages(uids)
                    client.expunge()
            finally:
                client.logout()

    def deliver(self, user: str, raw: bytes, *, sender: str = "sender@example.test") -> None:
        """Deliver ``raw`` (use CRLF line ends) to ``user``'s INBOX over LMTP, as new
        mail arrives. Dovecot prepends ``Return-Path: <sender>\\r\\n``."""
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            refused = lmtp.sendmail(sender, [user], raw)
        if refused:  # only with several recipients; kept for clarity
            raise DovecotError(f"LMTP refused {refused}")

    def _imap(self, user: str) -> IMAPClient:
        client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=10)
        client.login(user, self.users[user])
        return client

    def append(self, user: str, raw: bytes, folder: str = "INBOX", *,
               flags: tuple = ()) -> int | None:
        """Store ``raw`` unchanged in ``folder`` (created if missing) with IMAP APPEND;
        returns the new UID."""
        client = self._imap(user)
        try:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            reply = client.append(folder, raw, flags=flags)
        finally:
            client.logout()
        m = re.search(rb"APPENDUID \d+ (\d+)", reply or b"")
        return int(m.group(1)) if m else None

    def fetch_all(self, user: str, folder: str = "INBOX") -> dict[int, bytes]:
        """All messages of ``folder`` as {uid: raw bytes}, without setting \\Seen."""
        client = self._imap(user)
        try:
            client.select_folder(folder, readonly=True)
            uids = client.search()
            data = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        finally:
            client.logout()
        return {uid: d[b"BODY[]"] for uid, d in data.items()}

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self._stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no Dovecot output)"

    # -- internals ------------------------------------------------------------------

    def _prepare_files(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="mailgate-dovecot-"))
            self._remove_data = weakref.finalize(
                self, shutil.rmtree, self.data_dir, ignore_errors=True)
            self.data_dir.chmod(0o711)  # traversable by dovecot/nobody, not listable
            mail = self.data_dir / "mail"
            mail.mkdir(mode=0o700)
            shutil.chown(mail, MAIL_USER, MAIL_GROUP)
            link = self.directory / "data"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(self.data_dir)
            self._write_users()
        if self.oauth2_introspection_url is not None:
            self._write_oauth2_args()
        self.config_path.write_text(self._config())
        # A master killed by SIGKILL leaves its pid file; if that pid is reused by
        # then, Dovecot would refuse to start ("already running").
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "run" / "master.pid").unlink()

    def _write_users(self) -> None:
        # Fields: user:password:uid:gid:gecos:home:shell:extra (uid, home from userdb
        # defaults). Written to a new file and renamed: the auth process never sees
        # half a file.
        text = "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items())
        assert self.data_dir is not None
        path = self.data_dir / "users"
        with self._lock:
            tmp = self.data_dir / "users.tmp"
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)

    def _write_oauth2_args(self) -> None:
        # Two oauth2 passdbs on the same introspection URL (see the module
        # docstring, XOAUTH2 and OAUTHBEARER): one for tokens of a user, one for
        # app-only tokens, whose answer has "app_only": true and no user to match.
        assert self.data_dir is not None
        common = ("introspection_mode = post\n"
                  f"introspection_url = {self.oauth2_introspection_url}\n"
                  "username_attribute = username\n")
        files = {
            "oauth2.conf.ext": common + (
                "username_format = %Lu\n"
                "active_attribute = active\n"
                "active_value = true\n"),
            "oauth2-app-only.conf.ext": common + (
                # A constant: both sides expand to it, whoever logs in.
                "username_format = app-only\n"
                "active_attribute = app_only\n"
                "active_value = true\n"),
        }
        for name, text in files.items():
            path = self.data_dir / name
            path.write_text(text)
            path.chmod(0o644)

    def _config(self) -> str:
        d, data = self.directory, self.data_dir
        imap_service = imap_login_limits = ""
        if self.client_limit is not None:
            # Many sessions per imap process (service_count = 0 reuses processes;
            # the default is one process per session). Each imap process takes an
            # inotify instance, and Linux allows 128 per user by default; past that
            # Dovecot falls back to polling. The login processes go to
            # "high-performance" mode too: with implicit TLS each session keeps its
            # login process as TLS proxy, and one process per session would hit
            # process_limit (100). Checked: 1500 sessions (half TLS) log in in ~6 s.
            n = self.client_limit
            imap_service = f"""
service imap {{
  service_count = 0
  client_limit = {n}
  process_limit = 4
  vsz_limit = 0
}}"""
            imap_login_limits = f"""
  service_count = 0
  client_limit = {n}
  process_min_avail = 2
  vsz_limit = 0"""
        capability = "" if self.imap_idle else f"imap_capability = {CAPABILITIES_WITHOUT_IDLE}"
        mechanisms, password_mechanisms, oauth2_passdb = "plain login", "", ""
        if self.oauth2_introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            # Tokens are not passwords: the passwd-file only checks PLAIN/LOGIN.
            password_mechanisms = "\n  mechanisms = plain login"
            oauth2_passdb = "".join(f"""
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {data}/{name}
}}""" for name in ("oauth2.conf.ext", "oauth2-app-only.conf.ext"))
        return f"""# Generated by mailgate.testing.servers.dovecot: a private test instance.
instance_name = {self.instance_name}
base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log_path}
log_timestamp = "%H:%M:%S.%{{usecs}} "
listen = {self.host}
protocols = imap pop3 lmtp

ssl = yes
ssl_cert = <{self.ca.cert_path}
ssl_key = <{self.ca.key_path}

# Plaintext login on the plain ports (security NONE tests). Loopback counts as
# secured for Dovecot anyway.
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
{capability}

mail_location = maildir:~/Maildir
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
mail_fsync = never
# IDLE learns of new mail from inotify, but with client_limit several sessions of
# one user in one imap process are not all woken; polling every second (default
# 30 s) makes every session see new mail within ~1 s.
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 100000

lmtp_add_received_header = no
lmtp_hdr_delivery_address = none

# Sets "nodelay" without authenticating (see module docstring).
passdb {{
  driver = static
  args = noauthenticate nodelay=yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {data}/users{password_mechanisms}
}}{oauth2_passdb}
userdb {{
  driver = passwd-file
  args = {data}/users
  default_fields = home={data}/mail/%u
}}

service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}{imap_login_limits}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self.lmtp_port}
  }}
}}{imap_service}
"""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        pending = [getattr(self, name) for name in _PORT_NAMES]
        probes = sum(1 for name in _PORT_NAMES if name != "lmtp_port")  # each logs a "-login: " line
        while pending:
            if self._proc is None or self._proc.poll() is not None:
                raise DovecotError(f"Dovecot exited at start-up:\n{self.log_tail()}")
            try:
                socket.create_connection((self.host, pending[0]), timeout=1).close()
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"Dovecot did not listen on port {pending[0]} within "
                    f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}")
            time.sleep(0.01)
        # The log process writes the readiness probes' lines a little later: wait for them,
        # so that a test counting connections from the log counts only its own.
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(logged)
                if f.read().count(b"-login: ") >= probes:
                    return
            time.sleep(0.01)


