"""A cache of odd layouts, each a repo folder as people and tools leave them: no ref, a dangling or '..' ref, a
snapshot that is a file or a link into /proc/1/cwd, a FIFO or outside-link config.json, a missing blob, partial
blobs, broken JSON in every way bounded_json tells apart, stale or broken indexes, adapters, GGUF, bad names...
The listing's shortcuts must answer on each exactly as its general code does (tests/test_repo_scan.py,
bench/listing_same_verdicts.py)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.hfcache import COMMIT_A, COMMIT_B, add_file, make_model_repo, make_safetensors, set_ref, write_blob

FORBIDDEN = "/proc/1/cwd"  # a link every stat through is refused (EACCES) in a container


def _repo(cache: Path, name: str) -> Path:
    return cache / ("models--" + name.replace("/", "--"))


def _snap(cache: Path, name: str, commit: str = COMMIT_A) -> Path:
    return _repo(cache, name) / "snapshots" / commit


def _config(cache: Path, name: str, data: bytes | str | dict, **kw) -> None:
    make_model_repo(cache, name, **kw)
    add_file(cache, name, "config.json", data)


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


def _renamed_repo(cache: Path, folder: str) -> None:
    """A well-formed repo under a folder name that make_model_repo would not make (a bad or odd model name)."""
    make_model_repo(cache, "placeholder/repo")
    os.rename(_repo(cache, "placeholder/repo"), cache / folder)


def odd_layouts(cache: Path) -> int:
    """Builds the odd repos in `cache`; returns how many."""
    layouts: list[Callable[[], None]] = []

    def layout(fn: Callable[[], None]) -> Callable[[], None]:
        layouts.append(fn)
        return fn

    big_ints = '{"model_type": "llama", "n": ' + "9" * 5000 + "}"
    pieces = "[" + "0," * 200_001 + "0]"
    deep = "[" * 5000 + "]" * 5000
    for i, text in enumerate(
        [
            b"not json",
            b'["a", "list"]',
            b'\xef\xbb\xbf{"model_type": "llama"}',  # a UTF-8 BOM
            b'{"model_type": "llama"} trailing',
            b' \n\t{"model_type": "llama"}\r\n ',
            b'{"model_type": "llama"}\x0c',  # a form feed: not JSON whitespace
            b'{"model_type": "llama", "x": NaN}',
            b'{"model_type": "ll\xffama"}',  # not UTF-8
            b'{"model_type": "llama"',  # cut short
            b"",
            b"   ",
            b"{}",  # no model_type
            b'{"model_type": ""}',
            b'{"model_type": 3}',
            b'{"model_type": "no-such-architecture"}',
            b'{"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "modeling.M"}}',
            b'{"model_type": "llama", "model_type": "gpt2"}',  # a duplicate key
            b'"just a string"',
            big_ints.encode(),
            pieces.encode(),
            deep.encode(),
            b"{" + b" " * (4 * 1024 * 1024) + b"}",  # past the size the web process parses
            b"x" * (4 * 1024 * 1024 + 10),
        ]
    ):
        layouts.append(lambda i=i, text=text: _config(cache, f"json/case-{i}", text))

    @layout
    def no_ref() -> None:
        make_model_repo(cache, "odd/no-ref", ref=False)

    @layout
    def no_ref_two_snapshots() -> None:
        make_model_repo(cache, "odd/two-snaps", ref=False)
        make_model_repo(cache, "odd/two-snaps", COMMIT_B, ref=False)

    @layout
    def dangling_ref() -> None:
        make_model_repo(cache, "odd/dangling-ref")
        set_ref(cache, "odd/dangling-ref", COMMIT_B)

    for i, ref in enumerate(["..", ".", "a/b", "", COMMIT_A + "\n", " " + COMMIT_A, "x\0y", "../" + COMMIT_A]):
        layouts.append(
            lambda i=i, ref=ref: (
                make_model_repo(cache, f"refs/case-{i}"),
                (_repo(cache, f"refs/case-{i}") / "refs" / "main").write_bytes(ref.encode()),
            )
        )

    @layout
    def ref_is_folder() -> None:
        make_model_repo(cache, "odd/ref-folder", ref=False)
        (_repo(cache, "odd/ref-folder") / "refs" / "main").mkdir(parents=True)

    @layout
    def ref_is_fifo() -> None:
        make_model_repo(cache, "odd/ref-fifo", ref=False)
        (_repo(cache, "odd/ref-fifo") / "refs").mkdir()
        os.mkfifo(_repo(cache, "odd/ref-fifo") / "refs" / "main")

    @layout
    def ref_is_link() -> None:
        make_model_repo(cache, "odd/ref-link", ref=False)
        (_repo(cache, "odd/ref-link") / "refs").mkdir()
        target = cache.parent / "outside-ref"
        target.write_text(COMMIT_A)
        (_repo(cache, "odd/ref-link") / "refs" / "main").symlink_to(target)

    @layout
    def snapshot_is_file() -> None:
        make_model_repo(cache, "odd/snap-file", ref=False)
        shutil.rmtree(_snap(cache, "odd/snap-file"))
        _snap(cache, "odd/snap-file").write_text("x")
        set_ref(cache, "odd/snap-file", COMMIT_A)

    @layout
    def snapshot_links_to_proc() -> None:
        make_model_repo(cache, "odd/snap-proc")
        shutil.rmtree(_snap(cache, "odd/snap-proc"))
        _snap(cache, "odd/snap-proc").symlink_to(FORBIDDEN)

    @layout
    def snapshot_links_to_other() -> None:
        make_model_repo(cache, "odd/snap-link", COMMIT_B)
        set_ref(cache, "odd/snap-link", COMMIT_A)
        _snap(cache, "odd/snap-link").symlink_to(COMMIT_B)

    @layout
    def snapshots_is_file() -> None:
        make_model_repo(cache, "odd/snapshots-file")
        shutil.rmtree(_repo(cache, "odd/snapshots-file") / "snapshots")
        (_repo(cache, "odd/snapshots-file") / "snapshots").write_text("x")

    @layout
    def config_fifo() -> None:
        make_model_repo(cache, "odd/config-fifo")
        _replace(_snap(cache, "odd/config-fifo") / "config.json", os.mkfifo)

    @layout
    def config_blob_fifo() -> None:
        make_model_repo(cache, "odd/config-blob-fifo")
        blob = (_snap(cache, "odd/config-blob-fifo") / "config.json").resolve()
        _replace(blob, os.mkfifo)

    @layout
    def config_blob_folder() -> None:
        make_model_repo(cache, "odd/config-blob-folder")
        blob = (_snap(cache, "odd/config-blob-folder") / "config.json").resolve()
        _replace(blob, lambda p: p.mkdir())

    @layout
    def config_blob_link() -> None:
        make_model_repo(cache, "odd/config-blob-link")
        blob = (_snap(cache, "odd/config-blob-link") / "config.json").resolve()
        other = blob.with_name("f" * 64)
        other.write_text(json.dumps({"model_type": "llama"}))
        _replace(blob, lambda p: p.symlink_to(other.name))

    @layout
    def config_outside() -> None:
        make_model_repo(cache, "odd/config-outside")
        _replace(_snap(cache, "odd/config-outside") / "config.json", lambda p: p.symlink_to("/etc/hostname"))

    @layout
    def config_outside_relative() -> None:
        make_model_repo(cache, "odd/config-outside-rel")
        outside = cache.parent / "outside-config.json"
        outside.write_text(json.dumps({"model_type": "llama"}))
        link = _snap(cache, "odd/config-outside-rel") / "config.json"
        _replace(link, lambda p: p.symlink_to(os.path.relpath(outside, link.parent)))

    @layout
    def config_absolute_inside() -> None:
        make_model_repo(cache, "odd/config-absolute")
        link = _snap(cache, "odd/config-absolute") / "config.json"
        blob = link.resolve()
        _replace(link, lambda p: p.symlink_to(blob))

    @layout
    def config_odd_relative_form() -> None:
        make_model_repo(cache, "odd/config-odd-form")
        link = _snap(cache, "odd/config-odd-form") / "config.json"
        blob = link.resolve()
        _replace(link, lambda p: p.symlink_to("../../blobs/../blobs/" + blob.name))

    @layout
    def config_link_to_proc() -> None:
        make_model_repo(cache, "odd/config-proc")
        _replace(_snap(cache, "odd/config-proc") / "config.json", lambda p: p.symlink_to(FORBIDDEN + "/x"))

    @layout
    def config_regular_file() -> None:
        make_model_repo(cache, "odd/config-regular")
        _replace(
            _snap(cache, "odd/config-regular") / "config.json",
            lambda p: p.write_text(json.dumps({"model_type": "llama"})),
        )

    @layout
    def config_missing_blob() -> None:
        make_model_repo(cache, "odd/missing-blob")
        (_snap(cache, "odd/missing-blob") / "config.json").resolve().unlink()

    @layout
    def config_dangling_outside() -> None:
        make_model_repo(cache, "odd/dangling-outside")
        _replace(_snap(cache, "odd/dangling-outside") / "config.json", lambda p: p.symlink_to("/nonexistent/c"))

    @layout
    def no_config() -> None:
        make_model_repo(cache, "odd/no-config")
        (_snap(cache, "odd/no-config") / "config.json").unlink()

    @layout
    def adapter() -> None:
        make_model_repo(cache, "odd/adapter")
        (_snap(cache, "odd/adapter") / "config.json").unlink()
        add_file(cache, "odd/adapter", "adapter_config.json", {"base_model_name_or_path": "json/case-11"})

    @layout
    def adapter_broken() -> None:
        make_model_repo(cache, "odd/adapter-broken")
        (_snap(cache, "odd/adapter-broken") / "config.json").unlink()
        add_file(cache, "odd/adapter-broken", "adapter_config.json", "{not json")

    @layout
    def gguf_only() -> None:
        make_model_repo(cache, "odd/gguf", weights=False)
        (_snap(cache, "odd/gguf") / "config.json").unlink()
        add_file(cache, "odd/gguf", "model-q4.gguf", b"GGUF")

    @layout
    def no_tokenizer() -> None:
        make_model_repo(cache, "odd/no-tokenizer", tokenizer=False)

    @layout
    def no_weights() -> None:
        make_model_repo(cache, "odd/no-weights", weights=False)

    @layout
    def only_bin() -> None:
        make_model_repo(cache, "odd/bin", weights=False)
        add_file(cache, "odd/bin", "pytorch_model.bin", b"x")

    @layout
    def no_generation_config() -> None:
        make_model_repo(cache, "odd/no-gen", generation_config=False)

    def sharded(name: str, index: dict | str, shards: list[str], single: bool = False) -> None:
        make_model_repo(cache, name, weights=False)
        add_file(cache, name, "model.safetensors.index.json", index)
        for shard in shards:
            add_file(cache, name, shard, make_safetensors())
        if single:
            add_file(cache, name, "model.safetensors", make_safetensors())

    two = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    layouts += [
        lambda: sharded("shards/complete", two, list(set(two["weight_map"].values()))),
        lambda: sharded("shards/missing", two, ["model-00001-of-00002.safetensors"]),
        lambda: sharded("shards/stale", two, [], single=True),
        lambda: sharded("shards/no-map", {"metadata": {}}, ["x.safetensors"]),
        lambda: sharded("shards/broken", "{nope", ["x.safetensors"]),
        lambda: sharded("shards/list", "[1, 2]", ["x.safetensors"]),
    ]

    @layout
    def bin_index_missing() -> None:
        make_model_repo(cache, "shards/bin", weights=False)
        add_file(cache, "shards/bin", "pytorch_model.bin.index.json", {"weight_map": {"a": "p-1.bin"}})

    def partial(name: str, drop_weights: bool, referenced: bool = False, count: int = 1) -> None:
        make_model_repo(cache, name)
        repo = _repo(cache, name)
        link = _snap(cache, name) / "model.safetensors"
        blob = link.resolve()
        if drop_weights:
            link.unlink()
        for i in range(count):
            stem = blob.name if referenced and i == 0 else f"{i:064x}"
            (repo / "blobs" / (stem + ".incomplete")).write_bytes(b"partial")

    layouts += [
        lambda: partial("partial/own", True),
        lambda: partial("partial/leftover", False),
        lambda: partial("partial/many-leftovers", False, count=5),
        lambda: partial("partial/referenced", False, referenced=True, count=2),
        lambda: partial("partial/own-many", True, count=3),
    ]

    @layout
    def partial_only() -> None:
        write_blob(_repo(cache, "partial/only"), b"x")
        (_repo(cache, "partial/only") / "blobs" / ("a" * 64 + ".incomplete")).write_bytes(b"p")

    @layout
    def no_blobs_folder() -> None:
        make_model_repo(cache, "odd/no-blobs")
        shutil.rmtree(_repo(cache, "odd/no-blobs") / "blobs")

    @layout
    def blobs_is_file() -> None:
        make_model_repo(cache, "odd/blobs-file")
        partial_dir = _repo(cache, "odd/blobs-file") / "blobs"
        shutil.rmtree(partial_dir)
        partial_dir.write_text("x")

    @layout
    def empty_repo() -> None:
        _repo(cache, "odd/empty").mkdir(parents=True)

    @layout
    def empty_snapshots() -> None:
        (_repo(cache, "odd/empty-snapshots") / "snapshots").mkdir(parents=True)
        set_ref(cache, "odd/empty-snapshots", COMMIT_A)

    @layout
    def nested_file() -> None:
        make_model_repo(cache, "odd/nested")
        add_file(cache, "odd/nested", "sub/dir/file.txt", "x")

    @layout
    def repo_is_link_outside() -> None:
        real = cache.parent / "elsewhere" / "models--odd--linked"
        make_model_repo(real.parent, "odd/linked")
        _repo(cache, "odd/linked").symlink_to(real)

    def blobs_to_proc(name: str, extra: Callable[[], None] | None = None) -> None:
        make_model_repo(cache, name)
        if extra:
            extra()
        shutil.rmtree(_repo(cache, name) / "blobs")
        (_repo(cache, name) / "blobs").symlink_to(FORBIDDEN)  # every read through it: EACCES, naming its path

    layouts += [
        lambda: blobs_to_proc("proc/blobs"),
        lambda: blobs_to_proc(
            "proc/blobs-index",
            lambda: add_file(cache, "proc/blobs-index", "model.safetensors.index.json", {"weight_map": {}}),
        ),
        lambda: blobs_to_proc(
            "proc/blobs-adapter",
            lambda: (
                (_snap(cache, "proc/blobs-adapter") / "config.json").unlink(),
                add_file(cache, "proc/blobs-adapter", "adapter_config.json", {"base_model_name_or_path": "a/b"}),
            ),
        ),
    ]

    @layout
    def refs_link_to_proc() -> None:
        make_model_repo(cache, "odd/refs-proc", ref=False)
        (_repo(cache, "odd/refs-proc") / "refs").symlink_to(FORBIDDEN)

    for folder in [
        "models--bad..name--x",
        "models--org--name.git",
        "models--_org--name",
        "models--org--name-",
        "models--a--b--c",
        "models--nons\u00e9--ascii",
        "models--" + "x" * 100,
        "models--gpt2",
        "models--org--.hidden",
        "models---org--x",
        "models--org--a_b.c-d",
    ]:
        layouts.append(lambda folder=folder: _renamed_repo(cache, folder))

    for build in layouts:
        build()
    return len(layouts)
