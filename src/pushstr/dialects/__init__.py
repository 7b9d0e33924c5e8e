"""Registration dialects: each turns one wire format into `Registration` changes in the registry."""
