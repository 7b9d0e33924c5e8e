"""Who is registered: the `Registration` model, the in-memory index and the store interface."""
