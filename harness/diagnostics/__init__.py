"""Training diagnostics: gradient monitors, loss-landscape probes and information flow."""
