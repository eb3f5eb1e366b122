"""GraphQL schemas, one subpackage per API version; every type name carries its version."""
