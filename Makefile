# flower-gd: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test bench bench-study bench-codecs fmnist-gossip install fashion-mnist figures-demo figures-bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# FedAvg gets as many epochs on private data as the local phase: 20 rounds of one epoch.
FEDAVG := app.method=fedavg app.num-server-rounds=20 app.round-epochs=1

# The comparison on the embedded digits data: 5 methods x {iid, niid1}, 10 nodes.
demo: $(STAMP)
	$(PY) -m flower_gd -m app.method=local,gossip,gossip-adaptive,dlad,central \
	  app.partition-scheme=iid,niid1 app.output-dir=results/demo
	$(PY) -m flower_gd -m $(FEDAVG) app.partition-scheme=iid,niid1 app.output-dir=results/demo
	$(PY) -m flower_gd.report results/demo
	$(PY) -m flower_gd.plots all results/demo --out figures/demo

test: $(STAMP)
	$(PY) -m pytest

fashion-mnist:
	@test -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz || \
	  (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) || \
	  (echo "Fashion-MNIST missing: install the Debian package dataset-fashion-mnist, or put" \
	        "the four IDX files in a folder and add app.data-dir=FOLDER"; exit 1)

# The benchmark: Fashion-MNIST, 10 nodes, 4 methods x all five Table I partitions, plus the
# central bound once (it trains on the pooled private data, the same under every partition).
BENCH := app.dataset=fashion-mnist app.common-limit=6000 app.test-limit=5000 \
  app.output-dir=results/bench
PARTITIONS := app.partition-scheme=iid,niid1,niid2,niid3,niid4
bench: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.method=local,gossip,gossip-adaptive,dlad $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m $(FEDAVG) $(PARTITIONS) $(BENCH)
	$(PY) -m flower_gd -m app.method=central app.partition-scheme=iid $(BENCH)
	$(MAKE) bench-study bench-codecs
	$(PY) -m flower_gd.report results/bench
	$(PY) -m flower_gd.plots all results/bench --out figures/bench

# gossip-adaptive's design choices, each against the default (push-sum, belief, 1 peer), niid1.
GA := app.method=gossip-adaptive app.partition-scheme=niid1 $(BENCH)
bench-study: $(STAMP) fashion-mnist
	$(PY) -m flower_gd $(GA) app.gossip-peers=2
	$(PY) -m flower_gd $(GA) app.gossip-weights=accumulate
	$(PY) -m flower_gd $(GA) app.gossip-share=reinfer

# Payload codecs on gossip-adaptive (float32 is the default cell above), iid and niid1.
bench-codecs: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.method=gossip-adaptive app.codec=uint8,topk,hard,float16 \
	  app.partition-scheme=niid1,iid $(BENCH)

# Issue 2's measurement: honest gossip and the ground-truth leak, 12000 common samples.
fmnist-gossip: $(STAMP) fashion-mnist
	$(PY) -m flower_gd -m app.dataset=fashion-mnist app.common-limit=12000 \
	  app.partition-scheme=iid,niid1 app.label-source=mixed,ground-truth \
	  app.output-dir=results/fmnist-gossip
	$(PY) -m flower_gd.report results/fmnist-gossip

clean:
	rm -rf results/demo figures/demo
