"""The storm test: the whole system under load, faults, kills and hostile input."""
