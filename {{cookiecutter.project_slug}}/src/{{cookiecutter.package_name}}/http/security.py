"""Security headers on every response, error responses included."""

from __future__ import annotations

from flask import Flask
from flask.wrappers import Response

# The API serves data, never documents: nothing may load, frame or submit.
API_CSP = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": API_CSP,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


# (lower-case name, name, value): one pass over the response's headers
# decides which to add, cheaper than a look-up per name on every response.
_BY_LOWER_NAME = [(name.lower(), name, value) for name, value in HEADERS.items()]


def _add_security_headers(response: Response) -> Response:
    """Each header the response does not set itself (the docs page sets its
    own Content-Security-Policy)."""
    present = {name.lower() for name in response.headers.keys()}  # noqa: SIM118
    response.headers.extend(
        (name, value) for lower, name, value in _BY_LOWER_NAME if lower not in present
    )
    return response


def init_app(app: Flask) -> None:
    app.after_request(_add_security_headers)
