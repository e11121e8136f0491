"""The trainer child process (`python -m projects.trainer SPEC.json`) and its supervisor-side helpers.

Import the light modules from the supervisor: projects.trainer.events (protocol, exit codes, trainer_command)
and projects.trainer.spec (TrainerSpec, write_spec). Everything that imports torch stays inside the child.
"""
