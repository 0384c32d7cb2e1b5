"""Local stand-ins for cloud services, used by `make dev`, `make demo` and the tests."""
