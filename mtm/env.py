"""Small typed readers for the environment; a bad value stops start-up with a message that names it."""

from __future__ import annotations

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def env_list(name: str, sep: str = ",") -> list[str]:
    raw = os.environ.get(name, "")
    return [part.strip() for part in raw.split(sep) if part.strip()]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    """Addresses and networks (CIDR) separated by ',' or, like PATH, by ':' ('10.0.0.1:192.168.0.0/16'). An entry
    with ':' that is an IPv6 address or network stays whole, so '::1,fd00::/8' reads as two."""
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        pieces = [entry] if _network(entry) is not None else [p.strip() for p in entry.split(":") if p.strip()]
        for piece in pieces:
            network = _network(piece)
            if network is None:
                raise ImproperlyConfigured(
                    f"{name}={raw!r}: {piece!r} is not an IP address or network; give addresses or networks such "
                    "as 10.0.0.1 or 172.16.0.0/12, separated by ',' or ':'."
                )
            networks.append(network)
    return tuple(networks)


def _network(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def env_networks(name: str) -> tuple[IPNetwork, ...]:
    return parse_networks(name, os.environ.get(name, ""))
