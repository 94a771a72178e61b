"""Helpers shared by the tests (no test module imports another): stand-in servers, document factories, calls to
the HTTP API, the compose / k8s / vLLM-argument renderers of the deployment checks, tool lookup."""
