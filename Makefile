# Convenience targets; npm scripts are the source of truth.
.PHONY: build typecheck lint test

build:
	npm run build

typecheck:
	npx tsc --noEmit

lint:
	npm run lint

test:
	npm test

# Real Kubernetes control plane for tests (test/cluster, docs/real-cluster.md).
# TIER=1: etcd + kube-apiserver; TIER=2 (default): + controller-manager, scheduler, kwok fake nodes.
.PHONY: cluster-up cluster-down test-integration
CLUSTER_NAME ?= dev
TIER ?= 2

cluster-up:
	bash test/cluster/build.sh
	bash test/cluster/up.sh --tier $(TIER) --name $(CLUSTER_NAME)
	@echo "export KUBECONFIG=$${QUICLB_CLUSTER_ROOT:-$${TMPDIR:-/tmp}}/quiclb-cluster-$(CLUSTER_NAME)/admin.kubeconfig"

cluster-down:
	bash test/cluster/down.sh --name $(CLUSTER_NAME)

test-integration:
	bash test/cluster/ci-integration.sh $${INTEGRATION_REPORT:-$${TMPDIR:-/tmp}/quiclb-integration.json}
