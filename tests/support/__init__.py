"""What tests and benchmarks share: the real data beside the project, stores built for tests,
small ONNX networks, servers on 127.0.0.1, damaged stores and hostile inputs. Fixtures stay in
``tests/conftest.py``; everything here is importable by both."""
