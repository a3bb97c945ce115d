"""Use cases: the only layer that combines the database (db/) with the machine learning (models/)."""
