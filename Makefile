# Hivemind's build, test and demo entry points.
#
#   make demo   installs what is missing, builds, runs the end-to-end demo
#   make test   installs what is missing, runs the unit and integration tests
#
# Both need root (containerd runs containers) and Go 1.26 on PATH.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := bin
TOOLS   := $(CURDIR)/.tools
PKGS    := containerd runc iptables sqlite3 ca-certificates
# The integration tests start real clusters; give them room but keep CI
# well inside its limit.
TEST_TIMEOUT ?= 25m

.PHONY: all build deps test unit integration demo proto fmt vet bench clean

all: build

build:
	$(GO) build -o $(BIN)/hivemind ./cmd/hivemind

# deps installs the Debian packages the product and its tests run on. It
# never starts the machine's own containerd: tests and the demo start a
# private one under a temporary directory.
deps:
	@command -v $(GO) >/dev/null || { echo "error: Go 1.26 is not on PATH (see README)"; exit 1; }
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./integration/ 2>&1 | tee /tmp/hivemind-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; exit $${PIPESTATUS[0]}

test: deps fmt vet build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

demo: deps build
	$(GO) run ./cmd/hivemind-demo --hivemind $(BIN)/hivemind

# proto regenerates rpc/pb from proto/ with pinned generators.
proto:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.34.0
	command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler
	PATH=$(TOOLS):$$PATH protoc -I proto \
		--go_out=. --go_opt=module=github.com/hivemind-orch/hivemind \
		--go-grpc_out=. --go-grpc_opt=module=github.com/hivemind-orch/hivemind \
		--grpc-gateway_out=. --grpc-gateway_opt=module=github.com/hivemind-orch/hivemind,grpc_api_configuration=proto/api.yaml,standalone=false \
		proto/hivemind.proto

# bench needs wrk (Debian) for its ingress benchmark; bench-deps installs
# it when missing.
bench: bench-deps build
	$(GO) run ./bench --hivemind $(BIN)/hivemind

bench-deps:
	@command -v wrk >/dev/null || { echo "installing: wrk"; export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

clean:
	rm -rf $(BIN) $(TOOLS)
