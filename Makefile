# Thin wrappers over the pipeline CLI (pipeline/cli.ts), keeping Kuasar's target names.
# The pipeline's content-addressed cache decides what is stale, so every target is phony.
DEST_DIR ?= /
HYPERVISOR ?= qemu
BUILD = bash scripts/install-prereqs.sh >/dev/null && node pipeline/bin/kuasar-build.js $(BUILD_FLAGS)

.PHONY: all bin/vmm-sandboxer bin/vmm-task bin/vmlinux.bin bin/kuasar.img bin/kuasar.initrd units \
	dist install-vmm uninstall-vmm test demo clean

all:
	$(BUILD) all

bin/vmm-sandboxer:
	$(BUILD) sandboxer

bin/vmm-task:
	$(BUILD) task

bin/vmlinux.bin:
	$(BUILD) kernel

bin/kuasar.img:
	$(BUILD) image

bin/kuasar.initrd:
	$(BUILD) initrd

units:
	$(BUILD) units

# dist/kuasar-vmm-<version>-<arch>.tar.zst with its SBOM and SHA256SUMS: tar -xf it, then ./install.sh on any host.
dist:
	$(BUILD) dist

install-vmm:
	$(BUILD) install --dest-dir $(DEST_DIR) --hypervisor $(HYPERVISOR)

uninstall-vmm:
	$(BUILD) uninstall --dest-dir $(DEST_DIR)

test:
	npm test

demo:
	npm run demo

clean:
	rm -rf bin dist
