# incusexec: the two commands a newcomer needs are `make demo` and `make test`
# (as root on Debian or Ubuntu). Both install what is missing first.

GO        ?= go
GOFLAGS   ?=
# auto: run integration tests where a private incusd can start, skip otherwise;
# required: fail instead of skipping (CI); off: unit tests only.
INCUSEXEC_INTEGRATION ?= auto
export INCUSEXEC_INTEGRATION
TESTTIMEOUT ?= 20m
# Test packages in parallel: three, one more than go test's default on 2
# cores. With two, the CPUs of this 2-CPU machine were idle about a fifth
# of the tests' time (22%; 12% with three), tests waiting on incusd and on
# boots: three took 470 s and 474 s
# against 571 s and 548 s (README, "Two commands"). Exec output does not
# depend on the machine's load (instance, "Exec output").
TESTP ?= 3
FUZZTIME  ?= 20s
# govulncheck, pinned; VULNDB is its -db (a URL or file:///path); empty means
# govulncheck's own default, the public database. .ci/run points it at the
# offline snapshot in ../shared/vulndb.
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB      ?=
BENCHARGS ?=

.PHONY: all deps incus-up build vet fmt-check test unit demo bench fuzz soak vulncheck install

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin

all: build

## deps: install Incus 6.0 LTS and the tools the tests use (root, Debian/Ubuntu)
deps:
	@bash internal/install/install-deps.sh

## incus-up: start the system's Incus daemon when it is not running
incus-up: deps
	@bash internal/install/start-incus.sh

build:
	$(GO) build $(GOFLAGS) ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## test: unit tests, the fakes' and the real daemon's integration tests, with -race
test: deps vet fmt-check
	$(GO) test $(GOFLAGS) -race -count=1 -p $(TESTP) -timeout $(TESTTIMEOUT) ./...

## unit: tests that need no daemon
unit:
	INCUSEXEC_INTEGRATION=off $(GO) test $(GOFLAGS) -race -count=1 ./...

## demo: start Incus if needed and run the main job for real
demo: incus-up
	$(GO) run ./examples/incusexec demo

## bench: the benchmark table against the incus CLI (see README.md)
bench: incus-up
	$(GO) run ./examples/incusexec bench $(BENCHARGS)

## bench-task: one whole task, cold and from the warm pool, against Debusine's executor code (installs python3-debusine)
.PHONY: bench-task
bench-task: deps
	@bash internal/bench/debusine-deps.sh
	$(GO) run ./internal/bench/wholetaskcmd $(BENCHARGS)

## soak: the long fault-injection loop (100 SIGKILL rounds) and load tests
soak: deps
	INCUSEXEC_SOAK=1 $(GO) test -count=1 -timeout 240m -v ./internal/reliability/

## fuzz: run every fuzz target for FUZZTIME each (seed corpora are in testdata/)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "== $$pkg $$f"; \
	    INCUSEXEC_INTEGRATION=off $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## vulncheck: govulncheck over ./..., every finding held against internal/vulntriage/triage.txt
vulncheck:
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	$(GO) run $(GOVULNCHECK) $(if $(VULNDB),-db $(VULNDB)) -format json ./... > "$$out" || { echo "vulncheck: govulncheck failed"; exit 2; }; \
	$(GO) run ./internal/vulntriage -triage internal/vulntriage/triage.txt "$$out"
## install: the incusexec binary, its autopkgtest-virt-incusexec name and the virt server's execute helper in $(BINDIR)
# The helper runs once per testbed command: built static (no cgo, so no
# dynamic loader), it starts in a few milliseconds less.
install:
	$(GO) build $(GOFLAGS) -o incusexec.bin ./examples/incusexec
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -o incusexec-virt-exec.bin ./examples/incusexec/virtexec
	install -D -m 0755 incusexec.bin $(DESTDIR)$(BINDIR)/incusexec
	install -D -m 0755 incusexec-virt-exec.bin $(DESTDIR)$(BINDIR)/incusexec-virt-exec
	ln -sf incusexec $(DESTDIR)$(BINDIR)/autopkgtest-virt-incusexec
	rm -f incusexec.bin incusexec-virt-exec.bin
