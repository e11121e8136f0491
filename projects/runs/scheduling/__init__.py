"""Which worker takes a run and when: placement, fit, fair share, the live-run limit, the memory estimate, and the
GPUs and estimate pages."""
