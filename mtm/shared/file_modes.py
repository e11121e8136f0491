"""The mode of every file and folder the portal writes, declared once.

- What a run writes (its folder, checkpoints, model, merged model, manifest, log): files FILE_MODE (0644), folders
  DIR_MODE (0755). The team reads a run's weights as it reads its config; only the worker's user writes.
- What is the portal's alone: uploaded datasets (only their owner and staff may train on one, and they reach it
  through the portal, which runs as the portal's user) and the secret key (it signs every session): files
  PRIVATE_FILE_MODE (0600), folders PRIVATE_DIR_MODE (0700). These are created with that mode, never written under a
  wider one and narrowed afterwards, so no other account can open them even for a moment.
"""

from __future__ import annotations

FILE_MODE = 0o644
DIR_MODE = 0o755
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
