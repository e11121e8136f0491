"""The address of the person behind a request: the peer (REMOTE_ADDR), or, when the peer is one of the reverse
proxies named in MTM_TRUSTED_PROXIES, the address those proxies say they were sent from.

X-Forwarded-For is read from the right: each proxy appends the address it was sent from, so the rightmost entry was
written by the peer, and an entry is believed only while the hop to its right is a trusted proxy. What a client
writes into the header itself sits to the left of the first untrusted hop and is never reached.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(request: HttpRequest) -> str | None:
    """The client's address as text, or None when the peer's address is not a valid IP."""
    current = parse_address(str(request.META.get("REMOTE_ADDR", "")))
    if current is None:
        return None
    hops = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    hops = [hop for hop in hops if hop]
    while hops and _trusted(current):
        before = parse_address(hops.pop())
        if before is None:
            break  # a trusted proxy never writes a non-address: stop at the last address known for sure
        current = before
    return str(current)


def parse_address(text: str) -> IPAddress | None:
    """An IP address as peers and proxies write it: bare, '[v6]:port' or 'v4:port', with or without a v6 zone;
    an IPv4 address mapped into IPv6 is the IPv4 address."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        # An IPv6 zone ("%eth0") is no part of the address and PostgreSQL's inet refuses it.
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress) -> bool:
    return any(address.version == network.version and address in network for network in settings.MTM_TRUSTED_PROXIES)
