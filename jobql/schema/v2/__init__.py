"""API version 2."""
