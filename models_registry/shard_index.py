"""Which weight files transformers loads from a folder, and whether a shard index agrees with the files there.

transformers prefers the single-file checkpoint (model.safetensors, pytorch_model.bin) over a shard index beside
it, so an index naming absent shards next to a single file is left over, not a broken model.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from mtm.shared.problems import Problem

SINGLE_FILE_OF_INDEX = {
    "model.safetensors.index.json": "model.safetensors",
    "pytorch_model.bin.index.json": "pytorch_model.bin",
}


def loaded_safetensors(present: Iterable[str], indexed: dict[str, set[str]]) -> list[str]:
    """The safetensors files transformers would load as the model: the single file, else the indexed shards, else
    every top-level one."""
    present = set(present)
    if "model.safetensors" in present:
        return ["model.safetensors"]
    if shards := indexed.get("model.safetensors.index.json"):
        return sorted(s for s in shards if s in present)
    return sorted(n for n in present if n.endswith(".safetensors") and "/" not in n and not n.startswith("adapter_"))


def check_index(
    index_name: str, data: object, listed: set[str], usable: Container[str], hint: str
) -> tuple[set[str], list[Problem], list[Problem]]:
    """(the shards the index names, errors, warnings). `listed`: every file in the folder; `usable`: those readable."""
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        return set(), [Problem("weights_invalid", f"Model format invalid: {index_name} has no weight_map.", hint)], []
    shards = {str(v) for v in weight_map.values()}
    missing = sorted(s for s in shards if s not in listed)
    single = SINGLE_FILE_OF_INDEX[index_name]
    if missing and single in usable:
        stale = Problem(
            "stale_shard_index",
            f"{index_name} names shards that are not here ({', '.join(missing[:3])}), but {single} is: "
            f"transformers loads {single} and ignores the index.",
            f"Delete {index_name} if it is left over from an earlier download.",
        )
        return set(), [], [stale]
    suffix = "." + single.rsplit(".", 1)[-1]
    strays = sorted(n for n in listed if n.endswith(suffix) and "-of-" in n and n not in shards)
    also = (
        f" The folder has shards the index does not name ({', '.join(strays[:3])}): renamed, or from another revision."
        if strays
        else ""
    )
    errors = [
        Problem("shard_missing", f"Model format invalid: shard {shard} named in {index_name} is missing.{also}", hint)
        for shard in missing
    ]
    return shards, errors, []
