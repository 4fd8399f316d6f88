"""Model versions: per-parameter diffs, merges and compact storage under git.

* :mod:`~dcopt.versions.formats` -- formats sniffed by content (ONNX, safetensors, torch state
  dicts; plugins through the ``dcopt.model_formats`` entry point group);
* :mod:`~dcopt.versions.params` -- a model file as its skeleton plus named parameters;
* :mod:`~dcopt.versions.diff` -- structural and per-parameter changes, and what they mean for a build;
* :mod:`~dcopt.versions.store` -- the content-addressed object store (``.git/dcopt/objects``);
* :mod:`~dcopt.versions.updates` -- dense, sparse and low-rank update types;
* :mod:`~dcopt.versions.manifest` -- the small file git commits instead of the model;
* :mod:`~dcopt.versions.merge` -- merge strategies (plugins: ``dcopt.merge_strategies``);
* :mod:`~dcopt.versions.torch_pickle` -- which state-dict key owns which ``torch.save`` storage;
* :mod:`~dcopt.versions.external_data` -- ONNX external data files, stored per tensor;
* :mod:`~dcopt.versions.index` -- which manifest rebuilds a model (for ``git log -p``);
* :mod:`~dcopt.versions.git` -- the clean/smudge filter process, diff and merge drivers, setup;
* :mod:`~dcopt.versions.transport` -- the store carried by ``git push``/``fetch`` on ``refs/dcopt/objects``.
"""
