"""The GraphiQL explorer, served from files vendored in this package (no outside network):
the page on a browser GET of /<version>/graphql and its assets under /<version>/graphiql/."""

from __future__ import annotations

from jobql.http.graphiql.assets import asset_route
from jobql.http.graphiql.page import render_page

__all__ = ["asset_route", "render_page"]
