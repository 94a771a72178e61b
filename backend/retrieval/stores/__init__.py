"""The vector store role: `base` (the interface), `edge` and `qdrant` (the engines), `registry` (which one)."""
