"""Capability providers and the provider SDK (see DESIGN §5)."""
