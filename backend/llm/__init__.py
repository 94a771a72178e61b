"""LLM engines behind one client interface, chosen by LLM_BACKEND."""
