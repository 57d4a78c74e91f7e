# rootfs developer and CI entry points. Run `make help` for the list.
#
# Every target that needs the toolchain depends on `install`, which is idempotent and quick once done:
# Debian packages are checked with dpkg and only fetched when one is missing, and the virtualenv is
# reinstalled only when pyproject.toml changes (the stamp file is named after its hash).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Debian packages the tests, demo and benchmarks need. The one list to extend when a later issue
# brings in a real component (nfs-ganesha, dnsmasq, qemu, ...).
DEB_PACKAGES := rsync attr busybox-static zstd xz-utils debootstrap fuse3
DEB_PACKAGES += atftp tftp-hpa tftpd-hpa curl pxelinux syslinux-common ipxe grub-efi-amd64-bin shim-signed iproute2
DEB_PACKAGES += isc-dhcp-client dnsmasq-base iproute2
DEB_PACKAGES += fuse3 libfuse3-dev pkg-config bindfs
DEB_PACKAGES += nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils
DEB_PACKAGES += qemu-system-x86 ipxe-qemu
# cached clients: the e2e disk image (debugfs) and counting NFS bytes per client (nft)
DEB_PACKAGES += e2fsprogs nftables
# UEFI clients (OVMF firmware, Debian's signed network GRUB) and HTTP peers/clients for tests
DEB_PACKAGES += ovmf grub-efi-amd64-signed wget
# peers only the benchmarks run (bench-http, bench-storm)
BENCH_PACKAGES := nginx-light
# Each benchmark runs its peer in the same run and prints ratios; `make bench` runs them all.
BENCHES := build update dhcp tftp http cache cachedboot storm

# Reinstall the venv whenever pyproject.toml's content (not just its mtime) changes.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)

# The demo runs against the repo's own default site, with all state kept under ./demo/.
DEMO_DIR ?= $(CURDIR)/demo

.PHONY: help install system-packages bench-packages venv lint test demo bench clean $(addprefix bench-,$(BENCHES))

help:
	@echo "make test    install everything, then ruff, mypy and pytest (what CI runs)"
	@echo "make demo    build the default site's hosts from a small base, state under ./demo/"
	@echo "make bench   every benchmark against its peer (bench-build, bench-update, bench-dhcp,"
	@echo "             bench-tftp, bench-cache, bench-cachedboot: cp/rsync, rsync, dnsmasq, tftp-hpa,"
	@echo "             bindfs, a plain NFS-root boot)"
	@echo "make lint    ruff check, mypy, and the import layers (lint-imports)"
	@echo "make install Debian packages + $(VENV) with rootfs and its test tools"
	@echo "make clean   remove ./demo/ and the install stamp"

install: system-packages venv

system-packages:
	@bash scripts/setup-system $(DEB_PACKAGES)

bench-packages: system-packages
	@bash scripts/setup-system $(BENCH_PACKAGES)

venv: $(STAMP)

# pyfuse3 compiles against libfuse3-dev: the Debian packages must be there before pip runs.
$(STAMP): | system-packages
$(STAMP):
	@echo "== installing rootfs into $(VENV)"
	rm -f $(VENV)/.installed-*
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Every linter runs even when an earlier one complains, so one pass shows everything to fix.
lint: install
	@rc=0; \
	echo "== ruff check"; $(BIN)/ruff check . || rc=1; \
	echo "== mypy"; $(BIN)/mypy || rc=1; \
	echo "== lint-imports (the layers in pyproject.toml)"; $(BIN)/lint-imports --no-cache || rc=1; \
	exit $$rc

# pytest's exit status is passed through as is: "no tests collected" (5) fails the target too.
test: lint
	@echo "== pytest"
	$(BIN)/pytest

demo: install
	ROOTFS_SITE=$(CURDIR) \
	ROOTFS_STATE_DIR=$(DEMO_DIR)/state \
	ROOTFS_EXPORT_ROOT=$(DEMO_DIR)/tftpboot \
	ROOTFS=$(CURDIR)/$(BIN)/rootfs \
	DEMO_DIR=$(DEMO_DIR) \
	bash scripts/demo
	ROOTFS_SITE=$(CURDIR) \
	ROOTFS_STATE_DIR=$(DEMO_DIR)/state \
	ROOTFS_EXPORT_ROOT=$(DEMO_DIR)/tftpboot \
	DEMO_DIR=$(DEMO_DIR) \
	$(BIN)/python scripts/demo-boot

bench: $(addprefix bench-,$(BENCHES))

$(addprefix bench-,$(BENCHES)): bench-%: install bench-packages
	$(BIN)/python -m bench.$* $(BENCH_ARGS)

clean:
	rm -rf demo
	rm -f $(VENV)/.installed-*
