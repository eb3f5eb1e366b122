"""Use cases: submit, read, cancel and follow jobs; API keys. No GraphQL here."""
