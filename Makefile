VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO      ?= go
FUZZTIME ?= 30s

.PHONY: all build test test-integration bench fuzz soak lint fmt dev vault deps clean
SOAKTIME ?= 3m

all: build

## build: the keygate binary in bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/keygate ./cmd/keygate

## vault: build the pinned Vault (once per machine; cached in ~/.cache/keygate)
vault:
	@scripts/vault-build.sh >/dev/null

## deps: what the tests run besides Go and Vault: Debian's redis-server and postgresql (installed if missing)
deps:
	@scripts/install-deps.sh

## test: everything CI runs: format and vet checks, then all tests with the race detector
test: vault deps lint
	$(GO) test -race -count=1 -timeout 20m ./...

## test-integration: only the packages that start a real Vault, Redis or PostgreSQL
test-integration: vault deps
	$(GO) test -race -count=1 -timeout 20m ./vaultstore/ ./envoy/ ./admin/ ./ratelimit/ ./usage/ ./cmd/keygate/

## bench: the in-process check benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./authz/ ./envoy/ ./usage/

## fuzz: each fuzz target for FUZZTIME (seed corpora: <package>/testdata/fuzz/)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFormatCheck$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzCredentials$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzModelOf$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./authz/
	$(GO) test -run '^$$' -fuzz '^FuzzParseXFCC$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnvoyPEM$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzParseClientCert$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./certs/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./cmd/keygate/
	$(GO) test -run '^$$' -fuzz '^FuzzUsageQuery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./admin/

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

## dev: Vault dev server + demo key + keygate serve, on loopback
dev:
	scripts/dev.sh

clean:
	rm -rf bin .dev
