"""Built-in messaging providers."""
