# Convenience wrapper: ./configure creates build/, where CMake's Makefile lives.
BUILD ?= build

all: $(BUILD)/Makefile
	$(MAKE) -C $(BUILD)

install: all
	$(MAKE) -C $(BUILD) install

test:
	./tests/run

# A source tarball of HEAD with the crates vendored, for an offline build
# (README, "Offline install"); DIST_DIR: where to write it.
DIST_DIR ?= .
dist:
	./tools/make-dist $(DIST_DIR)

clean:
	rm -rf $(BUILD) target

$(BUILD)/Makefile:
	@echo "Run ./configure first." >&2; exit 1

.PHONY: all install test clean dist
