"""Load tests and benchmarks for the image-classification service. They only target 127.0.0.1."""
