# Convenience wrapper: ./configure creates build/, where CMake's Makefile lives.
BUILD ?= build

all: $(BUILD)/Makefile
	$(MAKE) -C $(BUILD)

install: all
	$(MAKE) -C $(BUILD) install

test:
	./tests/run

clean:
	rm -rf $(BUILD) target

$(BUILD)/Makefile:
	@echo "Run ./configure first." >&2; exit 1

.PHONY: all install test clean
