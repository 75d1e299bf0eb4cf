"""Side-by-side performance runs (issue 8): our servers and kit against Orthanc, dicomweb-client and curl.

Not tests: run with ``make bench`` (``python -m benchmarks.run``). Every figure is a ratio against a
baseline measured in the same run, with the systems interleaved so that machine drift hits both alike.
"""
