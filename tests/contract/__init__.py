"""One test per role, run over every implementation of it (stores, embedders, engine clients)."""
