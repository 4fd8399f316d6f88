"""A readable text form of the IR, for dumps, diffs and debugging.

    graph resnet (opset ai.onnx=9)
      input  data: float32[N,3,224,224]
      param  conv1_w: float32[64,3,7,7]
      %conv1 = Conv(data, conv1_w) {kernel_shape=[7,7], pads=[3,3,3,3], strides=[2,2]}  # float32[N,64,112,112]
      output prob
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph, Node


def format_attr(value) -> str:
    from dcopt.ir.graph import Graph as _Graph

    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"tensor<{value.dtype}{list(value.shape)}>{value.tolist()}"
        return f"tensor<{value.dtype}{list(value.shape)}>"
    if isinstance(value, _Graph):
        return f"graph<{value.name}: {len(value.nodes)} nodes>"
    if isinstance(value, tuple):
        return "[" + ",".join(format_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_node(node: Node, graph: Graph | None = None) -> str:
    if node.domain == "dcopt.loop":
        from dcopt.ir.loops import format_loop_node

        return format_loop_node(node)
    outs = ", ".join(f"%{o}" if o else "_" for o in node.outputs)
    ins = ", ".join(i if i else "_" for i in node.inputs)
    op = f"{node.domain}.{node.op}" if node.domain else node.op
    text = f"{outs} = {op}({ins})"
    if node.attrs:
        text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(node.attrs.items())) + "}"
    if graph is not None:
        types = [str(graph.containers[o].type) for o in node.outputs if o and o in graph.containers]
        if types:
            text += "  # " + ", ".join(types)
    if node.name and node.name not in node.outputs:
        text += f"  [{node.name}]"
    return text


def format_graph(graph: Graph, indent: str = "  ") -> str:
    opsets = ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in sorted(graph.opset.items()))
    lines = [f"graph {graph.name} (opset {opsets})"]
    for name in graph.inputs:
        lines.append(f"{indent}input  {name}: {graph.containers[name].type}")
    for name, c in graph.parameters.items():
        lines.append(f"{indent}param  {name}: {c.type}")
    for node in graph.nodes:
        lines.append(indent + format_node(node, graph))
        for key, value in node.attrs.items():
            if isinstance(value, Graph):
                lines.append(f"{indent}  subgraph {key}:")
                lines.append("\n".join(indent * 2 + line for line in format_graph(value, indent).splitlines()))
    for name in graph.outputs:
        lines.append(f"{indent}output {name}: {graph.containers[name].type}")
    return "\n".join(lines)
