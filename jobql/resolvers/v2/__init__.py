"""Resolvers of API version 2."""
