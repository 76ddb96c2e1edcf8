"""Cross-origin access to ``/api/`` for browser apps on other origins.

Off unless ``CORS_ORIGINS`` lists origins (``config.validate_cors`` checks
them at start-up). Then, for ``/api/`` only, a request whose ``Origin`` is
on the list gets ``Access-Control-Allow-Origin`` with that origin, on
answers and errors alike (a browser app must be able to read a 401 or a
429), and a preflight gets the methods, the request headers the API reads
(``Authorization`` among them) and ``CORS_MAX_AGE``. Other origins, requests
without ``Origin`` and every other path get no CORS header at all.
``X-Request-ID``, ``Location`` and ``Retry-After`` are exposed to scripts.

Bearer tokens need no credentials mode: ``CORS_ALLOW_CREDENTIALS`` (cookies,
HTTP authentication) stays off unless a client really needs it, and never
goes with ``*``.
"""

from __future__ import annotations

from flask import Flask, request
from flask.wrappers import Response
from flask_cors import CORS

API_PATHS = r"/api/.*"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
EXPOSE_HEADERS = ["X-Request-ID", "Location", "Retry-After"]

cors = CORS()


def _vary_on_origin(response: Response) -> Response:
    # The answer depends on Origin whether or not it matched: say so to caches.
    if request.path.startswith("/api/"):
        response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    """Allow ``CORS_ORIGINS`` to call ``/api/``; nothing when it is empty."""
    origins: list[str] = app.config["CORS_ORIGINS"]
    if not origins:
        return
    wildcard = origins == ["*"]
    cors.init_app(
        app,
        resources=API_PATHS,
        origins=origins,
        methods=METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        supports_credentials=app.config["CORS_ALLOW_CREDENTIALS"],
        max_age=app.config["CORS_MAX_AGE"],
        # "*" itself rather than each caller's origin echoed back.
        send_wildcard=wildcard,
        # Nothing for requests without Origin (flask-cors would list origins).
        always_send=False,
        # Vary: Origin on every /api/ answer, matched or not (below).
        vary_header=False,
        # Flask runs after-request hooks on error responses already.
        intercept_exceptions=False,
    )
    app.after_request(_vary_on_origin)
