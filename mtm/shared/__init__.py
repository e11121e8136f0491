"""Pieces every app uses and none owns: the problem object checks return, path containment, file digests.

Plain Python (no Django, no torch), so the trainer child process can import them too.
"""
