"""Retrieval: the embedder, the vector stores, and the document index built on them."""
