"""Field rules for providers, answered as violations named by field path.

protovalidate's .proto is not available here, so every rule lives in this one
module: the common Provider fields, then the driver's settings schema
(required, required-when, kinds, choices, integer bounds).
"""
from __future__ import annotations

import ipaddress
import re
import ssl
from typing import Any

from mailgate.drivers.addresses import address_problem
from mailgate.drivers.api import Driver, DriverContext, Kind, ProviderConfig, SettingField

from .. import limits
from ..outbound import compose
from ..errors import Violations

MAX_NAME = limits.DISPLAY_NAME
# The longest text of each kind (SettingField.max_length may say less).
_TEXT_LIMITS = {Kind.STRING: limits.SETTING_TEXT, Kind.ENUM: limits.SETTING_TEXT, Kind.HOSTNAME: 253,
                Kind.EMAIL: limits.ADDRESS, Kind.PEM: limits.PEM}
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return None
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        return f"{limits.shown(value)} is not a host name or IP address"
    return None


def pem_problem(value: str) -> str | None:
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError) as e:
        return f"not PEM certificates ({e})"
    return None


def check_limits(config: ProviderConfig, driver: Driver, v: Violations) -> None:
    """Appends to `v` every value of `config` over its limit (server/limits.py): checked
    before anything else is done with them (the driver's prepare, address parsing)."""
    for name, value, limit in (("display_name", config.display_name.strip(), MAX_NAME),
                               ("from_name", config.from_name, limits.FROM_NAME),
                               ("account", config.account, limits.ADDRESS),
                               ("campaign", config.campaign, limits.CAMPAIGN)):
        if len(value) > limit:
            v.add(name, limits.too_long(limit, len(value)))
    if len(config.reply_to) > limits.REPLY_TO:
        v.add("reply_to", f"at most {limits.REPLY_TO} addresses, got {len(config.reply_to):,}")
    for i, entry in enumerate(config.reply_to[:limits.REPLY_TO]):
        if len(entry) > limits.RECIPIENT_ENTRY:
            v.add(f"reply_to[{i}]", limits.too_long(limits.RECIPIENT_ENTRY, len(entry)))
    _check_sizes(config, driver, v)


def check_provider(config: ProviderConfig, driver: Driver, ctx: DriverContext, v: Violations) -> None:
    """Appends every violation of `config` to `v`; raises nothing itself. Limits are
    checked first: with a value over one, nothing else is looked at."""
    check_limits(config, driver, v)
    if v.items:
        return
    name = config.display_name.strip()
    if not name:
        v.add("display_name", "required")
    elif problem := compose.text_problem(name):
        v.add("display_name", problem)
    if problem := compose.text_problem(config.from_name):  # it goes into the From header
        v.add("from_name", problem)
    if not config.account:
        v.add("account", "required")
    elif problem := address_problem(config.account):
        v.add("account", f"{config.account!r} is not a valid email address: {problem}")
    elif not config.account.isascii():
        v.add("account", f"{config.account!r}: mailgate sends 7-bit mail; use the ASCII form of the address")
    for i, addr in enumerate(config.reply_to):
        if problem := compose.entry_problem(addr):
            v.add(f"reply_to[{i}]", problem)
    if problem := compose.text_problem(config.campaign):
        v.add("campaign", problem)
    if config.receive_emails and not driver.capabilities.receive:
        v.add("receive_emails", f"the {driver.type} driver cannot receive mail")
    for f in driver.settings_schema:
        _check_setting(f, config, v)
    if not v.items:
        for path, problem in driver.problems(config, ctx):
            v.add(path, problem)


def _check_sizes(config: ProviderConfig, driver: Driver, v: Violations) -> None:
    """The limits of every setting given, in the schema or not (what the schema does not
    know is stored too): how many there are, each text's length, each list's entries."""
    fields = {f.path: f for f in driver.settings_schema}
    leaves = [(f"settings.{p}", value) for p, value in _leaves(config.settings)]
    leaves += [(f"secrets.{p}", value) for p, value in config.secrets.items()]
    if len(leaves) > limits.SETTINGS:
        v.add("settings", f"at most {limits.SETTINGS} values, got {len(leaves):,}")
        return
    for path, value in leaves:
        f = fields.get(path.partition(".")[2])
        if path.startswith("secrets."):
            limit = min(limits.SECRET, f.max_length or limits.SECRET) if f else limits.SECRET
        elif f is None or f.kind is Kind.STRING_LIST:
            limit = limits.SETTING_TEXT
        else:
            limit = min(_TEXT_LIMITS.get(f.kind, limits.SETTING_TEXT), f.max_length or limits.PEM)
        if isinstance(value, str) and len(value) > limit:
            v.add(path, limits.too_long(limit, len(value)))
        elif isinstance(value, list) and len(value) > limits.LIST_ENTRIES:
            v.add(path, f"at most {limits.LIST_ENTRIES} entries, got {len(value):,}")
        elif isinstance(value, list) and any(isinstance(e, str) and len(e) > limits.LIST_ENTRY for e in value):
            i = next(i for i, e in enumerate(value) if isinstance(e, str) and len(e) > limits.LIST_ENTRY)
            v.add(f"{path}[{i}]", limits.too_long(limits.LIST_ENTRY, len(value[i])))


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items() if isinstance(tree, dict) else ():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _leaves(value, path + ".")
        else:
            out.append((path, value))
        if len(out) > limits.SETTINGS:
            break
    return out


