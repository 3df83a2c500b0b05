"""Plain-Python state behind the panels (no Qt): the settings being edited, the live
series of a run, the run history. Views observe these; tests drive them directly."""
