"""The GraphiQL page: vendored assets by same-origin URL, and a Content-Security-Policy
that lets the browser load nothing from anywhere else."""

from __future__ import annotations

import functools
import secrets
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse

from jobql.http.graphiql.assets import assets

# GraphiQL sets style attributes, so styles need 'unsafe-inline'; scripts are the vendored
# files and the page's own inline script, which carries a per-response nonce. connect-src
# 'self' covers ws(s):// to this host as well.
_POLICY = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Load order: React before ReactDOM before GraphiQL (the UMD builds read each other's globals).
_SCRIPTS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphql-ws.min.js",
)
_STYLES = ("graphiql.min.css",)


@functools.cache
def _template() -> str:
    html = resources.files(__package__).joinpath("page.html").read_text("utf-8")
    files = assets()
    styles = "\n".join(
        f'    <link rel="stylesheet" href="{files[name].path}" />' for name in _STYLES
    )
    scripts = "\n".join(f'    <script src="{files[name].path}"></script>' for name in _SCRIPTS)
    return html.replace("{{styles}}", styles).replace("{{scripts}}", scripts)


def render_page(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    return HTMLResponse(
        _template().replace("{{nonce}}", nonce),
        headers={
            "Content-Security-Policy": _POLICY.format(nonce=nonce),
            # A fresh nonce per response: never serve a cached copy.
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
