"""Do two versions of the cold model listing give the same verdicts? Not a test: a check to run by hand after a change
to models_registry/repo_scan.py or listing.py made for speed.

    cp models_registry/repo_scan.py /tmp/repo_scan_old.py; cp models_registry/listing.py /tmp/listing_old.py
    ... change them ...
    .venv/bin/python -m bench.listing_same_verdicts /tmp/repo_scan_old.py /tmp/listing_old.py [--repos 2000]

A change to models_registry/folder_walk.py too: copy it aside as well and name the copy last
(/tmp/repo_scan_old.py /tmp/listing_old.py /tmp/folder_walk_old.py); the old files then import it.

Lists, cold, with the old files (loaded beside the current package) and the current ones: bench.resolver's cache
of REPOS well-formed repos, and tests/odd_cache_layouts.py's cache of odd layouts. Prints every repo whose
JSON or signature differs, and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.resolver import build_cache
from models_registry import listing
from tests.odd_cache_layouts import odd_layouts


def _load(name: str, path: str, replace: dict[str, str] | None = None):
    source = Path(path).read_text()
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    module = type(sys)(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the caller's own file, run on purpose
    return module


def _json(item) -> dict:
    """A listed model's JSON (a listing never reads transformers' verdict, so `deep` is left out); an old file's
    ListedModel may predate model_dump."""
    return item.model_dump(mode="json", exclude={"deep"}) if hasattr(item, "model_dump") else item.to_dict()


def listed(module, cache: Path) -> dict[str, tuple]:
    module.forget()
    by_folder = {}
    for position, item in enumerate(module.list_cached(cache)):
        by_folder[f"{position}:{item.model_name}"] = _json(item)
    signatures = {folder: sig for folder, (sig, _) in module._memo[os.path.abspath(cache)].items()}
    return {"items": by_folder, "signatures": signatures}


def compare(old, new, cache: Path) -> list[str]:
    before, after = listed(old, cache), listed(new, cache)
    out = []
    for key in ("items", "signatures"):
        for folder in sorted(set(before[key]) | set(after[key])):
            if before[key].get(folder) != after[key].get(folder):
                out.append(f"{key} {folder}:\n  old {before[key].get(folder)}\n  new {after[key].get(folder)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old_repo_scan")
    parser.add_argument("old_listing")
    parser.add_argument("old_folder_walk", nargs="?")
    parser.add_argument("--repos", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mtm.settings")  # the checks read a few settings
    imports = {"from models_registry.repo_scan import": "from models_registry._old_repo_scan import"}
    if args.old_folder_walk:
        _load("models_registry._old_folder_walk", args.old_folder_walk)
        imports["from models_registry.folder_walk import"] = "from models_registry._old_folder_walk import"
    _load("models_registry._old_repo_scan", args.old_repo_scan, imports)
    old = _load("models_registry._old_listing", args.old_listing, imports)
    with tempfile.TemporaryDirectory() as tmp:
        bench_cache, odd_cache = Path(tmp) / "bench", Path(tmp) / "hub"
        build_cache(bench_cache, args.repos)
        odd_cache.mkdir()
        count = odd_layouts(odd_cache)
        problems = []
        for label, cache in (("bench", bench_cache), ("odd", odd_cache)):
            found = compare(old, listing, cache)
            listed_count = len(listed(listing, cache)["items"])
            print(f"{label}: {listed_count} repos listed, {len(found)} differences")
            problems += found
        print(f"({count} odd layouts built)")
        for problem in problems:
            print(problem)
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
