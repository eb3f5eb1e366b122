"""All SQL lives here. Driver errors become domain errors at this boundary."""
