"""Built-in sql providers."""
