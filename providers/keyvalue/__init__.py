"""Built-in keyvalue providers."""
