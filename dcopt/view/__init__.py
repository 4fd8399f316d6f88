"""``dcopt view``: the IR of one model through the pipeline, in a browser.

A :class:`~dcopt.view.session.ViewSession` holds the model and an editable list of steps (the
pipeline's passes, flattened down to fixed-point sub-pipelines, plus the passes and patches the
user inserted), runs them, and keeps the graph after every step (:mod:`dcopt.view.stages`), then
the loop-level lowering ``dcopt compile`` would apply. The rest reads those graphs:

* :mod:`~dcopt.view.graph_json` -- a stage's graph as nodes/edges for the browser, and what changed;
* :mod:`~dcopt.view.details` -- one node: attributes, types, cost, loop expansion, kernel source, time;
* :mod:`~dcopt.view.candidates` -- the passes and patches that apply (or nearly) at a node;
* :mod:`~dcopt.view.step_params` -- patch parameters and pass options as form fields, and the step
  a filled form makes;
* :mod:`~dcopt.view.origin` -- where a node came from (the ONNX node, a PyTorch source line);
* :mod:`~dcopt.view.build_panel`, :mod:`~dcopt.view.run_panel` -- a build (manifest, kernels with
  source, the nodes each covers) and a recorded run (figures, latency chart data) side by side;
* :mod:`~dcopt.view.pipeline_file` -- the step list as a file ``dcopt opt --pipeline`` replays;
* :mod:`~dcopt.view.server` -- the local JSON API and page; :mod:`~dcopt.view.page` -- the page,
  live or as one self-contained HTML file (``--export``, ``dcopt report --html``).

The page (``static/``) draws graphs with cytoscape.js and the dagre layout, bundled under
``static/vendor`` so nothing is fetched from the network; ``charts.js`` draws the run's charts as
plain SVG, ``records.js`` is the build & run panel, ``forms.js`` the parameter forms.
"""
