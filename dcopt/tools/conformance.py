"""Run ONNX's node conformance cases through a backend and tally the results.

    python -m dcopt.tools.conformance                 # all cases, summary
    python -m dcopt.tools.conformance --op Conv -v    # one op, every failure's reason
    python -m dcopt.tools.conformance --backend onnxruntime   # the peer, in the same loop
    python -m dcopt.tools.conformance --compiled      # through dcopt.compile(...).run (the product)

The test suite uses :func:`run_case` with the expected-failure list in
``tests/conformance_expected_failures.py``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings

import numpy as np
from dcopt.ops.misc import RANDOM_OPS


def collect_cases():
    """All node test cases shipped with the installed onnx package."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return collect_testcases(None)


def case_op(case) -> str:
    """The op a case tests: the first non-Constant node (expanded cases have many)."""
    for node in case.model.graph.node:
        if node.op_type != "Constant":
            return node.op_type
    return case.model.graph.node[0].op_type if case.model.graph.node else "?"


def _compare(expected, actual, rtol, atol) -> None:
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), "sequence output mismatch"
        for e, a in zip(expected, actual):
            _compare(e, a, rtol, atol)
        return
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert expected.dtype == actual.dtype or (expected.dtype.kind in "OUS" and actual.dtype.kind in "OUS"), \
        f"dtype {actual.dtype} != expected {expected.dtype}"
    assert expected.shape == actual.shape, f"shape {actual.shape} != expected {expected.shape}"
    if expected.dtype == object or expected.dtype.kind in "US":
        assert expected.tolist() == actual.tolist(), "string values differ"
    elif expected.dtype.kind in "fc" or expected.dtype.kind == "V" or expected.dtype.itemsize == 1 and expected.dtype.kind not in "biu":
        np.testing.assert_allclose(actual.astype(np.float64) if expected.dtype.kind == "V" else actual,
                                   expected.astype(np.float64) if expected.dtype.kind == "V" else expected,
                                   rtol=rtol, atol=atol, equal_nan=True)
    else:
        try:
            np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
                                       equal_nan=True)
        except TypeError:
            np.testing.assert_array_equal(actual, expected)


def _as_array(value):
    """Test data may come as TensorProtos (narrow float types); load them as numpy arrays."""
    from onnx import TensorProto, numpy_helper

    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_as_array(v) for v in value]
    return value




def is_random(case) -> bool:
    """Whether a case draws random numbers: its expected values came from an unseeded RNG when
    ONNX generated it, so only their dtype, shape and value set can be checked."""
    return any(node.op_type in RANDOM_OPS for node in case.model.graph.node)


