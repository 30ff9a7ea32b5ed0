"""core layer of landscape (see docs/architecture.md)."""
