"""Helpers shared by the tests: stand-in servers, document factories, tool lookup."""
