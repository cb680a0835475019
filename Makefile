# kproxy: `make test` is the one command CI runs. On a fresh Debian machine
# (as root) it installs what it needs, runs the unit tests on the host, then
# builds the kernel tests and runs them in a VM under a stock Debian kernel.

CARGO ?= cargo
VM := scripts/vm
# Host packages the host-side tests use (iptables mode inside `unshare -n`).
HOST_PACKAGES := iptables ipset iproute2 conntrack jq util-linux curl python3

.PHONY: all setup build test test-host test-vm fuzz demo bench fmt fmt-check clippy shellcheck

all: build

## setup: install the VM (qemu, a Debian kernel), the host test tools and a
##        real control plane (etcd, kube-apiserver, kube-proxy, kubectl; built
##        from Go modules once per machine, see scripts/k8s-tools)
setup:
	@$(VM) setup
	@scripts/k8s-tools setup
	@$(VM) packages $(HOST_PACKAGES)
	@# Test "pods" serve HTTP with busybox httpd; any busybox will do, so an
	@# installed busybox-static is left alone.
	@command -v busybox >/dev/null || $(VM) packages busybox

## build: debug build of kproxy
build:
	$(CARGO) build

## test: unit tests on the host, then the kernel tests in the VM
test: setup
	@$(MAKE) --no-print-directory test-host
	@$(MAKE) --no-print-directory test-vm

## test-host: the shape limits (scripts/shape-check), cargo test on the host (VM-only tests are #[ignore]d there), then
##            the end-to-end scripts integration/host/*.sh, each in fresh network
##            namespaces with its own etcd + kube-apiserver (scripts/host-e2e.sh;
##            HOST_TEST_FILTER=substring runs a subset)
test-host:
	scripts/shape-check
	$(CARGO) test
	$(CARGO) build --bin kproxy
	scripts/host-e2e.sh

## test-vm: build the vm_* test binaries and kproxy, run them and integration/*.sh in the VM
##          (VM_TEST_FILTER=substring runs a subset)
test-vm:
	scripts/build-vm-tests.sh

## fuzz: the generated-input tests (`fuzz_*`: manifests, conversion and planners, the
##       netlink decoders, the iptables-save and ipset parsers) at KPROXY_FUZZ_SCALE
##       times the inputs `make test` tries (default 20); each prints its count
fuzz:
	KPROXY_FUZZ_SCALE=$${KPROXY_FUZZ_SCALE:-20} $(CARGO) test --lib fuzz_ -- --nocapture

## demo: kproxy programs IPVS for examples/ in the VM; real requests go through it
demo: setup
	$(CARGO) build --bin kproxy
	@KPROXY=target/debug/kproxy $(VM) run -- scripts/demo-vm.sh

## bench: kproxy against the kernel floor and ipvsadm -R in the VM (release build)
##        BENCH_SERVICES / BENCH_ENDPOINTS set the size (default 10000 x 10)
bench: setup
	scripts/bench.sh

fmt:
	$(CARGO) fmt

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

shellcheck:
	@$(VM) packages shellcheck
	shellcheck scripts/vm scripts/*.sh