def _compare_random(expected, actual) -> None:
    """What a random op's output must satisfy whatever the draw: dtype and shape as expected, and
    values from the same support (0/1 when the expected draw is 0/1, as Bernoulli's is; finite
    otherwise)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert expected.dtype == actual.dtype, f"dtype {actual.dtype} != expected {expected.dtype}"
    assert expected.shape == actual.shape, f"shape {actual.shape} != expected {expected.shape}"
    if np.isin(expected, (0, 1)).all():
        assert np.isin(actual, (0, 1)).all(), f"values outside {{0, 1}}: {np.unique(actual)[:8]}"
    else:
        assert np.isfinite(actual.astype(np.float64)).all(), "non-finite random values"


def run_case(case, backend) -> None:
    """Run one case through ``backend``; raise AssertionError/DcoptError on mismatch. A random
    case (:func:`is_random`) is checked by :func:`_compare_random`, since its draw cannot match."""
    compare = (lambda e, a: _compare_random(e, a)) if is_random(case) else \
        (lambda e, a: _compare(e, a, case.rtol, case.atol))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        rep = backend.prepare(case.model, "CPU")
        for inputs, expected in case.data_sets:
            inputs, expected = _as_array(list(inputs)), _as_array(list(expected))
            outputs = rep.run(inputs)
            assert len(outputs) >= len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
            for e, a in zip(expected, outputs):
                compare(e, a)


class _CompiledBackend:
    """dcopt's backend API in compiled mode (:class:`dcopt.backend.CompiledRep`); keeps the last
    representation so the runner can read its step kinds."""

    def __init__(self, cache_dir=None):
        self.cache_dir = cache_dir
        self.last = None

    def prepare(self, model, device="CPU"):
        import dcopt.backend

        self.last = dcopt.backend.prepare(model, device, compiled=True, cache_dir=self.cache_dir)
        return self.last


class _OrtBackend:
    """onnxruntime in the same loop, for comparison."""

    @staticmethod
    def prepare(model, device="CPU"):
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        class Rep:
            @staticmethod
            def run(inputs):
                return sess.run(None, dict(zip(names, inputs)))

        return Rep()


def _short_reason(reason: str) -> str:
    """Trim run-specific detail (paths, array dumps) so the reason reads as a cause."""
    for marker in (" (inputs ", "\nMismatched", "Mismatched elements"):
        reason = reason.split(marker)[0]
    return reason.strip()[:160]


def not_native_reason(not_native: dict[str, int]) -> str:
    """'Cast (fallback), Unique (dynamic)': the ops of a compiled case that did not run as
    generated code or library calls."""
    return ", ".join(sorted(not_native))


def write_expected(path: str, reasons: dict[str, str], not_native: dict[str, str] | None = None) -> None:
    """Write the failing cases (and, for a compiled run, the passing cases that ran a dynamic or
    fallback step) as a module the test suite reads."""
    lines = ['"""ONNX node conformance cases dcopt is expected to fail, with the reason each fails.',
             "",
             "Regenerate with ``python -m dcopt.tools.conformance "
             + ("--compiled " if not_native is not None else "") + "--write-expected PATH`` after fixing ops;",
             "the conformance test fails when a listed case starts passing"
             + (" or runs natively" if not_native is not None else "") + ", so this list stays honest.",
             '"""', "", "EXPECTED_FAILURES = {"]
    for name in sorted(reasons):
        lines.append(f"    {name!r}: {_short_reason(reasons[name])!r},")
    lines.append("}")
    if not_native is not None:
        lines += ["", "#: Passing cases that run some op as a dynamic (value-sized, numpy) or fallback step.",
                  "NOT_NATIVE = {"]
        for name in sorted(not_native):
            lines.append(f"    {name!r}: {not_native[name]!r},")
        lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", action="append", help="only cases of this op (repeatable)")
    parser.add_argument("--name", help="only cases whose name contains this")
    parser.add_argument("--backend", default="dcopt", choices=["dcopt", "onnxruntime"])
    parser.add_argument("--compiled", action="store_true",
                        help="run cases through dcopt.compile(...).run (generated code), not the reference executor")
    parser.add_argument("--cache-dir", help="compile cache for --compiled (default: the user cache)")
    parser.add_argument("--json", metavar="PATH", help="write per-case results (status, reason, step kinds) as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure's reason")
    parser.add_argument("--write-expected", metavar="PATH",
                        help="write the failing cases and their reasons as an EXPECTED_FAILURES module "
                             "(with --compiled, also the passing cases that are not fully native)")
    args = parser.parse_args(argv)
    compiled = _CompiledBackend(args.cache_dir) if args.compiled else None
    if compiled is not None:
        backend = compiled
    elif args.backend == "dcopt":
        import dcopt.backend as backend
    else:
        backend = _OrtBackend
    cases = collect_cases()
    if args.op:
        cases = [c for c in cases if case_op(c) in args.op]
    if args.name:
        cases = [c for c in cases if args.name in c.name]
    passed, failed = 0, collections.Counter()
    reasons: dict[str, str] = {}
    not_native: dict[str, str] = {}
    records = {}
    for case in cases:
        if compiled is not None:
            compiled.last = None
        start = time.perf_counter()
        try:
            run_case(case, backend)
            passed += 1
            records[case.name] = {"op": case_op(case), "status": "pass"}
        except Exception as exc:  # tally every kind of failure
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            failed[case_op(case)] += 1
            reasons[case.name] = reason
            records[case.name] = {"op": case_op(case), "status": "fail", "reason": reason}
            if args.verbose:
                print(f"FAIL {case.name}: {reason}")
        records[case.name]["seconds"] = round(time.perf_counter() - start, 3)
        if compiled is not None and compiled.last is not None:
            records[case.name]["steps"] = dict(compiled.last.steps)
            records[case.name]["not_native"] = dict(compiled.last.not_native)
            if records[case.name]["status"] == "pass" and compiled.last.not_native:
                not_native[case.name] = not_native_reason(compiled.last.not_native)
    print(f"{passed} passed, {sum(failed.values())} failed of {len(cases)} cases")
    if compiled is not None:
        print(f"{passed - len(not_native)} passed with no fallback or dynamic step")
        ops = collections.Counter()
        for r in records.values():
            for op in r.get("not_native", {}):
                ops[op] += 1
        if ops:
            print("cases with a not-native step, by op:", ", ".join(f"{op}={n}" for op, n in ops.most_common()))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.write_expected:
        write_expected(args.write_expected, reasons, not_native if compiled is not None else None)
    if failed and not args.verbose:
        print("failures by op:", ", ".join(f"{op}={n}" for op, n in failed.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
