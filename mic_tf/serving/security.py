"""The service's exposure rules: loopback by default, an API key for anything wider."""

from __future__ import annotations

import hmac
import ipaddress

from mic_tf.serving.errors import ServingConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuses to serve beyond this machine without an API key guarding the writes."""
    if not is_loopback(host) and not api_key:
        raise ServingConfigError(f"--host={host} is not a loopback address: set --api_key (or "
                                 f"$MIC_API_KEY) so that events and admin routes need a key")


def key_matches(given: str | None, expected: str | None) -> bool:
    """True when no key is configured, or `given` equals it (constant-time comparison)."""
    if not expected:
        return True
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())
