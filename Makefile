# riverbed — the verbs a newcomer needs. `make help` lists them.
PYTHON ?= python3
# The Rust crates with tests of their own (the binding crate is tested through pytest).
RUST_TESTED := --workspace --exclude riverbed-python

.PHONY: help demo install test test-rust test-python fuzz bench lint develop system-deps

# Debian packages the build needs: a C toolchain, and OpenSSL and zlib headers for librdkafka
# (built from its vendored source into the extension).
SYSTEM_PACKAGES := build-essential pkg-config libssl-dev zlib1g-dev
# ...and the tests: kcat, a Kafka client of another language, against `riverbed serve`.
TEST_SYSTEM_PACKAGES := kcat

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

system-deps: ## install the Debian packages the build needs (only those missing)
	@if command -v dpkg >/dev/null 2>&1; then \
		missing=$$(for p in $(SYSTEM_PACKAGES) $(EXTRA_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages: $$missing"; \
			sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
			$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
		fi; \
	else \
		echo "not a Debian system: make sure a C compiler, pkg-config, OpenSSL and zlib headers are installed"; \
	fi

install: system-deps ## build the extension (release) and install riverbed with its CLI
	$(PYTHON) -m pip install .

demo: install ## install, then run the demo on the embedded log
	riverbed demo

test: ## install the test dependencies and the package, then the lints and every test (Rust and Python)
	$(MAKE) system-deps EXTRA_PACKAGES="$(TEST_SYSTEM_PACKAGES)"
	$(PYTHON) -m pip install '.[test]'
	$(MAKE) lint
	cargo test $(RUST_TESTED)
	$(MAKE) fuzz
	$(PYTHON) -m pytest tests

test-rust: ## only the Rust crates' tests
	cargo test $(RUST_TESTED)

fuzz: ## the fuzz targets (record-batch decoder plain and compressed, segment recovery, checkpoint decoder, the broker's request decoder), RIVERBED_FUZZ_SECONDS (60) each, all at once
	@# The same package selection as test-rust, so these are the binaries it built (`-p <crate>`
	@# would unify features differently and rebuild the dependencies: minutes in CI).
	cargo test $(RUST_TESTED) --test fuzz --test checkpoint_files --test fuzz_requests --no-run
	@export RIVERBED_FUZZ_SECONDS=$${RIVERBED_FUZZ_SECONDS:-60}; \
	cargo test $(RUST_TESTED) --test fuzz -- --ignored --test-threads=3 & a=$$!; \
	cargo test $(RUST_TESTED) --test checkpoint_files -- --ignored --test-threads=1 & b=$$!; \
	cargo test $(RUST_TESTED) --test fuzz_requests -- --ignored --exact fuzz_request_decoding_for_a_while & c=$$!; \
	rc=0; for p in $$a $$b $$c; do wait $$p || rc=1; done; exit $$rc

test-python: ## only pytest (against the installed package)
	$(PYTHON) -m pytest tests

develop: ## rebuild the extension into the current environment, release mode
	maturin build --release -o target/wheels && $(PYTHON) -m pip install --force-reinstall --no-deps target/wheels/riverbed-*.whl

bench: ## print the benchmark figures
	$(PYTHON) benchmarks/log_throughput.py
	$(PYTHON) benchmarks/window_throughput.py
	$(PYTHON) benchmarks/features_throughput.py
	$(PYTHON) benchmarks/checkpoint_cost.py
	$(PYTHON) benchmarks/kafka_throughput.py
	$(PYTHON) benchmarks/serve_throughput.py

lint: ## formatting, lints (clippy, ruff) and the native module's stubs checked against the installed build (stubtest)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benchmarks
	$(PYTHON) -m mypy.stubtest --ignore-disjoint-bases --mypy-config-file pyproject.toml riverbed._core
