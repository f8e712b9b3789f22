"""Built-in blobstore providers."""
