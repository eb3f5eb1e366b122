"""Operational signals: Prometheus metrics (`metrics`) and structured JSON logs (`logging`)."""
