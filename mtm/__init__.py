"""The portal's project package. The Celery app is loaded by `MtmConfig.ready`, not here, so that plain-Python
pieces under `mtm.shared` import without Django or Celery (the trainer child process uses them)."""
