"""``/api/docs``: Swagger UI for the API's OpenAPI document.

Its scripts and styles come from an installed package (offapi, spectree's
offline bundle), served by this blueprint, never from a CDN: the page works
offline and its Content-Security-Policy allows this origin alone.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Flask, abort, render_template
from flask.typing import ResponseReturnValue
from flask.wrappers import Response

from ..openapi import TITLE

bp = Blueprint(
    "apidocs",
    __name__,
    url_prefix="/api/docs",
    template_folder="templates",
    static_folder="static",
)

# The only files served from the package, each with its type.
ASSETS = {
    "swagger_bundle.js": "text/javascript",
    "swagger_preset.js": "text/javascript",
    "swagger_style.css": "text/css",
}
# Swagger UI sets inline styles and shows data: images; nothing else loads.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


@bp.get("")
def page() -> ResponseReturnValue:
    response = Response(
        render_template("apidocs.html", title=TITLE), mimetype="text/html"
    )
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/assets/<name>")
def asset(name: str) -> ResponseReturnValue:
    if name not in ASSETS:
        abort(404)
    body = (resources.files("offapi") / name).read_bytes()
    response = Response(body, mimetype=ASSETS[name])
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    return response


def init_app(app: Flask) -> None:
    """Serve the page where the config allows it (``API_DOCS``)."""
    if app.config["API_DOCS"]:
        app.register_blueprint(bp)
