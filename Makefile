# latscope — see README.md. Targets that load BPF need root.
GO        ?= go
BIN       := bin/latscope
# Go toolchains the tests build fixtures with (internal/fixture.Toolchains).
TOOLCHAINS := go1.21.13 go1.22.12 go1.24.9 go1.27.3

.PHONY: all build generate check-generate test test-short bench demo demo-checkout lint toolchains ui-vendor clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/latscope

# Regenerates the BPF objects and their Go bindings (needs clang, libbpf-dev).
generate:
	$(GO) generate ./bpf/...

# The committed bpf2go output must be what the committed C compiles to.
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf2go output is stale: run 'make generate' and commit it"; exit 1; }
	@test -z "$$(git status --porcelain -- bpf/)" || { git status --porcelain -- bpf/; echo "untracked generated files: commit them"; exit 1; }

toolchains:
	@for v in $(TOOLCHAINS); do GOTOOLCHAIN=$$v $(GO) version >/dev/null || exit 1; done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); test -z "$$out" || { echo "gofmt:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	cd examples/demo && GOWORK=off $(GO) vet ./...
	cd deploy && GOWORK=off $(GO) vet ./...

# Every tier: pure Go, BPF load, and end to end against real fixture
# processes (as root), the web UI in Debian's headless chromium (.ci/run
# installs it). Under CI=true a skipped BPF or browser test is a failure.
# -p 1: packages whose tests trace with injection attach node-wide socket
# programs, which two tracers cannot share (propagation_socket_busy).
test: check-generate lint toolchains
	$(GO) test -p 1 -count=1 -timeout 45m ./...
	cd examples/demo && GOWORK=off $(GO) test -count=1 ./...
	cd deploy && GOWORK=off $(GO) test -count=1 -timeout 20m ./...

# Quick local loop: oldest and newest toolchain only.
test-short:
	LATSCOPE_SHORT_MATRIX=1 $(GO) test -p 1 -count=1 ./...

# Results and how to read them: docs/benchmarks.md.
bench: build
	$(GO) run ./scripts/probecost -runs 5
	$(GO) run ./scripts/dbcost -runs 5
	$(GO) run ./scripts/propcost -fixture httpapp -rounds 5
	$(GO) run ./scripts/propcost -fixture h2app -rounds 5
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 5 -cpu 1 ./agent/callchain/
	$(GO) run ./scripts/benchdemo -rounds 5 -seconds 8 -c 8
	$(GO) run ./scripts/benchagent
	$(GO) run ./scripts/benchattr -rounds 3 -seconds 6 -c 8 -bpfstats

# The web UI's chart library, vendored as built files (ui/static/vendor):
# go build needs no Node; this refreshes them from the npm registry.
UPLOT_VERSION := 1.6.32
ui-vendor:
	rm -rf bin/uplot && mkdir -p bin/uplot
	cd bin/uplot && npm pack --silent uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp bin/uplot/package/dist/uPlot.iife.min.js bin/uplot/package/dist/uPlot.min.css bin/uplot/package/LICENSE ui/static/vendor/uplot/

# The demo system (examples/demo) traced into Jaeger; see scripts/demo.sh.
demo:
	./scripts/demo.sh

# A single program traced from its first instruction, trees on the terminal.
demo-checkout: build
	$(GO) build -o bin/checkout ./examples/checkout
	./$(BIN) trace --funcs 'main.*' -- ./bin/checkout

clean:
	rm -rf bin
