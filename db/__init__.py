"""Database layer: schema, engine and session setup, query functions."""
