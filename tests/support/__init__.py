"""Test support shared by tests and benchmarks: outside systems (Orthanc) started from project config."""
