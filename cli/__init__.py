"""Command-line tools: index_cli (ingest a folder), bench (benchmarks)."""
