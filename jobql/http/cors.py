"""CORS for browser apps on other origins: Starlette's CORSMiddleware, configured from the
one origin allowlist that WebSocket handshakes are checked against too."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from jobql.settings import Settings

ALLOW_METHODS = ("GET", "POST", "OPTIONS")
# What GraphQL clients send besides the CORS-safelisted headers: ours, Apollo Client's
# client awareness and the CSRF-prevention headers Apollo documents, and the trace headers
# browser tracing SDKs add (urql and graphql-request send only Accept and Content-Type).
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Idempotency-Key",
    "X-Request-ID",
    # graphql-sse resends it on reconnect to resume a stream after that event.
    "Last-Event-ID",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "apollographql-client-name",
    "apollographql-client-version",
    "graphql-client-name",
    "graphql-client-version",
    "traceparent",
    "tracestate",
    "baggage",
)
# Response headers a page may read besides the safelisted ones (Content-Type and such).
EXPOSE_HEADERS = (
    "Retry-After",
    "X-Request-ID",
    "RateLimit",
    "RateLimit-Policy",
    # An API version being retired (jobql/http/deprecation.py).
    "Deprecation",
    "Sunset",
    "Link",
)


def cors_middleware(settings: Settings) -> Middleware:
    origins = settings.allowed_origins
    if settings.cors_allow_credentials and "*" in origins:
        raise ValueError('cors_allow_credentials needs listed origins, not "*"')
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=EXPOSE_HEADERS,
        max_age=settings.cors_max_age_seconds,
    )
