"""Public testing tools: Hypothesis strategies and conformance checks for tensor attention."""
