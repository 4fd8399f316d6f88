"""dcopt's benchmark harness: dcopt beside onnxruntime, torch eager and OpenVINO, same run.

Run it as ``python -m benchmarks.run`` (see that module). This file imports nothing on
purpose: ``benchmarks.run`` must adjust the BLAS environment before numpy is first imported.
"""
