# s4s-jupyter: the two set-up commands of the README are `make demo` and `make test`.
# Both work on a fresh Debian 12 machine with Python >= 3.11: they create .venv and install everything.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= demo-data
# Debian packages the tests drive as outside components (Orthanc, dcmtk, headless Chromium).
DEBIAN_PACKAGES = orthanc orthanc-dicomweb dcmtk chromium iproute2
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck pytest venv debian clean-demo bench

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# Installs the Debian packages only when one is missing (apt-get update first, as Debian requires).
debian:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		echo "installing Debian packages: $(DEBIAN_PACKAGES)"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

# As root, pytest runs in a network namespace that has only `lo`: every server of the tests (Orthanc
# included, which cannot bind to one address) is reachable on loopback alone. Elsewhere it runs as is.
NETNS = s4s-test-$(shell echo $$PPID)
pytest: venv debian
	@if [ "$$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 && ip netns add $(NETNS) 2>/dev/null; then \
		ip netns exec $(NETNS) ip link set lo up; \
		echo "running pytest in network namespace $(NETNS) (loopback only)"; \
		ip netns exec $(NETNS) $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
		ip netns del $(NETNS); exit $$rc; \
	else \
		$(BIN)/pytest $(PYTEST_ARGS); \
	fi

# The test command: lint, types, then every test (real servers on loopback, Orthanc, Chromium).
test: venv debian lint typecheck pytest

# The main job: the demo stack and JupyterLab on loopback (URLs in $(DATA)/urls.json).
demo: venv
	mkdir -p $(DATA)
	$(BIN)/s4s-servers lab --data-dir $(DATA) --urls-file $(DATA)/urls.json

clean-demo:
	rm -rf $(DATA)

# Side by side with Orthanc, dicomweb-client and curl (issue 8; not part of `make test`): about 2 GB of
# generated DICOM, cached under benchmarks/results/; results in benchmarks/results/latest.md and .json.
# BENCH_ARGS="--size small" for a quick run; see docs/benchmarks.md.
bench: venv debian
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
