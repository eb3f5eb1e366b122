"""HTTP plumbing around the GraphQL endpoints: request ids, the GraphQL view, health."""
