"""The network policy: which addresses mailgate connects to when a caller names a
mail server (checking, activating, sending, watching).

A host is resolved once and only an allowed address is connected to, so a name
that resolves to a refused address (or is re-pointed between the check and the
connection) cannot reach it. Rules are CIDR prefixes in two lists; for an
address the longest matching prefix decides, `allow` winning a tie, and an
address no rule matches is allowed. The default denies what no mail server of a
company should be: loopback, link-local (cloud metadata services live at
169.254.169.254), unspecified, multicast and reserved addresses; private
networks (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed, since a company's
mail servers are often there. To allow only some networks:

    MAILGATE_NETWORK_DENY=0.0.0.0/0,::/0  MAILGATE_NETWORK_ALLOW=10.20.0.0/16
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

DEFAULT_DENY = ("127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10",
                "224.0.0.0/4", "ff00::/8", "240.0.0.0/4")


class Refused(OSError):
    """No address of the host may be connected to."""


@dataclass(frozen=True)
class NetworkPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allow: str | Iterable[str] = "", deny: str | Iterable[str] | None = None) -> NetworkPolicy:
        """From CIDR lists (comma-separated text or items); `deny` None: DEFAULT_DENY.
        Raises ValueError naming a bad entry."""
        def networks(items: str | Iterable[str], what: str) -> tuple[Network, ...]:
            parts = items.split(",") if isinstance(items, str) else list(items)
            out = []
            for part in (p.strip() for p in parts):
                if not part:
                    continue
                try:
                    out.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise ValueError(f"MAILGATE_NETWORK_{what}: {part!r} is not an address or CIDR prefix "
                                     "(e.g. 10.0.0.0/8, 2001:db8::/32)") from None
            return tuple(out)
        return cls(networks(allow, "ALLOW"), networks(DEFAULT_DENY if deny is None else deny, "DENY"))

    def refuses(self, address: Address) -> Network | None:
        """The deny rule that refuses `address`, or None if it is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        best: tuple[int, bool, Network] | None = None
        for allowed, rules in ((True, self.allow), (False, self.deny)):
            for net in rules:
                if address.version == net.version and address in net:
                    rank = (net.prefixlen, allowed)
                    if best is None or rank > best[:2]:
                        best = (*rank, net)
        return best[2] if best is not None and not best[1] else None

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """socket.create_connection, to the allowed addresses of `host` only."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed, refused = [], []
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            rule = self.refuses(address)
            (refused if rule else allowed).append((info, address, rule))
        if not allowed:
            shown = ", ".join(sorted({f"{a} ({r})" for _, a, r in refused}))
            raise Refused(f"the network policy refuses {host}: it resolves to {shown} "
                          "(see MAILGATE_NETWORK_ALLOW / MAILGATE_NETWORK_DENY)")
        error: OSError | None = None
        for (family, type_, proto, _, sockaddr), _, _ in allowed:
            sock = socket.socket(family, type_, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                error = e
        assert error is not None
        raise error


# Until the server sets its own (server.app), nothing is refused: the transport is a library too.
policy = NetworkPolicy()


def use(new: NetworkPolicy) -> NetworkPolicy:
    """Makes `new` the process's policy; returns the one it replaces."""
    global policy
    old, policy = policy, new
    return old
