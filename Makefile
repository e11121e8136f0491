# Two commands set MTM up on a fresh machine with Python 3.11 and git:
#   make run    install, migrate, make an admin and a demo model, serve on 127.0.0.1:8000 with a worker
#   make test   install the dev tools, then checks, lint and the suite (SQLite, then PostgreSQL if one answers)
# .venv is (re)installed only when a requirements file is newer than its stamp.

VENV := .venv
RUNTIME_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev

.PHONY: run test install install-dev help

help:
	@echo "make run     serve the portal on http://127.0.0.1:8000 with its workers and beat (Ctrl-C stops them all)"
	@echo "make test    run migrations check, ruff and pytest (SQLite, then PostgreSQL when one answers)"
	@echo "             pass pytest arguments with PYTEST_ARGS='-k resolve -x'"

run: $(RUNTIME_STAMP)
	bin/run

test: $(DEV_STAMP)
	bin/test $(PYTEST_ARGS)

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

$(RUNTIME_STAMP): requirements.txt
	bin/venv requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt, so it satisfies the runtime stamp too.
$(DEV_STAMP): requirements.txt requirements-dev.txt
	bin/venv requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)
