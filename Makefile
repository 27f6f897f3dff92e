# Everyday targets. `make test` is the one command that runs every test (README, .ci/run).
.PHONY: test test-rust test-c test-python test-slow lint fmt bench server install

CARGO ?= cargo
# `make server`: where the server keeps its data, and extra arguments for it.
DATA ?= kvs-data
ARGS ?=
PREFIX ?= /usr/local
# `make install PROFILE=debug`: install the debug build of libkvs (faster to build; the C tests).
PROFILE ?= release

test: lint test-rust test-c test-python

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# kvs without its network half (feature `net`), as libkvs links it; and libkvs must not
	# pull the network stack back in.
	$(CARGO) build -p kvs --no-default-features
	$(CARGO) clippy -p kvs --no-default-features --all-targets -- -D warnings
	! $(CARGO) tree -p kvs-ffi -e normal --prefix none | grep -E '^(mio|bincode|serde) '

test-rust:
	bash tests/setup.sh
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# The long versions of the crash, corruption, fault, hostile-input and chaos suites
# (docs/RELIABILITY.md): a few minutes.
test-slow:
	KVS_CRASH_CYCLES=100 KVS_CORRUPTION_CASES=20000 KVS_MANY_FILES_KEYS=285000 $(CARGO) test -p kvs --test crash --test corruption --test faults -- --nocapture
	KVS_HOSTILE_CASES=200000 KVS_CHAOS_SECS=60 $(CARGO) test -p kvs-tests --test hostile --test chaos -- --nocapture

test-c:
	bash kvs-ffi/tests/run.sh

test-python:
	bash kvs-py/tests/run.sh

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench -p kvs
	bash tests/setup.sh
	$(CARGO) bench -p kvs-server --bench load
	$(CARGO) bench -p kvs-server --bench resp

server:
	$(CARGO) build --release -p kvs-server -p kvs-client -p kvs-admin
	mkdir -p "$(DATA)" && cd "$(DATA)" && exec "$(CURDIR)/target/release/kvs-server" $(ARGS)

# Installs the C library, header and pkg-config files into PREFIX.
install:
	bash kvs-ffi/install.sh $(if $(filter debug,$(PROFILE)),--debug) "$(PREFIX)"
