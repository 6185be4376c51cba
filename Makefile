# labboot: the two commands an admin or CI needs. Both install what is missing first.
CARGO ?= cargo

.PHONY: setup demo test lint build fuzz-smoke deb deb-test vm-test

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

# The Debian package: target/debian/labboot_<version>_<arch>.deb (scripts/deb.sh, appliance/debian/).
deb: setup
	@bash scripts/deb.sh

# The package's install test alone (also part of `make test`): root, mmdebstrap, lintian.
deb-test: setup
	@bash scripts/deb-test.sh

# The appliance VM image (tests/tests/appliance_vm.rs): the release package, the image built twice
# (same sha256), booted under QEMU with OVMF; a virtual arm64 board boots the master from it and
# a job runs through its API. About 10 minutes: not part of `make test`.
vm-test: setup
	$(CARGO) test -p labboot-tests --test appliance_vm -- --ignored --nocapture

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Fuzzing (fuzz/README.md): builds every cargo-fuzz target, runs each for 30 s on its corpus
# (FUZZ_SECONDS=), dev profile unless FUZZ_PROFILE=release, fails on a crash. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1.
FUZZ_SECONDS ?= 30
FUZZ_PROFILE ?= dev
fuzz-smoke: setup
	RUSTC_BOOTSTRAP=1 FUZZ_PROFILE=$(FUZZ_PROFILE) nice -n 10 bash fuzz/smoke.sh $(FUZZ_SECONDS)
