"""End-to-end tests of API v2 (/v2/graphql) against a real server."""
