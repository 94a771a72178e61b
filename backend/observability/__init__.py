"""Operations: Prometheus metrics, request ids, structured logs."""
