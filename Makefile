# Everyday targets. `make test` is the one command that runs every test (README, .ci/run).
.PHONY: test test-rust test-c test-python lint fmt bench server

CARGO ?= cargo

test: lint test-rust test-c test-python

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

test-c:
	bash kvs-ffi/tests/run.sh

test-python:
	bash kvs-py/tests/run.sh

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench -p kvs

server:
	$(CARGO) run --release -p kvs-server
