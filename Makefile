VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO      ?= go
FUZZTIME ?= 30s

.PHONY: all build test test-integration test-ha bench bench-tls fuzz soak lint fmt dev demo image install vault deps screenshots clean
SOAKTIME ?= 3m

all: build

## build: the keygate binary in bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/keygate ./cmd/keygate

## vault: build the pinned Vault (once per machine; cached in ~/.cache/keygate)
vault:
	@scripts/vault-build.sh >/dev/null

## deps: what the tests run besides Go and Vault: Debian's redis-server, postgresql, buildah, podman, runc, systemd-analyze, chromium (installed if missing)
deps:
	@scripts/install-deps.sh

## test: everything CI runs: format and vet checks, then all tests with the race detector
test: vault deps lint
	$(GO) test -race -count=1 -timeout 40m ./...
	cd deploy && $(GO) test -count=1 ./...

## test-integration: only the packages that start a real Vault, Redis or PostgreSQL
test-integration: vault deps
	$(GO) test -race -count=1 -timeout 20m ./vaultstore/ ./envoy/ ./admin/ ./ratelimit/ ./usage/ ./cmd/keygate/

## test-ha: the scale-out tests (not in `test`): a three-node Vault cluster (Raft) with
## failover under load, Redis Sentinel and Redis Cluster failover, 10 replicas with the
## capacity measurement; heavy (about 3 minutes on 2 cores), run them alone
test-ha: vault deps
	KEYGATE_HA=1 $(GO) test -count=1 -timeout 15m -v -run 'TestCluster|TestVaultClusterFailoverUnderLoad|TestRedisSentinelFailover|TestRedisClusterFailover|TestTenReplicas' ./internal/vaultcluster/ ./cmd/keygate/

## bench: the in-process benchmarks, 1 M cached keys' memory, then keygate side by side
## with a no-op ext_authz server under load (scripts/bench; BENCHKEYS, BENCHROUNDS, BENCHN)
BENCHKEYS ?= 1000000
BENCHROUNDS ?= 3
BENCHN ?= 40000
bench: vault
	$(GO) test -run '^$$' -bench . -benchmem ./authz/
	$(GO) test -run '^$$' -bench 'ServerCheck' -benchmem ./envoy/
	$(GO) test -run '^$$' -bench 'CacheHit' -benchmem ./vaultstore/
	$(GO) test -run '^$$' -bench . -benchmem ./usage/
	KEYGATE_BENCH_KEYS=$(BENCHKEYS) $(GO) test -run '^$$' -bench 'CacheMemory' -benchtime 1x ./vaultstore/
	@mkdir -p bin
	$(GO) run ./scripts/bench -rounds $(BENCHROUNDS) -n $(BENCHN) -cpuprofile bin/bench-cpu.pprof

## bench-tls: the mTLS terminator against nginx (nginx-light) and two Go floors, side by side on loopback (~70 s)
bench-tls: vault
	$(GO) run ./scripts/benchtls

## fuzz: each fuzz target for FUZZTIME (seed corpora: <package>/testdata/fuzz/)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFormatCheck$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzCredentials$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzModelOf$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzClientSource$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzParseXFCC$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnvoyPEM$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzRequestFrom$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./envoy/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeInput$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./envoy/
	$(GO) test -run '^$$' -fuzz '^FuzzParseClientCert$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzXFCCValue$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/terminator/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./cmd/keygate/
	$(GO) test -run '^$$' -fuzz '^FuzzUsageQuery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./admin/
	$(GO) test -run '^$$' -fuzz '^FuzzParseID$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./console/
	$(GO) test -run '^$$' -fuzz '^FuzzCSRFMatches$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./console/
	$(GO) test -run '^$$' -fuzz '^FuzzLoopbackHost$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./console/
	$(GO) test -run '^$$' -fuzz '^FuzzPoints$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./usage/
	$(GO) test -run '^$$' -fuzz '^FuzzAuditQuery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./admin/

## screenshots: refresh docs/img/console-*.png (1200x800) from the console's browser test (needs chromium)
screenshots: vault deps
	KEYGATE_DOCS_IMG=$(CURDIR)/docs/img $(GO) test -count=1 -run '^TestConsole$$' ./cmd/keygate/

## soak: a keygate process under loopback load for SOAKTIME; reports rate, latency, leaks
soak: vault
	$(GO) run ./scripts/soak -duration $(SOAKTIME)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## fmt: format the code
fmt:
	gofmt -w $$(git ls-files '*.go')

## dev: the mTLS demo on loopback: Vault dev server, private CA, demo keys, keygate, terminator, echo upstream (USAGE=postgres: usage in PostgreSQL)
dev:
	VERSION=$(VERSION) KEYGATE_DEV_USAGE=$(or $(USAGE),$(KEYGATE_DEV_USAGE),sqlite) scripts/dev.sh

## demo: the same as dev
demo: dev

## image: the container image (deploy/Containerfile) as an OCI archive in dist/, built with buildah
image:
	VERSION=$(VERSION) scripts/image.sh

PREFIX ?= /usr/local
## install: keygate into $(PREFIX)/bin (DESTDIR for packaging)
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bin/keygate $(DESTDIR)$(PREFIX)/bin/keygate

clean:
	rm -rf bin dist .dev
