"""Router overhead: `--pipeline auto` against the route it picks, run alone, per request.

Zero-cost scripted backends (mmagent.testing), so the difference is the router's own work: the
`route` node (question embedding with ScriptedEmbedder, image features, the learned question-type
classifier, the policy, capability negotiation, the decision record) and a bigger graph (every
route that can serve is copied into it). The router uses a competence file fitted here, with the
same ScriptedEmbedder, on a small synthetic eval folder (MMAGENT_ROUTER_COMPETENCE), so the learned
path runs. Two request kinds: a colour question on a scene (auto picks adapter) and a receipt
question on a document page (auto picks tools). Each graph is compiled once; requests are
interleaved (auto, direct, auto, direct, ...) and invoked the same way. Medians per request, their
ratio (target <= 1.1x) and, for information, the route node's own time: the router step's `seconds`
(rounded to 0.1 ms by the record) and the node timed here with perf_counter (a wrapper, ~1 us).

A third graph, the direct route behind one no-op node, shows what any extra LangGraph step costs:
the floor of a router that is one node in front of its routes.

    .venv/bin/python benchmarks/router_overhead.py [--requests 300] [--profile 200]

`--profile N` also runs N more requests of each graph under cProfile and prints where the auto
graph spends time the direct one does not.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path


TARGET = 1.1


# -- the benchmark ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per graph and kind (default 300)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N requests of each graph (cProfile) and print the differences")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="router-overhead-"))
    os.environ.setdefault("MMAGENT_HOME", str(work / "home"))  # the media store: not the user's
    from mmagent.routing import fit
    from mmagent.testing import (ScriptedASR, ScriptedCaptioner, ScriptedEmbedder, ScriptedLLM, ScriptedOCR,
                                 ScriptedVLM, document_png, scene_png, scripted_toolbox, write_route_eval)

    competence = work / "router.json"
    fit([write_route_eval(work / "eval", routes=("tools", "adapter", "hybrid"))], ScriptedEmbedder()).save(competence)
    os.environ["MMAGENT_ROUTER_COMPETENCE"] = str(competence)  # before anything builds a router

    from langgraph.graph import START, StateGraph

    from mmagent.graphs import router as router_graph
    from mmagent.graphs.kit import MMState
    from mmagent.graphs_registry import get_graphs
    from mmagent.runner import build_pipeline, request_message

    node_seconds: list[float] = []
    route_node = router_graph.RouterNodes.route

    @functools.wraps(route_node)
    def timed_route(self, state):
        start = time.perf_counter()
        try:
            return route_node(self, state)
        finally:
            node_seconds.append(time.perf_counter() - start)

    router_graph.RouterNodes.route = timed_route  # type: ignore[method-assign]

    def behind_noop(name: str):
        """Route `name` behind a node that does nothing: what one more LangGraph step costs."""
        graph = get_graphs().get(name).build(toolbox)
        entry = next(end for start, end in graph.edges if start == START)
        graph.edges.discard((START, entry))
        graph.add_node("noop", lambda state: {})
        graph.add_edge(START, "noop")
        graph.add_edge("noop", entry)
        return graph.compile(name=f"noop+{name}")

    toolbox = scripted_toolbox(llm=ScriptedLLM("from the llm"), vlm=ScriptedVLM("from the vlm"),
                               ocr=ScriptedOCR(["TOTAL 9.75"]), asr=ScriptedASR("hello"),
                               caption=ScriptedCaptioner("shapes"), embed=ScriptedEmbedder())
    auto = build_pipeline("auto", toolbox)
    routes = sorted({n.split(".")[0] for n in auto.get_graph().nodes if "." in n})
    (work / "scene.png").write_bytes(scene_png(999))
    (work / "receipt.png").write_bytes(document_png(999))
    kinds = [
        ("colour question, scene", "adapter", request_message("What colour is the circle?", images=[work / "scene.png"])),
        ("receipt question, document", "tools",
         request_message("What is the total on the receipt?", images=[work / "receipt.png"])),
    ]
    print(f"auto graph: {len(auto.get_graph().nodes)} nodes, routes copied in: {', '.join(routes)}; "
          f"{args.requests} requests per graph and kind, interleaved\n")

    rows = []
    profiles = []
    for label, expected, message in kinds:
        direct = build_pipeline(expected, toolbox)
        graphs = {"auto": auto, expected: direct, "noop": behind_noop(expected)}
        route_seconds: list[float] = []

        def call(name: str) -> dict:
            return graphs[name].invoke({"messages": [message], "output": "auto"})

        first = call("auto")
        decision = first["route"]
        assert decision["route"] == expected, f"{label}: auto picked {decision['route']}, not {expected}"
        assert decision["method"].startswith("learned"), decision["method"]
        assert first["answer"] == call(expected)["answer"], "auto and the direct route answered differently"
        for _ in range(args.warmup):
            for name in graphs:
                call(name)
        times: dict[str, list[float]] = {name: [] for name in graphs}
        node_seconds.clear()
        for _ in range(args.requests):
            for name in graphs:
                start = time.perf_counter()
                out = call(name)
                times[name].append(time.perf_counter() - start)
                if name == "auto":
                    assert out["route"]["route"] == expected
                    route_seconds.append(next(s["seconds"] for s in out["route"]["steps"] if s.get("tool") == "router"))
        med = {name: statistics.median(samples) for name, samples in times.items()}
        rows.append((label, expected, med[expected], med["auto"], med["auto"] / med[expected], med["noop"],
                     statistics.median(route_seconds), statistics.median(node_seconds), decision["question_type"]))
        if args.profile:
            profiles.append((label, {name: profile(lambda n=name: call(n), args.profile)
                                     for name in ("auto", expected)}))

    print("| request | route picked | direct route | auto | **ratio** | direct behind a no-op node (ratio) "
          "| route node: step `seconds` / timed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, route, direct, auto_s, ratio, noop, step, node, _types in rows:
        print(f"| {label} | {route} | {direct * 1000:.3f} ms | {auto_s * 1000:.3f} ms | **{ratio:.2f}** "
              f"| {noop * 1000:.3f} ms ({noop / direct:.2f}) | {step * 1000:.1f} ms / {node * 1000:.3f} ms |")
    print("\n(medians per request; the step's `seconds` is rounded to 0.1 ms)")
    for label, route, direct, auto_s, ratio, noop, step, node, types in rows:
        print(f"{label}: auto - direct = {(auto_s - direct) * 1000:.3f} ms (route node {node * 1000:.3f} ms, "
              f"one more step {(noop - direct) * 1000:.3f} ms); question type "
              f"{', '.join(f'{k} {v:.2f}' for k, v in types.items())}")
    worst = max(r[4] for r in rows)
    print(f"\nworst overhead ratio {worst:.2f} (target <= {TARGET}): {'OK' if worst <= TARGET else 'OVER TARGET'}")
    for label, stats in profiles:
        print(f"\n== profile, {label}: {args.profile} requests each ==")
        report_difference(stats, args.profile)


def profile(fn, n: int) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    return pstats.Stats(prof)


def report_difference(stats: dict[str, pstats.Stats], n: int, top: int = 25) -> None:
    """Total time per request under the profiler, and the functions whose own time (tottime) grew
    most from the direct graph to auto."""
    direct_name = next(name for name in stats if name != "auto")
    auto, direct = stats["auto"], stats[direct_name]
    totals = {name: s.total_tt / n * 1000 for name, s in stats.items()}
    print(f"under cProfile: direct {totals[direct_name]:.3f} ms/request, auto {totals['auto']:.3f} ms/request "
          f"(+{totals['auto'] - totals[direct_name]:.3f} ms)")

    def own(s: pstats.Stats) -> dict[tuple, tuple[int, float, float]]:
        return {func: (nc, tt, ct) for func, (cc, nc, tt, ct, _callers) in s.stats.items()}  # type: ignore[attr-defined]

    a, d = own(auto), own(direct)
    grown = sorted(((a[f][1] - d.get(f, (0, 0.0, 0.0))[1], f) for f in a), reverse=True)[:top]
    print(f"{'extra own ms/req':>16} {'calls/req auto':>14} {'direct':>7} {'cum ms/req auto':>15}  function")
    for extra, f in grown:
        calls_a, calls_d = a[f][0] / n, d.get(f, (0, 0.0, 0.0))[0] / n
        filename, line, name = f
        where = f"{Path(filename).name}:{line}({name})" if line else name
        print(f"{extra / n * 1000:16.4f} {calls_a:14.1f} {calls_d:7.1f} {a[f][2] / n * 1000:15.3f}  {where}")
    ours = ("graphs/router.py", "mmagent/routing/")
    cumulative = sorted(((a[f][2] / n * 1000, f) for f in a if any(p in f[0].replace(os.sep, "/") for p in ours)),
                        reverse=True)[:12]
    print("\nthe router's own functions, cumulative ms/request:")
    for ms, (filename, line, name) in cumulative:
        print(f"{ms:10.4f}  {Path(filename).name}:{line}({name})")


if __name__ == "__main__":
    main()
