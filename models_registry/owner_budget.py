"""How much of one model listing each owner of repo folders may use, and the one row that stands for the repo
folders an owner has past it.

Every repo folder costs REPO_COST entries (the folder itself and the refs/, snapshots/ and blobs/ a scan opens) plus
the entries its scan reads, whether it is scanned, shown from a kept verdict or refused as a link: an empty folder is
not free. Past an owner's MTM_MODEL_LISTING_MAX_ENTRIES, its repo folders are not scanned (a kept verdict that still
holds is shown), and past MAX_REPOS_PER_OWNER repo folders, none is listed: so one owner's rows, and what the listing
keeps of them, stay bounded whatever the settings.
"""

from __future__ import annotations

import os
import pwd

from models_registry.listed import ListedModel
from mtm.shared.problems import Problem

__all__ = ["MAX_REPOS_PER_OWNER", "REPO_COST", "NOT_CHECKED", "OwnerBudgets"]

REPO_COST = 4
# Far above a team's cache (a few dozen models), far below a page that is slow to build or to read.
MAX_REPOS_PER_OWNER = 1_000
NOT_CHECKED = "listing_not_checked"

Owner = int | None


def _owner(entry: os.DirEntry) -> Owner:
    """The uid owning the repo folder itself (its lstat, kept by the entry); None when it is gone."""
    try:
        return entry.stat(follow_symlinks=False).st_uid
    except OSError:
        return None


def owner_label(uid: Owner) -> str:
    if uid is None:
        return "an owner that could not be read (folders removed while listed)"
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"uid {uid}"


class OwnerBudgets:
    """The entries and repo folders one listing has spent for each owner, and the folders it passed over.

    While the whole listing has spent less than one owner's limits, no owner can be past them, so owners are looked
    up (one lstat a repo) only from the moment the totals reach them."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._early: list[tuple[os.DirEntry, int]] = []
        self._early_entries = 0
        self._by_owner: dict[Owner, list[int]] | None = None  # owner: [entries, repo folders]
        self._allowed: tuple[os.DirEntry, list[int]] | None = None  # the last folder allowed, and its owner's spending
        self.passed: dict[Owner, list[str]] = {}  # owner: the repo folders not listed, in listing order

    def allows(self, entry: os.DirEntry, *, scan: bool) -> bool:
        """Whether the owner of this repo folder may have it listed: any repo folder while the owner has listed
        fewer than MAX_REPOS_PER_OWNER, and one to `scan` only while the owner's entries are not spent either (a
        kept verdict, or a link, costs its fixed few entries but is shown whenever there is room for its row).
        When not, the folder is noted as passed over."""
        if self._by_owner is None:
            if self._early_entries < self.max_entries and len(self._early) < MAX_REPOS_PER_OWNER:
                return True
            self._by_owner = {}
            for early, cost in self._early:
                self._add(self._spent(_owner(early)), cost)
            self._early = []
        owner = _owner(entry)
        spent = self._spent(owner)
        if spent[1] < MAX_REPOS_PER_OWNER and (not scan or spent[0] < self.max_entries):
            self._allowed = (entry, spent)
            return True
        self.passed.setdefault(owner, []).append(entry.name)
        return False

    def charge(self, entry: os.DirEntry, entries_read: int = 0) -> None:
        cost = REPO_COST + entries_read
        if self._by_owner is None:
            self._early.append((entry, cost))
            self._early_entries += cost
        elif self._allowed is not None and self._allowed[0] is entry:
            self._add(self._allowed[1], cost)
        else:
            self._add(self._spent(_owner(entry)), cost)

    def _spent(self, owner: Owner) -> list[int]:
        spent = self._by_owner.get(owner)
        if spent is None:
            spent = self._by_owner[owner] = [0, 0]
        return spent

    @staticmethod
    def _add(spent: list[int], cost: int) -> None:
        spent[0] += cost
        spent[1] += 1

    def summaries(self) -> list[ListedModel]:
        """One row for each owner with repo folders passed over."""
        return [self._summary(owner, folders) for owner, folders in self.passed.items()]

    def _summary(self, owner: Owner, folders: list[str]) -> ListedModel:
        who = owner_label(owner)
        count = len(folders)
        span = folders[0] if count == 1 else f"{folders[0]} to {folders[-1]}"
        return ListedModel(
            model_name=f"{count:,} more repo folder{'s' if count != 1 else ''} of {who}",
            source="cache",
            path=None,
            revision=None,
            errors=[
                Problem(
                    NOT_CHECKED,
                    f"{count:,} more repo folder{'s' if count != 1 else ''} owned by {who} in the Hugging Face "
                    f"cache ({span}) were not checked or listed: one model listing reads at most "
                    f"{self.max_entries:,} entries (MTM_MODEL_LISTING_MAX_ENTRIES, each repo folder counting at "
                    f"least {REPO_COST}) and lists at most {MAX_REPOS_PER_OWNER:,} repo folders for one owner. "
                    "Other owners' repos are checked on their own budgets.",
                    f"Open a model's page (/models/<org>/<name>/) to check it alone. Ask {who} or staff to remove "
                    "the repo folders that do not belong in the cache (empty folders, or huge snapshots or blobs "
                    "folders), or staff to raise MTM_MODEL_LISTING_MAX_ENTRIES.",
                )
            ],
        )
