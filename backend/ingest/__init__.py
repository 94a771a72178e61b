"""Ingestion: parse files into sections, cut sections into token-bounded chunks, index them."""
