"""Imports between apps run one way, mtm ← workers ← models_registry ← projects ← playground (docs/architecture.md
§1, §2): an import against that order is one of the few written down below with its reason, no two modules import
each other (imports inside functions included), and no import inside a function reaches up into another app, which
is how a cycle gets hidden. Read from the source with ast alone (tests/import_graph.py): no Django, no import."""

from __future__ import annotations

from tests.import_graph import Edge, cycles, edges, is_back_import, our_modules

# (importing module, imported module): why it may run against the layers. At most 2: each one is a dependency a
# reader must keep in mind.
ALLOWED_BACK_IMPORTS = {
    ("models_registry.views", "projects.publishing.services"): (
        "the model page shows Unpublish for a portal name, and who may unpublish is the projects app's rule "
        "(can_unpublish); the page is a leaf nothing in projects imports, so no module cycle"
    ),
}

MODULES = our_modules()
EDGES = edges(MODULES)
BACK = [e for e in EDGES if is_back_import(e)]


def _lines(found: list[Edge]) -> str:
    return "\n".join(f"  {e}" for e in found)


def test_the_graph_sees_our_code():
    assert len(MODULES) > 200 and {m.split(".")[0] for m in MODULES} == {
        "mtm",
        "workers",
        "models_registry",
        "projects",
        "playground",
    }
    assert not any("migrations" in m.split(".") for m in MODULES)
    assert ("projects.runs.tasks", "projects.runs.stages") in {(e.source, e.target) for e in EDGES}
    assert sum(e.in_function for e in EDGES) > 10  # imports inside functions are read too


def test_no_new_import_runs_against_the_layers():
    new = [e for e in BACK if (e.source, e.target) not in ALLOWED_BACK_IMPORTS]
    assert not new, (
        "Imports against the layers mtm ← workers ← models_registry ← projects ← playground:\n"
        f"{_lines(new)}\nMove the code to the layer it belongs to, or invert the dependency (a registry the upper app "
        "fills in its AppConfig.ready(), as workers.holds and workers.reporting.register_part); see "
        "docs/architecture.md §1 and §2."
    )


def test_every_allowed_back_import_still_exists():
    present = {(e.source, e.target) for e in BACK}
    gone = sorted(set(ALLOWED_BACK_IMPORTS) - present)
    assert not gone, f"No longer imported: remove from ALLOWED_BACK_IMPORTS (and docs/architecture.md §2): {gone}"
    assert len(ALLOWED_BACK_IMPORTS) <= 2
    assert all(reason.strip() for reason in ALLOWED_BACK_IMPORTS.values())


def test_no_module_cycle():
    found = cycles(EDGES)
    closing = [e for e in EDGES if any(e.source in c and e.target in c for c in found)]
    assert not found, f"Modules that import each other: {found}\nThe imports that close them:\n{_lines(closing)}"


def test_no_import_inside_a_function_reaches_up_into_another_app():
    hidden = [e for e in BACK if e.in_function]
    assert not hidden, (
        f"Imports inside a function into an app above:\n{_lines(hidden)}\nImport at the top of the file; "
        "if that makes a cycle, the code is in the wrong layer."
    )


def test_the_checks_catch_what_they_claim(tmp_path):
    """A planted back-import inside a function and a planted cycle are both found, with their file and line."""
    for app in ("mtm", "workers", "models_registry", "projects", "playground"):
        (tmp_path / app).mkdir()
        (tmp_path / app / "__init__.py").write_text("")
    (tmp_path / "workers" / "a.py").write_text("def f():\n    from playground import b\n")
    (tmp_path / "playground" / "b.py").write_text("from workers.a import f\n")
    found = edges(our_modules(tmp_path), tmp_path)
    back = [e for e in found if is_back_import(e)]
    assert [(e.source, e.target, e.line, e.in_function, e.where) for e in back] == [
        ("workers.a", "playground.b", 2, True, "workers/a.py:2")
    ]
    assert cycles(found) == [["playground.b", "workers.a"]]
