"""Public testing tools: Hypothesis strategies (:mod:`.strategies`), conformance checks (:mod:`.checks`), their
Hypothesis runner (:mod:`.runner`, behind ``verified-ta conform``) and the pytest plugin (:mod:`.pytest_plugin`)."""
