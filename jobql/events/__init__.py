"""Job events: types, the event bus seam over broadcaster, and the replay + live merge."""
