"""Publishing a run's model under a name the registry resolves, its API and pages, and the adapter download."""
