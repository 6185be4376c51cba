# labboot: the two commands an admin or CI needs. Both install what is missing first.
CARGO ?= cargo

.PHONY: setup demo test lint build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace

# The demo: `labboot serve` and a virtual QEMU arm64 board in a private namespace; the board
# netboots the master, its agent checks in, a LAVA job runs through the API (JOB=, OUT=, KEEP=1).
demo: setup
	@JOB="$(JOB)" OUT="$(OUT)" KEEP="$(KEEP)" bash scripts/demo.sh

# Every test, the virtual-lab ones included (they need root, QEMU and U-Boot: setup installs them).
test: setup
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