def check_secrets_bound(driver: Driver, stored: ProviderConfig, changed: set[str], given: set[str],
                        v: Violations) -> None:
    """A stored secret goes only to the servers it was given for: a change of where
    it is presented (its field's `bound_to`) needs the secret again (`given`)."""
    for f in driver.settings_schema:
        if not f.secret or f.path in given or not stored.secrets.get(f.path):
            continue
        moved = sorted(p for p in changed if any(p == b or p.startswith(b + ".") for b in f.bound_to))
        if moved:
            v.add(f"secrets.{f.path}",
                  f"{', '.join(moved)} changed: a stored {f.label.lower()} is presented only to the "
                  f"server it was given for; give it again in the same request")


def _check_setting(f: SettingField, config: ProviderConfig, v: Violations) -> None:
    value = (config.secrets.get(f.path) if f.secret else get_path(config.settings, f.path))
    path = ("secrets." if f.secret else "settings.") + f.path
    if value in (None, "", []):
        if f.required:
            v.add(path, "required")
        elif f.required_when and all(_lookup(config, k) == want for k, want in f.required_when.items()):
            cond = " and ".join(f"{k} is {_show(want)}" for k, want in f.required_when.items())
            v.add(path, f"required when {cond}")
        return
    problem = _kind_problem(f, value)
    if problem:
        v.add(path, problem)


def _kind_problem(f: SettingField, value: Any) -> str | None:
    if f.kind is Kind.INTEGER:
        # bool is an int in Python; a Struct carries numbers as floats
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            return f"must be a whole number, got {limits.shown(value)}"
        lo, hi = f.minimum, f.maximum
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"must be between {lo} and {hi}, got {int(value)}"
        return None
    if f.kind is Kind.BOOLEAN:
        return None if isinstance(value, bool) else f"must be true or false, got {limits.shown(value)}"
    if f.kind is Kind.STRING_LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"must be a list of texts, got {limits.shown(value)}"
        bad = next((v for v in value if not v.strip() or len(v) > limits.LIST_ENTRY or not v.isprintable()), None)
        if bad is not None:
            return f"{limits.shown(bad)}: each entry must be 1 to {limits.LIST_ENTRY} printable characters"
        if len(set(value)) != len(value):
            return "lists an entry twice"
        return None
    if not isinstance(value, str):
        return f"must be text, got {limits.shown(value)}"
    if f.kind is Kind.ENUM and value not in f.choices:
        return f"must be one of {', '.join(f.choices)}, got {limits.shown(value)}"
    if f.kind is Kind.STRING and f.secret:
        if any(c in value for c in "\r\n\0"):
            return "must not contain CR, LF or NUL: it could not be sent in an SMTP or IMAP command"
        return None
    if f.kind is Kind.STRING:
        # A text setting is one line: a user name with CR or LF would end an SMTP or IMAP command.
        return compose.text_problem(value)
    if f.kind is Kind.HOSTNAME:
        return host_problem(value)
    if f.kind is Kind.EMAIL:
        return address_problem(value)
    if f.kind is Kind.PEM:
        return pem_problem(value)
    return None


def _lookup(config: ProviderConfig, path: str) -> Any:
    if "." not in path:
        return getattr(config, path)
    return get_path(config.settings, path)


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def get_path(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def set_path(tree: dict, path: str, value: Any) -> None:
    """Sets (or, with value None, removes) a dotted path in nested dicts."""
    *parents, leaf = path.split(".")
    for part in parents:
        nxt = tree.get(part)
        if not isinstance(nxt, dict):
            if value is None:
                return
            nxt = tree[part] = {}
        tree = nxt
    if value is None:
        tree.pop(leaf, None)
    else:
        tree[leaf] = value


def copy_tree(tree: Any) -> Any:
    """A copy of nested dicts (settings), leaves shared."""
    return {k: copy_tree(v) for k, v in tree.items()} if isinstance(tree, dict) else tree
