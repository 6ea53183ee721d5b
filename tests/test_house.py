"""The shape of the code, as issue 13 left it: rooms a reader can hold, no import cycles, and a
run's client that never loads torch."""

import ast
import subprocess
import sys
from pathlib import Path

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline"


def _trees():
    """Every module of the package by dotted name (pipeline.client.audit...)."""
    out = {}
    for p in sorted(PIPELINE.rglob("*.py")):
        rel = p.relative_to(PIPELINE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(p.read_text())
    return out


def test_no_class_over_150_lines_and_no_function_over_70():
    too_long = []
    for mod, tree in _trees().items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = 150 if isinstance(n, ast.ClassDef) else 70
                if n.end_lineno - n.lineno + 1 > limit:
                    too_long.append(f"{mod}.{n.name}: {n.end_lineno - n.lineno + 1} lines")
    assert too_long == []


def test_packages_by_role_and_no_import_cycle_even_through_imports_inside_functions():
    trees = _trees()
    graph = {}
    for mod, tree in trees.items():
        deps = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("pipeline"):
                deps |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name.startswith("pipeline")}
        graph[mod] = (deps & trees.keys()) - {"pipeline", mod}
    # the rooms: the client plans and watches, the worker colours, the model learns
    assert {m.split(".")[1] for m in trees if m.count(".") == 2} == {"client", "worker", "model",
                                                                    "bench"}
    assert "pipeline.worker.stages" in graph["pipeline.worker.shard"]  # it reads the graph
    # a worker reads the job and OUTDIR's types, but never the client's planning or reports
    planning = {"pipeline.client.orchestrate", "pipeline.client.cluster", "pipeline.client.audit",
                "pipeline.client.export", "pipeline.cli"}
    assert {d for m, ds in graph.items() if m.startswith("pipeline.worker") for d in ds} & planning == set()

    def reaches(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert [m for m in graph if m in reaches(m)] == []


def test_a_runs_client_side_never_imports_torch():
    code = ("import sys; import pipeline.cli, pipeline.client.orchestrate, pipeline.client.cluster, "
            "pipeline.worker.device, pipeline.client.audit, pipeline.client.manifest, "
            "pipeline.model.trainspec; "
            "p = pipeline.cli.build_parser(); p.parse_args(['run', '--dry-run']); "
            "assert pipeline.worker.device.device_type('cpu') == 'cpu'; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=PIPELINE.parent)
    assert r.stdout.strip() == "False"
