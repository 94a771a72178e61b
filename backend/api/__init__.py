"""HTTP API: one module per resource, one error handler, shared dependencies."""
