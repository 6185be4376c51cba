# labboot: the two commands an admin or CI needs. Both install what is missing first.
CARGO ?= cargo

.PHONY: setup demo test lint build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace

# The demo: a virtual board (QEMU arm64 + U-Boot) boots a labboot SD card, gets an address from
# labboot dhcp and runs the board script labboot tftp renders for it, in a private namespace.
demo: setup
	@bash scripts/demo.sh

# Every test, the virtual-lab ones included (they need root, QEMU and U-Boot: setup installs them).
test: setup
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
