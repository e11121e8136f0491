"""Training runs: their one way in (services), state machine, stages, Celery tasks, supervisor, records, config,
folders, pages, charts, validation and scheduling."""
