"""The component runtime: engine, AOT cache, loading, introspection, instances, limits."""
