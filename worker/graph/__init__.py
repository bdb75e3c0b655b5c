"""The graphs the worker submits to ComfyUI, one concern per module:

* ``api``: helpers over API-format graphs (``is_link``, ``upstream``, ``find_cycle``) and the checks' base;
* ``workflow``: a pinned graph and its bindings (``Workflow.load``), built into one job's graph;
* ``windows``: the bindings' ``windows`` section (parsed and checked once, at load) and the
  expansion of a graph for a clip's length; ``chunks``: a clip as consecutive prompts;
* ``catalogue``: the pinned stack's node catalogue (``workflows/object_info_pinned.json``);
* ``comfy_checks``: what ComfyUI's ``POST /prompt`` checks, and what it lets through;
* ``wan_rules``, ``frame_count``: this repository's rules for its graphs;
* ``checks``: all of them on one graph, and the workflow loaded with every kind of graph checked;
* ``__main__``: ``python -m worker.graph print | check | extract-catalogue``.

Nothing is imported here, so ``worker.graph.api`` stays cheap to import (the fake ComfyUI uses it).
"""
