"""The cold listing's shortcuts (models_registry/repo_scan.py, listing.py) answer exactly as the code they stand in
for: calls relative to the cache root's descriptor as absolute ones, the quick JSON read as bounded_json, the quick
name check as names.name_error. Real HF cache layouts on tmp_path."""

from __future__ import annotations

import os
import random

import pytest

from models_registry import listing
from models_registry.bounded_json import parse_bytes
from models_registry.cache_layout import PARTIAL_SUFFIX
from models_registry.names import name_error
from models_registry.repo_scan import (
    MAX_CONFIG_BYTES,
    _folder_mtime,
    _mtime,
    _parsed,
    _partial_blobs,
    checked_repo,
    open_root,
)
from tests.odd_cache_layouts import FORBIDDEN, odd_layouts


def test_relative_calls_give_the_verdicts_and_signatures_of_absolute_ones(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    count = odd_layouts(cache)
    root = str(cache)
    root_fd = open_root(root)
    assert root_fd is not None
    try:
        folders = sorted(os.listdir(root))
        assert len(folders) == count
        for folder in folders:
            name = folder[len("models--") :].replace("--", "/")
            relative = checked_repo(f"{root}/{folder}", name, root, root_fd)
            absolute = checked_repo(f"{root}/{folder}", name, root)
            assert relative[0] == absolute[0], folder
            assert relative[1].model_dump() == absolute[1].model_dump(), folder
    finally:
        os.close(root_fd)


def test_an_unreadable_blob_is_named_by_its_absolute_path(tmp_path):
    try:
        os.stat(FORBIDDEN + "/.")
        pytest.skip(f"{FORBIDDEN} is readable here, so it cannot stand for an unreadable blobs folder")
    except PermissionError:
        pass
    cache = tmp_path / "hub"
    cache.mkdir()
    odd_layouts(cache)
    listing.forget(cache)
    [item] = [m for m in listing.list_cached(cache) if m.model_name == "proc/blobs"]
    [problem] = item.errors
    assert problem.code == "unsafe_symlink"
    assert f"Permission denied: '{cache}/models--proc--blobs/blobs/" in problem.message


JSON_TEXTS = [
    b'{"model_type": "llama", "hidden_size": 16}',
    b' \n\t{"model_type": "llama"}\r\n ',
    b'{"model_type": "llama"}\x0c',  # a form feed is no JSON whitespace
    b'\xef\xbb\xbf{"model_type": "llama"}',  # a UTF-8 BOM
    b'{"model_type": "llama"} trailing',
    b'{"model_type": "llama"}{}',
    b'{"model_type": "ll\xffama"}',
    b'{"model_type": "llama"',
    b'{"x": NaN, "y": Infinity, "z": -Infinity}',
    b'{"a": 1, "a": 2}',
    b'"a string"',
    b"[1, 2]",
    b"12 ",
    b"1.",
    b"",
    b"   ",
    b"null",
    b'{"n": ' + b"9" * 5000 + b"}",  # past Python's digit limit: a plain ValueError
    b"[" * 5000 + b"]" * 5000,  # nested too deeply
    b"[" + b"0," * 200_001 + b"0]",  # too many values to parse here
    b"{" + b" " * MAX_CONFIG_BYTES + b"}",  # too large to parse here
    b'{"\\ud800": "lone surrogate escape"}',
    '{"model_type": "llama", "name": "caf\u00e9 \u2603"}'.encode(),
]


@pytest.mark.parametrize("text", JSON_TEXTS, ids=range(len(JSON_TEXTS)))
def test_the_quick_json_read_is_bounded_jsons(text):
    read = parse_bytes(text, MAX_CONFIG_BYTES)
    deferred, value = _parsed(text)
    assert deferred == read.deferred
    assert repr(value) == repr(read.value)  # repr: NaN is not equal to itself


def test_the_quick_name_check_is_name_errors():
    rng = random.Random(17)
    alphabet = "aZ09_-./"
    names = [
        "org/model",
        "Org_1/Model-2.5-it",
        "_org/_m_",
        "org/name.git",
        "org/name.gitx",
        "a/b/c",
        "org--x/y",
        "org/x..y",
        "org/-x",
        "org/x-",
        ".org/x",
        "org/.x",
        "org/x.",
        "gpt2",
        "x" * 48 + "/" + "y" * 47,
        "x" * 48 + "/" + "y" * 48,
        "nons\u00e9/x",
        "org/\u0661",  # a digit outside ASCII
        "org/x\n",
        "",
        "/",
    ]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(20_000)]
    names += ["".join(rng.choice(alphabet) for _ in range(rng.randint(90, 100))) for _ in range(500)]
    for name in names:
        assert listing._name_problem(name) == name_error(name), name


def test_a_repo_folder_that_is_a_link_loop_is_one_unreadable_repo_and_the_others_still_list(tmp_path, tiny_llama_dir):
    """A member who can write in the cache makes models--x a link to itself: following it fails (ELOOP). That repo is
    listed as unreadable; it never empties the list for everyone."""
    from models_registry.demo import install_into_cache

    cache = tmp_path / "hub"
    install_into_cache(tiny_llama_dir, cache, "org/good")
    os.symlink("models--evil--loop", cache / "models--evil--loop")
    listing.forget(cache)
    listed = {m.model_name: m for m in listing.list_cached(cache)}
    assert set(listed) == {"org/good", "evil/loop"}
    assert listed["org/good"].valid
    assert not listed["evil/loop"].valid and listed["evil/loop"].errors


def test_the_quick_partial_blob_check_is_the_plain_filter(tmp_path):
    """_partial_blobs looks for PARTIAL_SUFFIX in the joined names before filtering them one by one."""
    names_sets = [
        [],
        ["a" * 64],
        ["a" * 64, "b" * 64 + ".incomplete"],
        ["x.incomplete.y", "incomplete", ".incomplete", "z.incompletez"],
        ["a.incompletex", "b.incomplet", "c.incomplete\n", "d\n.incomplete"],
    ]
    for i, names in enumerate(names_sets):
        repo = tmp_path / f"repo{i}"
        (repo / "blobs").mkdir(parents=True)
        for name in names:
            (repo / "blobs" / name).write_text("x")
        listed = os.listdir(repo / "blobs")
        assert _partial_blobs(str(repo)) == [n for n in listed if n.endswith(PARTIAL_SUFFIX)], names


def test_one_lstat_of_the_snapshot_gives_its_stat_mtime_and_whether_it_is_a_link(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    os.symlink("folder", tmp_path / "inside")
    os.symlink(FORBIDDEN, tmp_path / "forbidden")
    os.symlink("nowhere", tmp_path / "dangling")
    for entry in ("folder", "file", "inside", "forbidden", "dangling", "missing"):
        path = str(tmp_path / entry)
        assert _folder_mtime(path) == (_mtime(path), os.path.islink(path)), entry
