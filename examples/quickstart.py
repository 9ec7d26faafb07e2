"""Quickstart demo (the engine lands with the core issue)."""

print("monque: the engine is not ready yet; this demo arrives with the core.")
