"""Settings declared once: the run spec and its schema, the options commands share, study files."""
