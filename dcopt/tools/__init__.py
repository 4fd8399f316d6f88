"""Developer tools shipped with dcopt (conformance runner)."""
