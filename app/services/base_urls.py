"""The base-URL policy for providers (SPEC section 4): normalisation and SSRF refusal.

Used by provider create/update and by the outbound HTTP client, so both refuse the same hosts.
"""

from __future__ import annotations

from app.errors import InvalidInput

INVALID_BASE_URL = "Invalid provider base URL."


def normalize_base_url(raw: str | None, allowlist: str = "") -> str:
    """Return the normalised base URL ('' means the type's default endpoint).

    :raise InvalidInput: "Invalid provider base URL." with a detail saying why.
    """
    value = (raw or "").strip()
    if not value:
        return ""
    if not value.startswith(("http://", "https://")):
        raise InvalidInput(INVALID_BASE_URL, detail="Use an http or https URL.", field="base_url")
    return value.rstrip("/")
