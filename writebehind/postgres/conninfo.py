"""What libpq refuses in a conninfo before it tries any server, found when the sink is built.

libpq reports these only when a connection is attempted, as a connection failure without a
SQLSTATE, which the queue would take for an outage and retry until ``max_retry_time``.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["conninfo_problem", "without_secrets"]

# The values libpq accepts for the options whose values it checks before connecting.
_CHOICES = {
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "load_balance_hosts": ("disable", "random"),
}


def _count(value: object) -> int:
    return len(str(value).split(","))


def conninfo_problem(conninfo: str) -> str | None:
    """Why libpq would refuse ``conninfo`` without trying a server (its syntax, an option's
    value, a list of ports that does not match the hosts), or None."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        return str(error)
    for name, choices in _CHOICES.items():
        value = params.get(name)
        if value is not None and str(value) not in choices:
            return f"invalid {name} value {str(value)!r}; libpq takes {', '.join(choices)}"
    hosts = [_count(params[name]) for name in ("host", "hostaddr") if params.get(name)]
    if len(hosts) == 2 and hosts[0] != hosts[1]:
        return f"{hosts[0]} host names for {hosts[1]} hostaddr values: give as many of each"
    port = params.get("port")
    if hosts and port and 1 < _count(port) != hosts[0]:
        return f"{_count(port)} port numbers for {hosts[0]} hosts: give one port, or one per host"
    return None


_SECRETS = ("password", "sslpassword")


def without_secrets(conninfo: str) -> str:
    """``conninfo`` as it may be shown (in a repr, a log line): its passwords left out."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(a conninfo libpq cannot parse)"
    return make_conninfo("", **{k: v for k, v in params.items() if k not in _SECRETS and v})
