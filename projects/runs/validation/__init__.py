"""Validation of a finished run: the checks the validate stage runs in child processes, and what they report."""
