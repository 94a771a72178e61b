"""RAG appliance backend: ingestion, retrieval and the HTTP API."""

__version__ = "0.1.0"
