# pgsvc — Patroni-aware HAProxy service controller.
#   make demo       start a real local cluster (etcd, Patroni, PostgreSQL, pgbouncer, HAProxy) + the controller
#   make demo-down  stop everything the demo started
#   make test       everything CI runs: format, vet, unit tests (-race), end-to-end tests on real components
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deps test check unit fuzz integration bench bench-scale demo demo-down clean

# Real Data Plane API builds for the real-API tests (pkg/dataplaneapi and
# end-to-end scenario 6): CI's clone sits next to a copy of shared/, whose
# bin/ holds 2.9.9 (v2) and 3.2.0 (v3). Where they are absent the tests skip
# and say so; set DATAPLANEAPI_BIN / DATAPLANEAPI_V3_BIN to use other builds.
DPAPI_V2_BIN := $(abspath ../shared/bin/dataplaneapi-2.9.9)
DPAPI_V3_BIN := $(abspath ../shared/bin/dataplaneapi-3.2.0)
ifneq ($(wildcard $(DPAPI_V2_BIN)),)
export DATAPLANEAPI_BIN ?= $(DPAPI_V2_BIN)
endif
ifneq ($(wildcard $(DPAPI_V3_BIN)),)
export DATAPLANEAPI_V3_BIN ?= $(DPAPI_V3_BIN)
endif

all: build

build:
	$(GO) build -o bin/controller ./cmd/controller

deps:
	bash scripts/install-deps.sh

test: deps check unit fuzz integration

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# Bounded fuzzing of everything hostile input reaches: DCS values, snapshots,
# inventories. Each target must never panic and never emit a name, address,
# port or option that pkg/haproxyname rejects. FUZZTIME=1m make fuzz for longer.
# CI bounds it by a count of runs, not a time: a -fuzztime deadline that falls
# while Go minimizes a new input fails the run ("context deadline exceeded",
# seen once on FuzzParseSnapshot) though nothing is wrong.
FUZZTIME ?= 20000x
FUZZ_TARGETS := ./pkg/patroni:FuzzDecode ./pkg/patroni:FuzzDecodeMember ./pkg/patroni:FuzzParseSnapshot \
	./pkg/plan:FuzzLoadInventory ./pkg/plan:FuzzPlanDCS
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -timeout 5m $${t%%:*}; \
	done

# End-to-end tests against real etcd, Patroni 3.0.2, PostgreSQL 15, pgbouncer and HAProxy 2.6.
integration: build
	$(GO) test -tags integration -race -count=1 -timeout 25m -v ./integration/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/... | tee bench.txt

# Fleet-scale benchmark on real etcd, HAProxy 2.6 and (DRIVER=v2|v3) the real Data Plane API:
#   make bench-scale N=1000 DRIVER=v2   (DRIVER=direct|v2|v3, LAYOUT=pigsty|twins; BENCH_FLAGS="-idle 2m -out results.md" ...)
N ?= 100
DRIVER ?= direct
LAYOUT ?= pigsty
DATAPLANEAPI_BIN ?= ../shared/bin/dataplaneapi-2.9.9
DATAPLANEAPI_V3_BIN ?= ../shared/bin/dataplaneapi-3.2.0
BENCH_FLAGS ?=
bench-scale: build
	$(GO) build -o bin/benchscale ./integration/cmd/benchscale
	bin/benchscale -n $(N) -driver $(DRIVER) -layout $(LAYOUT) -controller bin/controller \
		-dataplaneapi-v2 $(DATAPLANEAPI_BIN) -dataplaneapi-v3 $(DATAPLANEAPI_V3_BIN) $(BENCH_FLAGS)

demo: deps build
	bash scripts/demo.sh up

demo-down:
	bash scripts/demo.sh down

clean:
	rm -rf bin integration.log bench.txt
